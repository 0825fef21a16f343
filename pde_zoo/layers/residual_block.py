"""The residual-block protocol: one explicit Euler step of a stated vector field."""

import keras

from pde_zoo.layers.physics_protocol import not_provided


class ResidualBlock(keras.layers.Layer):
    """Abstract base of the zoo's residual blocks, the layers a `StencilStack` runs.

    A residual block is one explicit Euler step, of size Δt = 1, of an autonomous vector field f:

        call(ψ) = ψ + f(ψ),     i.e.   f(ψ) = call(ψ) − ψ.

    `vector_field(t, ψ)` returns that f, so any solver of `pde_zoo.ode` can integrate the same
    block with another method or step size (`odeint(block.vector_field, ψ0, t, method="rk4",
    step_size=0.1)`); subclasses state their f in their docstring. Subclasses implement `call`
    (NHWC -> NHWC, same shape) and may override `vector_field` with a closed form.

    Fusion is opt-in: a block whose step is exactly ψ ← relu(K ⋆ ψ + b), K a depthwise 3x3
    correlation kernel (identity included) and b a per-channel constant, sets `fusable` to
    True and implements `taps()` -> K (3, 3, C) and `offset()` -> b (C,) or None. A
    `StencilStack` of fusable blocks runs them as one fused kernel; any other block is called
    as a layer. The stubs below refuse and are marked `not_provided`, so the physics protocol
    (`pde_zoo.layers.physics_protocol`) does not count them as taps.
    """

    @property
    def fusable(self):
        """Whether the step is relu(taps() ⋆ ψ + offset()) with a depthwise 3x3 kernel."""
        return False

    def vector_field(self, t, psi):
        """f(t, ψ) = call(ψ) − ψ: the field whose Euler step of Δt = 1 is this block (t unused)."""
        del t  # autonomous
        return self(psi) - psi

    @not_provided
    def taps(self):
        """The 3x3 depthwise correlation kernel of a fusable block, shape (3, 3, C)."""
        raise NotImplementedError(f"{type(self).__name__} is not fusable (fusable is False): it has no stencil taps.")

    @not_provided
    def offset(self):
        """The per-channel constant added before the ReLU of a fusable block, or None."""
        raise NotImplementedError(f"{type(self).__name__} is not fusable (fusable is False): it has no stencil offset.")

    def compute_output_shape(self, input_shape):
        return input_shape
