"""The PDE vector field of thesis eq 39 / 40: the one source of the PDE blocks' weights and stencils."""

import keras
import numpy as np
from keras import ops

from pde_zoo.layers._stencil_math import COEFFICIENT_NAMES, channel_shape, coefficient_taps, taps_matrix
from pde_zoo.layers.vector_field import VectorField, nhwc_channels

ACTIVATIONS = ("relu", None)


def set_initializers(layer, initializers):
    """`layer.<name>_initializer` for each {name: initializer}; None for α and σ (the diffusion)
    means Constant(0.1): not 0, where their gradient (∝ α, σ) vanishes."""
    for name, value in initializers.items():
        if value is None and name in ("alpha", "sigma"):
            value = keras.initializers.Constant(0.1)
        setattr(layer, f"{name}_initializer", keras.initializers.get(value))


STENCIL_NAMES = ("alpha", "beta", "sigma", "rho")


class StencilField(VectorField):
    """Base of the fields whose linear part carries the eq-22 stencil coefficients α, β, σ, ρ of
    every channel (`PDEField`, `PDESystemField`): their initializers and config, stated once.

    Args:
        alpha_initializer, beta_initializer, sigma_initializer, rho_initializer: Keras
            initializers; by default α = σ = 0.1, β = ρ = 0, a weak diffusion (α²/2 = 0.005), so
            every step starts near the identity (`set_initializers`).
        **kwargs: the subclass's and `keras.layers.Layer` arguments.
    """

    def __init__(self, alpha_initializer=None, beta_initializer="zeros", sigma_initializer=None, rho_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        set_initializers(self, dict(alpha=alpha_initializer, beta=beta_initializer, sigma=sigma_initializer, rho=rho_initializer))

    def get_config(self):
        config = super().get_config()
        config.update({f"{n}_initializer": keras.initializers.serialize(getattr(self, f"{n}_initializer")) for n in STENCIL_NAMES})
        return config


def stacked_step_taps(fields, time_steps):
    """The kernels of ψ ↦ ψ + Δt_k L_k ψ of several autonomous PDE fields as one (D, 3, 3, C)
    tensor, in one batched matmul (`coefficient_taps`, M_k = `taps_matrix(s_k, time_step=Δt_k)`):
    a `StencilStack` of PDE blocks builds all its kernels (and their gradients) with a few ops."""
    depth = len(fields)
    coefficients = (
        ops.reshape(ops.stack([getattr(f, n).value for f in fields]), (depth, -1)) for n in COEFFICIENT_NAMES
    )  # each (D, C); one reshape per coefficient, not one per weight (the ops are the cost)
    matrices = np.stack([taps_matrix(f.drift_scale, time_step=dt) for f, dt in zip(fields, time_steps)])
    return coefficient_taps(*coefficients, matrices)


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDEField(StencilField):
    """dψ/dt = f(t, ψ) for the advection-diffusion-reaction operator of thesis eq 39 / 40,

        L_t ψ = α(t)²/2 Dxx ψ + s β(t) Dx ψ + σ(t)²/2 Dyy ψ + s ρ(t) Dy ψ + γ(t) ψ

    with Dxx, Dx along the width (axis 2) and Dyy, Dy along the height (axis 1), central
    differences and zero (Dirichlet) padding outside the image (docs/conventions.md), and

        f(t, ψ) = relu(ψ + L_t ψ) − ψ     (activation="relu", the thesis block's field), or
        f(t, ψ) = L_t ψ                   (activation=None: the linear PDE ψ_t = L_t ψ).

    Time dependence: with `pieces` = K the coefficients are piecewise constant, piece
    k = clip(floor(t · K / horizon), 0, K − 1) on [k·T/K, (k+1)·T/K], jumping at the
    `breakpoints` (`ODEBlock` integrates piece by piece, `on_segment`). With pieces=None the
    field is autonomous and its weights have no time axis: the field of a discrete block. The
    thesis blocks are `EulerStep`s of the linear autonomous field: PDE1Block (s = 1, eq 39)
    and PDE2Block (s = −1/8, eq 40) are relu(ψ + L ψ). One Euler step of Δt = 1 of a K-piece
    ReLU field from t = k is PDE block k: the continuous model at pieces = horizon = D with
    Euler at step 1 is the discrete depth-D model.

    Args:
        drift_scale: `s` (1: PDE1, eq 39; -1/8: PDE2, eq 40).
        pieces: number K of time intervals with their own coefficients, or None (autonomous).
        horizon: T, the end of the last interval (the ODEBlock integrates over [0, T]).
        activation: "relu" or None (see above).
        gamma_initializer: Keras initializer of γ (default zeros).
        alpha_initializer, ..., rho_initializer: as `StencilField` (a weak diffusion by default).

    Weights: `alpha`, `beta`, `sigma`, `rho`, `gamma`, shape (K,) + channel shape, or the
    channel shape alone when autonomous (a scalar for one channel, (C,) otherwise).
    """

    def __init__(self, drift_scale=1.0, pieces=1, horizon=1.0, activation="relu", gamma_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if pieces is not None and (isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1):
            raise ValueError(f"pieces must be a positive integer, or None (autonomous). Received: pieces={pieces!r}")
        if not horizon > 0:
            raise ValueError(f"horizon must be positive. Received: horizon={horizon!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: activation={activation!r}")
        self.drift_scale = float(drift_scale)
        self.pieces = pieces
        self.horizon = float(horizon)
        self.activation = activation
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        # Taps of L alone (no identity): the linear field is L ψ, the ReLU field adds ψ itself.
        self._operator_matrices = np.stack([taps_matrix(self.drift_scale, identity=False)] * self.piece_count)

    def build(self, input_shape):
        """The five weights α, β, σ, ρ, γ, shape (K,) + channel shape, or the channel shape alone when autonomous."""
        self.channels = nhwc_channels(self, input_shape)
        shape = (() if self.pieces is None else (self.pieces,)) + channel_shape(self.channels)
        for name in COEFFICIENT_NAMES:
            setattr(self, name, self.add_weight(name=name, shape=shape, initializer=getattr(self, f"{name}_initializer")))

    def coefficients(self):
        """The five learned coefficients as NumPy arrays: {'alpha': ..., ..., 'gamma': ...}."""
        return {n: np.asarray(keras.ops.convert_to_numpy(getattr(self, n).value)) for n in COEFFICIENT_NAMES}

    def set_coefficients(self, **values):
        """Assign any subset of alpha, beta, sigma, rho, gamma (values broadcast to the weight's shape)."""
        unknown = sorted(set(values) - set(COEFFICIENT_NAMES))
        if unknown:
            raise ValueError(
                f"Unknown coefficient(s) {unknown}; the coefficients are {list(COEFFICIENT_NAMES)}."
            )
        if not self.built:
            raise ValueError("Call or build the layer before set_coefficients(); it has no weights yet.")
        for name, value in values.items():
            variable = getattr(self, name)
            variable.assign(np.broadcast_to(np.asarray(value, dtype="float32"), variable.shape))

    @property
    def piece_count(self):
        """K, the number of coefficient sets in time: `pieces`, or 1 when autonomous."""
        return self.pieces or 1

    @property
    def is_depthwise_linear(self):
        """True for the linear autonomous field (f = L ψ): the Euler step is one depthwise correlation."""
        return self.pieces is None and self.activation is None

    def operator_taps(self):
        """The 3x3 correlation taps of L for every piece: shape (K, 3, 3, C) (K = 1 when autonomous)."""
        coefficients = (ops.reshape(getattr(self, n).value, (self.piece_count, -1)) for n in COEFFICIENT_NAMES)
        return coefficient_taps(*coefficients, self._operator_matrices)

    def step_taps(self, time_step):
        """The kernel of ψ ↦ ψ + Δt L ψ, identity included, shape (3, 3, C): the Euler step of the
        linear autonomous field (of the ReLU one before its ReLU, at Δt = 1)."""
        if self.pieces is not None:
            raise ValueError(f"step_taps() needs an autonomous field (pieces=None); this one has pieces={self.pieces}.")
        return stacked_step_taps([self], [time_step])[0]

    def step_offset(self, time_step):
        """The per-channel constant of the Euler step: none for the PDE of eq 39 / 40."""
        del time_step
        return None

    def piece(self, t):
        """The index k of the piece that holds time t (int32 tensor; 0 when autonomous)."""
        k = ops.floor(ops.convert_to_tensor(t, "float32") * (self.piece_count / self.horizon))
        return ops.cast(ops.clip(k, 0, self.piece_count - 1), "int32")

    def breakpoints(self, t0, t1):
        """The piece boundaries k · horizon / pieces inside (t0, t1)."""
        bounds = (k * self.horizon / self.pieces for k in range(1, self.piece_count))
        return tuple(b for b in bounds if t0 < b < t1)

    def on_segment(self, a, b):
        """The field with the piece of the segment's midpoint, whatever t (continuous on [a, b])."""
        piece = self.piece((a + b) / 2)
        return lambda t, psi: self(t, psi, piece=piece)

    def explicit_step(self, psi, time_step, t=0.0):
        """ψ + Δt f(ψ); for the linear autonomous field one depthwise correlation with `step_taps`."""
        if not self.is_depthwise_linear:
            return super().explicit_step(psi, time_step, t)
        return ops.depthwise_conv(psi, ops.expand_dims(self.step_taps(time_step), -1), strides=1, padding="same")

    def call(self, psi, t, piece=None):
        """f(t, ψ); `piece` overrides the piece index chosen from t (see `on_segment`)."""
        taps = self.operator_taps()
        if self.pieces is None:
            kernel = ops.expand_dims(taps[0], -1)
        else:
            kernel = ops.expand_dims(ops.take(taps, self.piece(t) if piece is None else piece, axis=0), -1)  # (3, 3, C, 1)
        l_psi = ops.depthwise_conv(psi, ops.cast(kernel, psi.dtype), strides=1, padding="same")
        if self.activation is None:
            return l_psi
        return ops.relu(psi + l_psi) - psi

    def get_config(self):
        config = super().get_config()
        config.update(
            {"drift_scale": self.drift_scale, "pieces": self.pieces, "horizon": self.horizon, "activation": self.activation,
             "gamma_initializer": keras.initializers.serialize(self.gamma_initializer)}
        )
        return config
