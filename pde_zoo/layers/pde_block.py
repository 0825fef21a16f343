"""The general PDE block: one explicit Euler step of a 2-D advection-diffusion-reaction PDE."""

import keras
import numpy as np
from keras import ops

from pde_zoo.layers.physics_protocol import is_coefficient_layer
from pde_zoo.layers.residual_block import ResidualBlock

COEFFICIENT_NAMES = ("alpha", "beta", "sigma", "rho", "gamma")


def channel_shape(channels):
    """The trailing shape of a per-channel quantity: () (a scalar) for one channel, (C,)
    otherwise (docs/conventions.md, "The blocks"). `squeeze_channel` and `expand_channel` are
    its NumPy inverse and forward forms."""
    return () if channels == 1 else (channels,)


def squeeze_channel(array):
    """A per-channel NumPy array in the `channel_shape` convention: its trailing channel axis
    dropped when it has length 1, (..., 1) -> (...); (..., C) with C > 1 unchanged."""
    return array[..., 0] if array.shape[-1] == 1 else array


def expand_channel(array, ndim):
    """The trailing channel axis back: an array of `ndim` dimensions (one channel, stored
    without the axis, e.g. a (3, 3) stencil for ndim=2) becomes (..., 1); an array that has
    the axis already is returned as it is."""
    return array[..., None] if array.ndim == ndim else array


def is_pde_layer(layer):
    """Whether `layer` states its linear part as the PDE of eq 39 / 40 with coefficients:
    `coefficients()` (α, β, σ, ρ, γ per channel) and `drift_scale` s (`PDEBlock`, `PDEField`,
    `PDESystemBlock`: its per-channel PDE). `pde_zoo.physics` and `pde-zoo analyze` read such a
    layer's PDE from its coefficients, any other from its stencil taps. The test is the physics
    protocol's (`pde_zoo.layers.physics_protocol.CoefficientLayer`)."""
    return is_coefficient_layer(layer)


def taps_matrix(drift_scale, identity=True):
    """The linear map M (9 x 6) from u = [1, α², σ², β, ρ, γ] to the 3x3 correlation taps.

    taps[3*r + c] = sum_k M[3*r + c, k] u[k], where (r, c) = (1 + dy, 1 + dx) and
        pre-activation[i, j] = sum_{dy, dx} taps[1 + dy, 1 + dx] * ψ[i + dy, j + dx].
    With s = drift_scale, the five non-zero taps of  ψ + α²/2 Dxx ψ + s β Dx ψ + σ²/2 Dyy ψ
    + s ρ Dy ψ + γ ψ  (docs/conventions.md stencils, x = column j, y = row i) are
        centre (0, 0):  1 + γ - α² - σ²
        east  (0, +1):  α²/2 + s β/2        west  (0, -1):  α²/2 - s β/2
        south (+1, 0):  σ²/2 + s ρ/2        north (-1, 0):  σ²/2 - s ρ/2
    With `identity=False` the leading ψ is left out: the taps of the PDE operator L alone.
    """
    m = np.zeros((9, 6), dtype="float32")
    m[4] = [float(identity), -1.0, -1.0, 0.0, 0.0, 1.0]
    m[5] = [0.0, 0.5, 0.0, 0.5 * drift_scale, 0.0, 0.0]
    m[3] = [0.0, 0.5, 0.0, -0.5 * drift_scale, 0.0, 0.0]
    m[7] = [0.0, 0.0, 0.5, 0.0, 0.5 * drift_scale, 0.0]
    m[1] = [0.0, 0.0, 0.5, 0.0, -0.5 * drift_scale, 0.0]
    return m


def coefficient_taps(alpha, beta, sigma, rho, gamma, matrices):
    """Taps of D coefficient sets in one batched matmul: taps[t] = M_t u_t, with
    u_t = [1, α_t², σ_t², β_t, ρ_t, γ_t] (6 x C) and M_t = `matrices[t]` (9 x 6, `taps_matrix`).

    Args: the five coefficients, each (D, C); matrices a NumPy array (D, 9, 6).
    Returns: (D, 3, 3, C).
    """
    u = ops.stack([ops.ones_like(alpha), alpha * alpha, sigma * sigma, beta, rho, gamma], axis=1)  # (D, 6, C)
    taps = ops.matmul(ops.convert_to_tensor(matrices, dtype=u.dtype), u)
    return ops.reshape(taps, (len(matrices), 3, 3, -1))


def stacked_taps(blocks):
    """The taps of several built PDE blocks as one (D, 3, 3, C) tensor (`coefficient_taps`),
    M_t = `taps_matrix(blocks[t].drift_scale)`. `PDEBlock.taps()` is the case D = 1; a
    `StencilStack` of PDE blocks builds all its kernels (and their gradients) with a few ops.
    """
    depth = len(blocks)
    coefficients = (
        ops.reshape(ops.stack([getattr(b, n).value for b in blocks]), (depth, -1)) for n in COEFFICIENT_NAMES
    )  # each (D, C); one reshape per coefficient, not one per weight (the ops are the cost)
    return coefficient_taps(*coefficients, np.stack([b._taps_matrix for b in blocks]))


