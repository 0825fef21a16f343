"""PDE2: the residual block of thesis eq 40 (damped drift)."""

import keras

from pde_zoo.layers.pde_block import PDEBlock


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDE2Block(PDEBlock):
    """Thesis eq 40, one Euler step then ReLU:

        ψ ← relu( ψ + α²/2 Dxx ψ - β/8 Dx ψ + σ²/2 Dyy ψ - ρ/8 Dy ψ + γ ψ )

    A `PDEBlock` with `drift_scale` fixed to -1/8 (`FIXED_DRIFT_SCALE`): any other value raises
    ValueError and `get_config` leaves it out. See `PDEBlock` for arguments and weights.

    Example:
    >>> y = pde_zoo.layers.PDE2Block()(np.zeros((1, 28, 28, 1), "float32"))
    """

    FIXED_DRIFT_SCALE = -0.125
