"""The zoo's named residual blocks: each an `EulerStep` of the field of its equation.

Their names, arguments, configs and weight layouts are those of every committed `.keras` file;
the maths lives in the fields (`PDEField`, `PDESystemField`, `LinearConvField`).
"""

import keras

from pde_zoo.layers.euler_step import EulerStep
from pde_zoo.layers.linear_conv_field import LinearConvField
from pde_zoo.layers.pde_field import PDEField
from pde_zoo.layers.pde_system_field import PDESystemField


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDEBlock(EulerStep):
    """One Euler step (Δx = Δy = 1, Δt = `time_step`, 1 by default) of the PDE of eq 39 / 40, then ReLU:

        ψ ← relu( ψ + α²/2 Dxx ψ + s β Dx ψ + σ²/2 Dyy ψ + s ρ Dy ψ + γ ψ ) = relu(ψ + Lψ)

    with Dxx, Dx along the width (axis 2) and Dyy, Dy along the height (axis 1), central
    differences and zero (Dirichlet) padding; `s` = `drift_scale` (1: PDE1, eq 39; -1/8: PDE2,
    eq 40). The `EulerStep` of the linear autonomous `PDEField` (which holds the weights, the
    operator L and its taps); the step is one depthwise 3x3 correlation with the five-point kernel
    I + Δt L (`taps()`), fused across a `StencilStack`.

    Args:
        drift_scale: `s`. Subclasses that fix it (PDE1Block, PDE2Block) refuse any other value
            and leave it out of their config, as Keras's Conv2D fixes `rank`.
        alpha_initializer, beta_initializer, sigma_initializer, rho_initializer,
        gamma_initializer: initializers of the five coefficients, by default a weak diffusion
            (α = σ = 0.1), so every block starts near the identity.
        time_step: Δt in (0, 1].
        **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

    Weights (the field's, read through): `alpha`, `beta`, `sigma`, `rho`, `gamma`; scalars for one
    input channel, one per channel (shape `(C,)`) otherwise.

    Example:
    >>> block = pde_zoo.layers.PDE2Block()
    >>> y = block(np.random.rand(2, 28, 28, 1).astype("float32"))
    >>> block.set_coefficients(alpha=0.5, beta=1.0)
    >>> block.coefficients()["alpha"]
    array(0.5, dtype=float32)
    """

    FIELD = PDEField
    FIXED = {"pieces": None, "horizon": 1.0, "activation": None}


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDE1Block(PDEBlock):
    """Thesis eq 39: ψ ← relu( ψ + α²/2 Dxx ψ + β Dx ψ + σ²/2 Dyy ψ + ρ Dy ψ + γ ψ ); a `PDEBlock`
    with drift_scale fixed to 1.

    Example:
    >>> y = pde_zoo.layers.PDE1Block()(np.zeros((1, 28, 28, 1), "float32"))
    """

    FIXED = {**PDEBlock.FIXED, "drift_scale": 1.0}


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDE2Block(PDEBlock):
    """Thesis eq 40 (damped drift): ψ ← relu( ψ + α²/2 Dxx ψ - β/8 Dx ψ + σ²/2 Dyy ψ - ρ/8 Dy ψ + γ ψ );
    a `PDEBlock` with drift_scale fixed to -1/8.

    Example:
    >>> y = pde_zoo.layers.PDE2Block()(np.zeros((1, 28, 28, 1), "float32"))
    """

    FIXED = {**PDEBlock.FIXED, "drift_scale": -0.125}


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDESystemBlock(EulerStep):
    """One Euler step of a reaction-diffusion-advection system, then ReLU:

        ψ_c ← relu( ψ_c + Δt [ α_c²/2 Dxx ψ_c + s β_c Dx ψ_c + σ_c²/2 Dyy ψ_c + s ρ_c Dy ψ_c
                              + Σ_c' Γ_cc' ψ_c' + b_c ] )  =  relu(ψ + Δt(Aψ + b))

    (thesis eq 39 per channel, the reaction γψ generalised to a channel mixing Γ): the `EulerStep`
    of the linear `PDESystemField`, which holds the weights, the `stable` parametrization and its
    proof. Structurally a depthwise-separable residual block whose depthwise kernel is a PDE; it
    mixes channels, so it runs as a depthwise correlation plus a matrix product (not fused). No
    normalization inside: the step is exactly the stated Euler step, so its von Neumann analysis
    (`pde_zoo.physics.max_amplification`) is the block's.

    Args:
        drift_scale, stable, alpha_initializer, beta_initializer, sigma_initializer,
        rho_initializer, mixing_initializer, bias_initializer: as `PDESystemField`.
        time_step: Δt in (0, 1]; K blocks of Δt = T/K are a finer time grid of the same PDE over
            [0, T]. The stable bound survives any Δt ≤ 1.
        **kwargs: `keras.layers.Layer` arguments.

    Weights (the field's, read through): `alpha`, `beta`, `sigma`, `rho`, `bias` (C,), `mixing`
    (C, C) (raw; the effective values: `coefficients()`, `mixing_matrix()`).

    Example:
    >>> block = pde_zoo.layers.PDESystemBlock(stable=True)
    >>> y = block(np.random.rand(2, 28, 28, 8).astype("float32"))
    >>> pde_zoo.physics.max_amplification(block) <= 1 + 1e-6
    True
    """

    FIELD = PDESystemField
    FIXED = {"activation": None}


@keras.saving.register_keras_serializable(package="pde_zoo")
class ResidualConvBlock(EulerStep):
    """The thesis control block (c_ResNet): ψ ← relu( ψ + K ⋆ ψ + b ), a skip connection around one
    free 3x3 convolution; the `EulerStep` of the `LinearConvField` K ⋆ ψ + b (which holds `kernel`
    (3, 3, C, C) and `bias` (C,)). By eq 25 any such block is the Euler step of *some* linear PDE.
    With one channel it is fusable (a depthwise kernel); with more it mixes channels.

    Args:
        kernel_initializer, bias_initializer: as `LinearConvField` (zeros: the identity at start).
        time_step: Δt in (0, 1].
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> y = pde_zoo.layers.ResidualConvBlock()(np.zeros((1, 28, 28, 1), "float32"))
    """

    FIELD = LinearConvField
