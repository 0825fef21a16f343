"""The vector-field protocol: a layer computing dψ/dt = f(t, ψ), integrated by `pde_zoo.ode`."""

import keras


class VectorField(keras.layers.Layer):
    """Abstract base of the layers that define an ODE  dψ/dt = f(t, ψ)  on NHWC states.

    Called as `field(t, psi)` (torchdiffeq's `func(t, y)` order), so a field is directly the
    `func` of `pde_zoo.ode.odeint`; `t` is a scalar (Python number or 0-d tensor). Subclasses
    implement `call(self, psi, t)` (the state first, so Keras builds the layer from its shape)
    and state f in their docstring. The field's trainable weights are the θ of the adjoint
    method (`odeint(..., adjoint=True)` reads `field.trainable_variables`).

    A field that jumps in time (e.g. piecewise-constant coefficients) lists the jump times in
    `breakpoints(t0, t1)` and gives, through `on_segment(a, b)`, the field restricted to a
    segment [a, b] between jumps, continuous up to both ends. `ODEBlock` integrates segment by
    segment: a solver never steps across a jump (where its order and its adjoint break down).
    """

    def breakpoints(self, t0, t1):
        """Times in (t0, t1) where f jumps in t, increasing; none by default."""
        del t0, t1
        return ()

    def on_segment(self, a, b):
        """The field on [a, b] (no jump inside), a callable (t, ψ) -> dψ/dt; by default self."""
        del a, b
        return self

    def __call__(self, t, psi, **kwargs):
        return super().__call__(psi, t=t, **kwargs)

    def call(self, psi, t):
        raise NotImplementedError(f"{type(self).__name__} must implement call(self, psi, t) -> dψ/dt.")

    def compute_output_shape(self, input_shape):
        return input_shape
