"""The reaction-diffusion-advection system as a vector field (continuous depth)."""

import keras
from keras import ops

from pde_zoo.layers.pde_system_block import PDESystemWeights
from pde_zoo.layers.vector_field import VectorField

ACTIVATIONS = ("relu", None)


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDESystemField(PDESystemWeights, VectorField):
    """dψ/dt = f(ψ) for the reaction-diffusion-advection system of `PDESystemBlock`,

        Aψ + b,  (Aψ)_c = α_c²/2 Dxx ψ_c + s β_c Dx ψ_c + σ_c²/2 Dyy ψ_c + s ρ_c Dy ψ_c + Σ_c' Γ_cc' ψ_c',

    with

        f(t, ψ) = relu(ψ + Aψ + b) - ψ    (activation="relu": the block's field), or
        f(t, ψ) = Aψ + b                  (activation=None: the linear system ψ_t = Aψ + b).

    Autonomous (t unused). The weights, their names and shapes, the `stable` map and its proof
    are those of `PDESystemBlock` (`PDESystemWeights`), so a block's weights load into a field
    and one Euler step of Δt = 1 of the ReLU field is exactly the block.

    Args:
        drift_scale, stable, *_initializer: as `PDESystemBlock`.
        activation: "relu" or None (see above).
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> field = PDESystemField(stable=True)
    >>> y = ODEBlock(field, t1=1.0, method="rk4", step_size=0.25)(np.random.rand(2, 14, 14, 8).astype("float32"))
    """

    def __init__(
        self,
        drift_scale=1.0,
        stable=False,
        activation="relu",
        alpha_initializer=None,
        beta_initializer="zeros",
        sigma_initializer=None,
        rho_initializer="zeros",
        mixing_initializer="zeros",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: activation={activation!r}")
        self.activation = activation
        self._init_system(
            drift_scale, stable,
            dict(alpha=alpha_initializer, beta=beta_initializer, sigma=sigma_initializer, rho=rho_initializer,
                 mixing=mixing_initializer, bias=bias_initializer),
        )

    def build(self, input_shape):
        self._build_system(input_shape)

    def call(self, psi, t):
        del t  # autonomous
        pre = self.pre_activation(psi)
        return pre - psi if self.activation is None else ops.relu(pre) - psi

    def get_config(self):
        config = super().get_config()
        config["activation"] = self.activation
        config.update(self._system_config())
        return config
