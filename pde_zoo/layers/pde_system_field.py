"""A reaction-diffusion-advection system: a five-point PDE stencil per channel plus a 1x1 channel
mixing, as a vector field (the one source of `PDESystemBlock`'s weights and kernels)."""

import keras
import numpy as np
from keras import ops

from pde_zoo.layers._stencil_math import coefficient_taps, taps_matrix
from pde_zoo.layers.pde_field import STENCIL_NAMES, StencilField, set_initializers
from pde_zoo.layers.vector_field import nhwc_channels

ACTIVATIONS = ("relu", None)

# λx, λy, λm of the stable parametrization: the shares of the step taken by the x stencil, the y
# stencil and the mixing (they sum to 1; see `PDESystemField`).
STABLE_SPLIT = (0.25, 0.25, 0.5)


# Relative margin on the computed largest singular value: float32 SVD is accurate to a few
# ulps of ‖M‖₂ for these small matrices (C ≤ a few hundred), far inside 1e-5.
SVD_MARGIN = 1e-5


def spectral_norm_bound(matrix):
    """An upper bound ν(M) of the spectral norm ‖M‖₂, tight and differentiable:

        ν(M) = min( (1 + SVD_MARGIN) σ_max(M),  sqrt(‖M‖₁ ‖M‖∞) ).

    σ_max is the largest singular value (exact up to rounding, which the margin covers);
    Schur's bound sqrt(‖M‖₁ ‖M‖∞) (max column and max row absolute sums) is exact for the
    identity, so ν(I) = 1 exactly and a stable block at its initialization is the free one.
    """
    magnitude = ops.abs(matrix)
    schur = ops.sqrt(ops.max(ops.sum(magnitude, axis=0)) * ops.max(ops.sum(magnitude, axis=1)))
    largest_singular_value = ops.svd(matrix, compute_uv=False)[0]
    return ops.minimum((1.0 + SVD_MARGIN) * largest_singular_value, schur)


