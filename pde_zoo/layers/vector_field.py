"""The vector-field protocol: a layer computing dψ/dt = f(t, ψ), integrated by `pde_zoo.ode`."""

import keras

from pde_zoo.layers.physics_protocol import not_provided


def vector_field_argument(field, layer, examples):
    """`field` as a `VectorField` (deserialized from a config dict), or a TypeError naming `layer`
    (the class taking it) and `examples` (what to pass instead)."""
    if isinstance(field, dict):
        field = keras.saving.deserialize_keras_object(field)
    if not isinstance(field, VectorField):
        raise TypeError(
            f"{layer} takes a vector field: a pde_zoo.layers.VectorField layer called as field(t, ψ) (e.g. {examples}). "
            f"Received: field={type(field).__name__}."
        )
    return field


def nhwc_channels(layer, input_shape):
    """The channel count C of an NHWC input shape (N, H, W, C), or a ValueError naming `layer`."""
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} expects NHWC input (N, H, W, C) with a known channel count, "
            f"e.g. (N, 28, 28, 1). Received: input_shape={tuple(input_shape)}"
        )
    return int(input_shape[-1])


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

    A field is also what a residual block steps: `EulerStep(field, time_step)` is
    ψ ← relu(`explicit_step(ψ, Δt)`). A field whose step is one correlation says so
    (`is_depthwise_linear`: f(ψ) = L ⋆ ψ + b with a depthwise 3x3 L, which a `StencilStack` fuses)
    and gives the step's kernel through `step_taps(Δt)` / `step_offset(Δt)`; a linear field that
    mixes channels gives `step_system_taps(Δt)` (the physics protocol reads them through the block).
    """

    @property
    def is_depthwise_linear(self):
        """Whether f(ψ) = L ⋆ ψ + b with L a depthwise 3x3 correlation (then `step_taps` exists)."""
        return False

    def explicit_step(self, psi, time_step, t=0.0):
        """ψ + Δt f(t, ψ): one explicit Euler step of size Δt from time t. Linear fields override it
        with the same number computed in one pass over the state."""
        return psi + time_step * self(t, psi)

    def fused_rectified_step(self, psi, time_step):
        """relu(ψ + Δt f(ψ)) in one fused kernel, or None (the default: no such kernel), where
        `EulerStep` evaluates relu(`explicit_step`) instead. A field overriding it computes the same
        numbers (PDESystemField: the C++ op, in TensorFlow training steps)."""
        del psi, time_step
        return None

    @not_provided
    def step_taps(self, time_step):
        """(3, 3, C) correlation kernel of ψ ↦ ψ + Δt L ψ, for a depthwise linear field."""
        raise NotImplementedError(f"{type(self).__name__} is not a depthwise linear field: its Euler step has no stencil taps.")

    @not_provided
    def step_offset(self, time_step):
        """The per-channel constant Δt b of the Euler step of a depthwise linear field, or None."""
        raise NotImplementedError(f"{type(self).__name__} is not a depthwise linear field: its Euler step has no offset.")

    @not_provided
    def step_system_taps(self, time_step):
        """(3, 3, C_in, C_out) correlation kernel of ψ ↦ ψ + Δt A ψ, for a linear field mixing channels."""
        raise NotImplementedError(f"{type(self).__name__} is not a linear field: its Euler step has no system taps.")

    # A field inside an `EulerStep` has its weights saved by the step, as the step's own (the layout
    # of every block file the zoo has written); the field's own entry is then left empty.
    _weights_saved_by_step = False

    def save_own_variables(self, store):
        if not self._weights_saved_by_step:
            super().save_own_variables(store)

    def load_own_variables(self, store):
        if not self._weights_saved_by_step:
            super().load_own_variables(store)

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
