"""PDE1: the residual block of thesis eq 39."""

import keras

from pde_zoo.layers.pde_block import PDEBlock


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDE1Block(PDEBlock):
    """Thesis eq 39, one Euler step then ReLU:

        ψ ← relu( ψ + α²/2 Dxx ψ + β Dx ψ + σ²/2 Dyy ψ + ρ Dy ψ + γ ψ )

    A `PDEBlock` with `drift_scale` fixed to 1 (`FIXED_DRIFT_SCALE`): any other value raises
    ValueError and `get_config` leaves it out. See `PDEBlock` for arguments and weights.

    Example:
    >>> y = pde_zoo.layers.PDE1Block()(np.zeros((1, 28, 28, 1), "float32"))
    """

    FIXED_DRIFT_SCALE = 1.0