class PDECoefficients:
    """The five coefficient weights α, β, σ, ρ, γ of a PDE layer: initializers, weights,
    `coefficients()` / `set_coefficients()` and their config (shared by `PDEBlock` and
    `PDEField`). Defaults α = σ = 0.1, β = ρ = γ = 0: a weak diffusion (α²/2 = 0.005); α and σ
    must not start at 0, where their gradient (∝ α, σ) vanishes."""

    def _init_coefficients(self, initializers):
        default = keras.initializers.Constant(0.1)
        for name in COEFFICIENT_NAMES:
            value = initializers[name]
            if value is None and name in ("alpha", "sigma"):
                value = default
            setattr(self, f"{name}_initializer", keras.initializers.get(value))

    def _build_coefficients(self, input_shape, leading=()):
        """Add the five weights, shape `leading` + (() for one channel, (C,) otherwise)."""
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects NHWC input (N, H, W, C) with a known channel "
                f"count, e.g. (N, 28, 28, 1). Received: input_shape={tuple(input_shape)}"
            )
        self.channels = int(input_shape[-1])
        shape = tuple(leading) + channel_shape(self.channels)
        for name in COEFFICIENT_NAMES:
            weight = self.add_weight(name=name, shape=shape, initializer=getattr(self, f"{name}_initializer"))
            setattr(self, name, weight)

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

    def _coefficients_config(self):
        return {f"{n}_initializer": keras.initializers.serialize(getattr(self, f"{n}_initializer")) for n in COEFFICIENT_NAMES}


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDEBlock(PDECoefficients, ResidualBlock):
    """One Euler step (Δt = Δx = Δy = 1) of a second-order PDE, then ReLU:

        ψ ← relu( ψ + α²/2 Dxx ψ + s β Dx ψ + σ²/2 Dyy ψ + s ρ Dy ψ + γ ψ ) = relu(ψ + Lψ)

    with Dxx, Dx along the width (axis 2) and Dyy, Dy along the height (axis 1), central
    differences and zero (Dirichlet) padding outside the image. `s` is `drift_scale`:
    1 gives PDE1 (thesis eq 39), -1/8 gives PDE2 (eq 40). The update is a depthwise 3x3
    correlation with a five-point kernel built from the coefficients (see `taps`).

    The block is one explicit Euler step of Δt = 1 of the vector field f(ψ) = relu(ψ + Lψ) − ψ
    (`vector_field`); `pde_zoo.layers.PDEField` is the same field with time-dependent
    coefficients, for continuous depth.

    Args:
        drift_scale: float `s` multiplying the drift terms β Dx and ρ Dy. Subclasses that fix
            it (`FIXED_DRIFT_SCALE`: PDE1Block, PDE2Block) reject any other value and leave it
            out of their config, as Keras's Conv2D fixes `rank`.
        alpha_initializer, beta_initializer, sigma_initializer, rho_initializer,
        gamma_initializer: Keras initializers of the five coefficients (`PDECoefficients`),
            by default a weak diffusion, so every block starts near the identity.
        **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

    Weights: `alpha`, `beta`, `sigma`, `rho`, `gamma`; scalars for one input channel, one
    per channel (shape `(C,)`) otherwise.

    Call arguments:
        inputs: float tensor `(N, H, W, C)`, NHWC.

    Example:
    >>> block = pde_zoo.layers.PDE2Block()
    >>> y = block(np.random.rand(2, 28, 28, 1).astype("float32"))
    >>> block.set_coefficients(alpha=0.5, beta=1.0)
    >>> block.coefficients()["alpha"]
    array(0.5, dtype=float32)
    """

    FIXED_DRIFT_SCALE = None  # set by subclasses that fix s

    def __init__(
        self,
        drift_scale=None,
        alpha_initializer=None,
        beta_initializer="zeros",
        sigma_initializer=None,
        rho_initializer="zeros",
        gamma_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        fixed = self.FIXED_DRIFT_SCALE
        if fixed is not None and drift_scale is not None and float(drift_scale) != fixed:
            raise ValueError(
                f"{type(self).__name__} fixes drift_scale = {fixed}; use PDEBlock(drift_scale=...) for another "
                f"value. Received: drift_scale={drift_scale!r}"
            )
        self.drift_scale = float(fixed if fixed is not None else 1.0 if drift_scale is None else drift_scale)
        self._init_coefficients(
            dict(alpha=alpha_initializer, beta=beta_initializer, sigma=sigma_initializer, rho=rho_initializer, gamma=gamma_initializer)
        )
        self._taps_matrix = taps_matrix(self.drift_scale)

    def build(self, input_shape):
        self._build_coefficients(input_shape)

    @property
    def fusable(self):
        """Always: a PDE block is relu(taps ⋆ ψ) with a depthwise five-point kernel."""
        return True

    def taps(self):
        """The 3x3 correlation kernel of the linear update, identity included: shape (3, 3, C)."""
        return stacked_taps([self])[0]

    def offset(self):
        """The per-channel constant added before the ReLU: none for a PDE block."""
        return None

    def call(self, inputs):
        kernel = ops.expand_dims(self.taps(), -1)
        return ops.relu(ops.depthwise_conv(inputs, kernel, strides=1, padding="same"))

    def get_config(self):
        config = super().get_config()
        if self.FIXED_DRIFT_SCALE is None:
            config["drift_scale"] = self.drift_scale
        config.update(self._coefficients_config())
        return config
