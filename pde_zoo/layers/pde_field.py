"""The PDE vector field of eq 39 / 40 with time-dependent coefficients (continuous depth)."""

import keras
import numpy as np
from keras import ops

from pde_zoo.layers.pde_block import COEFFICIENT_NAMES, PDECoefficients, coefficient_taps, taps_matrix
from pde_zoo.layers.vector_field import VectorField

ACTIVATIONS = ("relu", None)


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDEField(PDECoefficients, VectorField):
    """dψ/dt = f(t, ψ) for the advection-diffusion-reaction operator of thesis eq 39 / 40,

        L_t ψ = α(t)²/2 Dxx ψ + s β(t) Dx ψ + σ(t)²/2 Dyy ψ + s ρ(t) Dy ψ + γ(t) ψ

    (stencils and zero boundary as `PDEBlock`), with

        f(t, ψ) = relu(ψ + L_t ψ) − ψ     (activation="relu", the thesis block's field), or
        f(t, ψ) = L_t ψ                   (activation=None: the linear PDE ψ_t = L_t ψ).

    The coefficients θ_t are piecewise constant in time: `pieces` equal intervals of
    [0, horizon], piece k = clip(floor(t · pieces / horizon), 0, pieces − 1), jumping at the
    `breakpoints` k · horizon / pieces (`ODEBlock` integrates piece by piece, `on_segment`).
    One explicit Euler step of Δt = 1 from t = k is then exactly `PDEBlock` k: with pieces =
    horizon = D and Euler at step 1 the continuous model is the discrete depth-D model.

    Args:
        drift_scale: `s` (1: PDE1, eq 39; -1/8: PDE2, eq 40).
        pieces: number K of time intervals with their own coefficients.
        horizon: T, the end of the last interval (the ODEBlock integrates over [0, T]).
        activation: "relu" or None (see above).
        alpha_initializer, ..., gamma_initializer: as `PDEBlock`.

    Weights: `alpha`, `beta`, `sigma`, `rho`, `gamma`, shape (K,) for one channel, (K, C)
    otherwise.
    """

    def __init__(
        self,
        drift_scale=1.0,
        pieces=1,
        horizon=1.0,
        activation="relu",
        alpha_initializer=None,
        beta_initializer="zeros",
        sigma_initializer=None,
        rho_initializer="zeros",
        gamma_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
            raise ValueError(f"pieces must be a positive integer. Received: pieces={pieces!r}")
        if not horizon > 0:
            raise ValueError(f"horizon must be positive. Received: horizon={horizon!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: activation={activation!r}")
        self.drift_scale = float(drift_scale)
        self.pieces = pieces
        self.horizon = float(horizon)
        self.activation = activation
        self._init_coefficients(
            dict(alpha=alpha_initializer, beta=beta_initializer, sigma=sigma_initializer, rho=rho_initializer, gamma=gamma_initializer)
        )
        # Taps of L alone (no identity): the linear field is L ψ, the ReLU field adds ψ itself.
        self._operator_matrices = np.stack([taps_matrix(self.drift_scale, identity=False)] * pieces)

    def build(self, input_shape):
        self._build_coefficients(input_shape, leading=(self.pieces,))

    def operator_taps(self):
        """The 3x3 correlation taps of L for every piece: shape (K, 3, 3, C)."""
        coefficients = (ops.reshape(getattr(self, n).value, (self.pieces, -1)) for n in COEFFICIENT_NAMES)
        return coefficient_taps(*coefficients, self._operator_matrices)

    def piece(self, t):
        """The index k of the piece that holds time t (int32 tensor)."""
        k = ops.floor(ops.convert_to_tensor(t, "float32") * (self.pieces / self.horizon))
        return ops.cast(ops.clip(k, 0, self.pieces - 1), "int32")

    def breakpoints(self, t0, t1):
        """The piece boundaries k · horizon / pieces inside (t0, t1)."""
        bounds = (k * self.horizon / self.pieces for k in range(1, self.pieces))
        return tuple(b for b in bounds if t0 < b < t1)

    def on_segment(self, a, b):
        """The field with the piece of the segment's midpoint, whatever t (continuous on [a, b])."""
        piece = self.piece((a + b) / 2)
        return lambda t, psi: self(t, psi, piece=piece)

    def call(self, psi, t, piece=None):
        """f(t, ψ); `piece` overrides the piece index chosen from t (see `on_segment`)."""
        piece = self.piece(t) if piece is None else piece
        kernel = ops.expand_dims(ops.take(self.operator_taps(), piece, axis=0), -1)  # (3, 3, C, 1)
        l_psi = ops.depthwise_conv(psi, ops.cast(kernel, psi.dtype), strides=1, padding="same")
        if self.activation is None:
            return l_psi
        return ops.relu(psi + l_psi) - psi

    def get_config(self):
        config = super().get_config()
        config.update(
            {"drift_scale": self.drift_scale, "pieces": self.pieces, "horizon": self.horizon, "activation": self.activation}
        )
        config.update(self._coefficients_config())
        return config