@keras.saving.register_keras_serializable(package="pde_zoo")
class PDESystemField(StencilField):
    """dψ/dt = f(ψ) for a reaction-diffusion-advection system on NHWC states ψ with C channels:

        f(t, ψ) = relu(ψ + Aψ + b) - ψ    (activation="relu": the field of a ReLU block), or
        f(t, ψ) = Aψ + b                  (activation=None: the linear system ψ_t = Aψ + b),

        (A ψ)_c = α_c²/2 Dxx ψ_c + s β_c Dx ψ_c + σ_c²/2 Dyy ψ_c + s ρ_c Dy ψ_c + Σ_c' Γ_cc' ψ_c'

    (the eq-22 stencils of docs/conventions.md, zero padding, s = `drift_scale`): a depthwise
    five-point PDE stencil per channel plus a 1x1 channel mixing Γ (C x C) and a bias b (C,).
    Autonomous (t unused). `PDESystemBlock` is the Euler step of the linear field, relu(ψ + Δt(Aψ + b)),
    so a block's weights load into a field and one Euler step of Δt = 1 of the ReLU field is the block.

    Weights (raw, trainable): `alpha`, `beta`, `sigma`, `rho`, `bias` of shape (C,) and
    `mixing` W of shape (C, C), indexed [c, c'] (output, input). The effective coefficients:

    - `stable=False`: α, β, σ, ρ, b are the weights and Γ = W.
    - `stable=True` (λx, λy, λm = `STABLE_SPLIT` = 1/4, 1/4, 1/2):

          α = sqrt(λx) tanh(α_w),   s β = λx tanh(α_w) tanh(β_w),
          σ = sqrt(λy) tanh(σ_w),   s ρ = λy tanh(σ_w) tanh(ρ_w),
          Γ = λm (Q - I),   Q = (I + W) / (1 + relu(ν(I + W) - 1)),   ν ≥ ‖·‖₂: `spectral_norm_bound`.

      Claim: for ANY weight values the Euler step ψ ↦ ψ + Aψ is non-expansive in ℓ², i.e. its
      matrix symbol G(p) = I + diag(ℓ_c(p)) + Γ (per wave number p, C x C) has
      max_p ‖G(p)‖₂ ≤ 1 (von Neumann), where, with X = sin²(px/2), Y = sin²(py/2),

          ℓ_c(p) = -2a_c X - 2b_c Y + i (B_c sin px + R_c sin py),   a = α², b = σ², B = sβ, R = sρ.

      Proof. Split G(p) = λx Dx(p) + λy Dy(p) + λm Q with the diagonal matrices
      Dx = I + diag(-2a X + i B sin px)/λx and Dy likewise. ‖Q‖₂ = ‖M‖₂ / max(1, ν(M)) ≤ 1
      for M = I + W, since ν(M) ≥ ‖M‖₂ (the largest singular value, or Schur's bound
      ‖M‖₂² ≤ ‖M‖₁‖M‖∞). Each diagonal
      entry of Dx is g = 1 - 2tX + i u sin px with t = a/λx = tanh²(α_w) ∈ [0, 1] and
      u = B/λx, u² = t tanh²(β_w) ≤ t; using sin²px = 4X(1 - X),

          |g|² = 1 - 4X [ (t - u²) + X (u² - t²) ],

      and the bracket, linear in X ∈ [0, 1], is t - u² ≥ 0 at X = 0 and t(1 - t) ≥ 0 at X = 1,
      so |g| ≤ 1; likewise Dy. Hence ‖G(p)‖₂ ≤ λx + λy + λm = 1 for every p. The bias
      cancels in differences and ReLU is 1-Lipschitz, so a stable block is 1-Lipschitz in ℓ²;
      with zero padding the step is a compression of the lattice operator, whose norm is
      max_p ‖G(p)‖₂, so the bound holds on the image with its boundary too. At W = 0 the
      mixing is Γ = 0, so both parametrizations start as a per-channel PDE step. The same holds
      for a step of any Δt ≤ 1: I + ΔtA = (1 - Δt) I + Δt (I + A), a convex combination.

    Args:
        drift_scale: `s` multiplying the drift terms (non-zero; 1 as PDE1, -1/8 as PDE2).
        stable: parametrize the coefficients so that max_p ‖G(p)‖₂ ≤ 1 for any weights (above).
        activation: "relu" or None (see above).
        alpha_initializer, beta_initializer, sigma_initializer, rho_initializer,
        mixing_initializer, bias_initializer: initializers of the raw weights; by default a
            weak diffusion (α_w = σ_w = 0.1), no drift, Γ = 0, b = 0: a per-channel diffusion.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> field = PDESystemField(stable=True)
    >>> y = ODEBlock(field, t1=1.0, method="rk4", step_size=0.25)(np.random.rand(2, 14, 14, 8).astype("float32"))
    """

    def __init__(self, drift_scale=1.0, stable=False, activation="relu", mixing_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: activation={activation!r}")
        if not isinstance(stable, bool):
            raise ValueError(f"stable must be True or False. Received: stable={stable!r}")
        if not float(drift_scale) != 0.0:
            raise ValueError(f"drift_scale must be non-zero (the drift is s β Dx). Received: drift_scale={drift_scale!r}")
        self.activation = activation
        self.drift_scale = float(drift_scale)
        self.stable = stable
        set_initializers(self, dict(mixing=mixing_initializer, bias=bias_initializer))
        # Correlation taps of ψ + α²/2 Dxx ψ + B Dx ψ + σ²/2 Dyy ψ + R Dy ψ from u = [1, α², σ², B, R, 0].
        self._system_taps_matrix = taps_matrix(1.0, identity=True)[None]

    def build(self, input_shape):
        self.channels = c = nhwc_channels(self, input_shape)
        for name in STENCIL_NAMES + ("bias",):
            setattr(self, name, self.add_weight(name=name, shape=(c,), initializer=getattr(self, f"{name}_initializer")))
        self.mixing = self.add_weight(name="mixing", shape=(c, c), initializer=self.mixing_initializer)
        from pde_zoo.layers._native import float32_kernel_applies  # (not at import: `python -m` runs _native)

        # The ReLU Euler step of a linear field may run as the fused C++ op (`fused_rectified_step`).
        self.fused = self.activation is None and float32_kernel_applies(self, "PDE-system step (PDESystemBlock)")

    def explicit_step(self, psi, time_step, t=0.0):
        """ψ + Δt f(ψ); for the linear field (activation=None) `linear_step`, one pass."""
        if self.activation is None:
            return self.linear_step(psi, time_step)
        return super().explicit_step(psi, time_step, t)

    def fused_rectified_step(self, psi, time_step):
        """relu(ψ + Δt (Aψ + b)) as one fused C++ op, forward and backward (`fused_rectified_steps` of this
        field alone), or None where it does not run."""
        return PDESystemField.fused_rectified_steps([self], [time_step], psi)

    @staticmethod
    def fused_rectified_steps(fields, time_steps, psi):
        """ψ through the steps relu(ψ + Δt_d (A_d ψ + b_d)) of `fields` at `time_steps`, in order, as one
        fused C++ op forward and one backward (`_tf_stencil.system_stack`: each chunk of images goes
        through every step, the depthwise stencil, the mixing, the bias and the ReLU, while it is in
        cache), or None where it does not run: a field not `fused` (decided at build), or the op
        unavailable now (no compiler, a GPU, XLA, a SavedModel being written). Same numbers as
        `linear_step` step by step (tests hold values and gradients equal at 1e-5)."""
        if not fields or not all(isinstance(f, PDESystemField) and f.fused for f in fields):
            return None
        from pde_zoo.layers._tf_stencil import native_ops, system_stack

        native = native_ops(psi.dtype)
        if native is None:
            return None
        steps = [f._step_coefficients(dt) for f, dt in zip(fields, time_steps)]
        taps = ops.stack([f._stencil_taps(*step[:4]) for f, step in zip(fields, steps)])
        return system_stack(native, psi, taps, ops.stack([step[4] for step in steps]), ops.stack([step[5] for step in steps]))

    def call(self, psi, t):
        del t  # autonomous
        pre = self.linear_step(psi, 1.0)
        return pre - psi if self.activation is None else ops.relu(pre) - psi

    def _effective(self):
        """(α, sβ, σ, sρ, Γ, b) as tensors: the coefficients the step uses (see the class docstring)."""
        alpha, beta, sigma, rho = (getattr(self, n).value for n in STENCIL_NAMES)
        w, bias = self.mixing.value, self.bias.value
        if not self.stable:
            return alpha, self.drift_scale * beta, sigma, self.drift_scale * rho, w, bias
        lx, ly, lm = STABLE_SPLIT
        t_alpha, t_sigma = ops.tanh(alpha), ops.tanh(sigma)
        m = ops.eye(self.channels, dtype=w.dtype) + w
        q = m / (1.0 + ops.relu(spectral_norm_bound(m) - 1.0))
        gamma = lm * (q - ops.eye(self.channels, dtype=w.dtype))
        return (
            np.sqrt(lx) * t_alpha, lx * t_alpha * ops.tanh(beta), np.sqrt(ly) * t_sigma, ly * t_sigma * ops.tanh(rho), gamma, bias
        )

    def _step_coefficients(self, dt):
        """The coefficients of one step ψ + Δt (Aψ + b): `_effective()` with Δt folded in
        (α and σ enter squared, so they scale by sqrt(Δt); drifts, Γ and b by Δt)."""
        alpha, drift_x, sigma, drift_y, gamma, bias = self._effective()
        return np.sqrt(dt) * alpha, dt * drift_x, np.sqrt(dt) * sigma, dt * drift_y, dt * gamma, dt * bias

    def _stencil_taps(self, alpha, drift_x, sigma, drift_y):
        """(3, 3, C) correlation taps of ψ + the per-channel stencil part (identity included)."""
        zeros = ops.zeros_like(alpha)
        rows = (ops.reshape(v, (1, -1)) for v in (alpha, drift_x, sigma, drift_y, zeros))
        return coefficient_taps(*rows, self._system_taps_matrix)[0]

    def linear_step(self, psi, time_step):
        """ψ + Δt (Aψ + b): the explicit Euler step of the linear part (before the nonlinearity),
        a depthwise correlation plus one matrix product (cheaper than the full 3x3 convolution)."""
        alpha, drift_x, sigma, drift_y, gamma, bias = self._step_coefficients(time_step)
        kernel = ops.expand_dims(ops.cast(self._stencil_taps(alpha, drift_x, sigma, drift_y), psi.dtype), -1)
        stencil = ops.depthwise_conv(psi, kernel, strides=1, padding="same")
        mixed = ops.matmul(psi, ops.transpose(ops.cast(gamma, psi.dtype)))  # (Γψ)_c = Σ_c' Γ[c, c'] ψ_c'
        return stencil + mixed + ops.cast(bias, psi.dtype)

    def step_system_taps(self, time_step):
        """The full correlation kernel of ψ ↦ ψ + ΔtAψ in Keras conv layout, shape (3, 3, C_in, C_out):
        the stencil of channel c on the diagonal, ΔtΓ[c, c'] at the centre tap [1, 1, c', c]."""
        alpha, drift_x, sigma, drift_y, gamma, _ = self._step_coefficients(time_step)
        taps = self._stencil_taps(alpha, drift_x, sigma, drift_y)  # (3, 3, C)
        diagonal = ops.expand_dims(taps, -1) * ops.eye(self.channels, dtype=taps.dtype)  # (3, 3, C, C)
        centre = np.zeros((3, 3, 1, 1), dtype="float32")
        centre[1, 1] = 1.0
        return diagonal + ops.convert_to_tensor(centre, dtype=taps.dtype) * ops.transpose(gamma)[None, None]

    def system_taps(self):
        """`step_system_taps` at Δt = 1: the kernel of the field's linear Euler step ψ + Aψ."""
        return self.step_system_taps(1.0)

    def coefficients(self):
        """The effective per-channel coefficients as NumPy arrays (C,): 'alpha', 'beta', 'sigma',
        'rho' (the PDE form α²/2 Dxx + s β Dx + ..., so β = (sβ)/s) and 'gamma' = diag(Γ), the
        reaction of each channel on itself (the eq-39 γ of the channel's diagonal stencil)."""
        alpha, drift_x, sigma, drift_y, gamma, _ = (keras.ops.convert_to_numpy(v) for v in self._effective())
        s = self.drift_scale
        return {"alpha": alpha, "beta": drift_x / s, "sigma": sigma, "rho": drift_y / s, "gamma": np.diagonal(gamma).copy()}

    def mixing_matrix(self):
        """The effective channel mixing Γ as a NumPy array (C, C), indexed [c, c'] (output, input)."""
        return keras.ops.convert_to_numpy(self._effective()[4])

    def get_config(self):
        config = super().get_config()
        config.update({"drift_scale": self.drift_scale, "stable": self.stable, "activation": self.activation})
        for name in ("mixing", "bias"):
            config[f"{name}_initializer"] = keras.initializers.serialize(getattr(self, f"{name}_initializer"))
        return config
