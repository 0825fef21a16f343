"""Von Neumann stability of the explicit scheme each block is (thesis eq 23-24, 39-40).

A block multiplies the plane wave of wave number p by G(p) (`symbol`); the linear update is
non-amplifying in ℓ² iff max_p |G(p)| ≤ 1.

Closed forms for a PDE block (a = α², b = σ², B = sβ, R = sρ, c = 1 + γ, s = drift scale).
With X = sin²(px/2), Y = sin²(py/2):

    G = c - 2aX - 2bY + i (B sin px + R sin py)
      = (c - a - b) + (a cos px + i B sin px) + (b cos py + i R sin py),

the sum of a point and two ellipses. Hence, exactly,

    max_p |G| = max_{0 ≤ θ ≤ π} [ (c - a - b) cos θ + sqrt(a² cos²θ + B² sin²θ) + sqrt(b² cos²θ + R² sin²θ) ]

(the largest support value of the Minkowski sum). Consequences:
  * necessary: |1 + γ| ≤ 1 (p = 0) and |1 + γ - 2α² - 2σ²| ≤ 1 (p = (π, π));
  * without drift (β = ρ = 0) these two are also sufficient: max|G| = max(|c|, |c - 2a - 2b|);
  * with drift and c > 0 (Hindmarsh, Gresho & Griffiths 1984 for c = 1, scaled by c):
        max_p |G| = 1 + γ   iff   α² + σ² ≤ 1 + γ   and   (sβ)²/α² + (sρ)²/σ² ≤ 1 + γ,
    i.e. no wave grows faster than the mean (p = 0) mode. For γ = 0 this *is* the stability
    region: α² + σ² ≤ 1 and (sβ)²/α² + (sρ)²/σ² ≤ 1. For PDE1 (s = 1) a drift |β| > |α| alone
    already amplifies; PDE2's s = -1/8 allows |β| up to 8|α|.

Blocks that mix channels (`PDESystemBlock`: ψ + Aψ with a channel mixing Γ; a multi-channel
`ResidualConvBlock`) multiply the plane wave v e^{ip·x} (v in C^C) by a C x C matrix G(p)
(`system_symbol`); the step is non-expanding in ℓ² iff max_p ‖G(p)‖₂ ≤ 1 (spectral norm),
which `max_amplification` returns for them. `PDESystemBlock(stable=True)` satisfies it for
any weights (proof in `pde_zoo.layers.PDESystemField`).
"""

import numpy as np

from pde_zoo.layers._stencil_math import squeeze_channel
from pde_zoo.physics.paths import _per_channel, blocks_of
from pde_zoo.physics.stencils import OFFSETS, _stencil3, mixes_channels, symbol, system_stencil, system_symbol

SYSTEM_GRID = 65  # default p-grid of a channel-mixing block (a C x C norm per point)


def _grid(n):
    if n < 3 or n % 2 == 0:
        raise ValueError(f"The p-grid needs an odd number of points >= 3 (so that it holds 0 and ±π). Received: n={n}")
    return np.linspace(-np.pi, np.pi, n)


def _spectral_norm(g):
    """‖G‖₂ of a stack of square matrices (..., C, C): the largest singular value."""
    return np.linalg.svd(g, compute_uv=False)[..., 0]


def _system_norm(k, px, py):
    return _spectral_norm(system_symbol(k, px, py))


def amplification_map(layer, n=None):
    """|G(p)| on the n x n grid p in [-π, π]² (both ends included); for a block that mixes
    channels (`physics.mixes_channels`) the spectral norm ‖G(p)‖₂ of its matrix symbol.

    Args:
        layer: block or stencil array; n: odd grid size (default 257, 65 for a mixing block).

    Returns:
        (p, mag): p (n,) the grid of px and of py; mag (n, n) with rows py and columns px,
        (n, n, C) for a depthwise block with C > 1 channels.
    """
    if mixes_channels(layer):
        p = _grid(SYSTEM_GRID if n is None else n)
        py, px = np.meshgrid(p, p, indexing="ij")
        return p, _system_norm(system_stencil(layer), px, py)
    p = _grid(257 if n is None else n)
    phase = np.exp(1j * np.outer(p, OFFSETS))
    mag = np.abs(np.einsum("ar,rsc,bs->abc", phase, _stencil3(layer), phase))
    return p, squeeze_channel(mag)


def max_amplification(layer, n=None, refine=4):
    """max over p in [-π, π]² of |G(p)| (von Neumann amplification of one block); for a block
    that mixes channels (`PDESystemBlock`, a multi-channel `ResidualConvBlock`, a (3, 3, C, C)
    array) max_p ‖G(p)‖₂, the spectral norm of its matrix symbol (`system_symbol`): the ℓ²
    operator norm of the lattice update.

    The maximum of the n x n grid is refined `refine` times on a 21 x 21 local grid around the
    best point, each time 10x finer, so smooth maxima are found to ~1e-12.

    Args:
        layer: block or stencil array.
        n: odd grid size (default 257; 65 for a mixing block, a C x C norm per point).
        refine: refinement rounds.

    Returns:
        float for one channel or a mixing block, else array (C,) (one value per channel).
    """
    if mixes_channels(layer):
        return _max_system_amplification(system_stencil(layer), SYSTEM_GRID if n is None else n, refine)
    n = 257 if n is None else n
    k = _stencil3(layer)
    p, mag = amplification_map(k, n)
    mag = mag.reshape(n, n, -1)
    out = []
    for c in range(k.shape[-1]):
        row, col = np.unravel_index(np.argmax(mag[..., c]), (n, n))
        best, py0, px0, h = mag[row, col, c], p[row], p[col], p[1] - p[0]
        for _ in range(refine):
            local = np.linspace(-h, h, 21)
            py, px = np.meshgrid(py0 + local, px0 + local, indexing="ij")
            m = np.abs(symbol(k[..., c], px, py))
            idx = np.unravel_index(np.argmax(m), m.shape)
            if m[idx] > best:
                best, py0, px0 = m[idx], py[idx], px[idx]
            h /= 10
        out.append(float(best))
    return _per_channel(np.array(out))


def _max_system_amplification(k, n, refine):
    """max_p ‖G(p)‖₂ of a system stencil (3, 3, C, C): grid over py ≥ 0 (‖G(-p)‖ = ‖G(p)‖ for a
    real kernel, G(-p) = conj G(p)), then the local refinement of `max_amplification`."""
    p = _grid(n)
    half = p[n // 2 :]
    py, px = np.meshgrid(half, p, indexing="ij")
    mag = _system_norm(k, px, py)
    row, col = np.unravel_index(np.argmax(mag), mag.shape)
    best, py0, px0, h = mag[row, col], half[row], p[col], p[1] - p[0]
    for _ in range(refine):
        local = np.linspace(-h, h, 21)
        gy, gx = np.meshgrid(py0 + local, px0 + local, indexing="ij")
        m = _system_norm(k, gx, gy)
        idx = np.unravel_index(np.argmax(m), m.shape)
        if m[idx] > best:
            best, py0, px0 = m[idx], gy[idx], gx[idx]
        h /= 10
    return float(best)


def _zero_mode(layer):
    """|G(0)| per channel (C,), or (1,) holding ‖G(0)‖₂ for a mixing block."""
    if mixes_channels(layer):
        return np.array([_spectral_norm(system_stencil(layer).sum(axis=(0, 1)).T)])
    return np.abs(_stencil3(layer).sum(axis=(0, 1)))


def _support_max(z0, a, bx, b, by, points=4097, rounds=60):
    """max_θ [z0 cos θ + sqrt(a² cos² θ + bx² sin² θ) + sqrt(b² cos² θ + by² sin² θ)], θ in [0, π]."""

    def f(theta):
        cos, sin = np.cos(theta), np.sin(theta)
        return z0 * cos + np.sqrt((a * cos) ** 2 + (bx * sin) ** 2) + np.sqrt((b * cos) ** 2 + (by * sin) ** 2)

    theta = np.linspace(0.0, np.pi, points)
    values = f(theta)
    k = int(np.argmax(values))
    lo, hi = theta[max(k - 1, 0)], theta[min(k + 1, points - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(rounds):  # golden section on the bracket of the grid maximum
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if f(m1) < f(m2):
            lo = m1
        else:
            hi = m2
    return float(max(values[k], f(0.5 * (lo + hi))))


def von_neumann(alpha, beta, sigma, rho, gamma, drift_scale=1.0):
    """The closed-form von Neumann analysis of one PDE block (module docstring).

    Args:
        alpha, beta, sigma, rho, gamma: scalar coefficients; drift_scale: s (1 PDE1, -1/8 PDE2).

    Returns:
        dict:
          "G_zero": 1 + γ, the symbol at p = 0 (the mass of the stencil);
          "G_pi": 1 + γ - 2α² - 2σ², the symbol at p = (π, π);
          "diffusion_number": (α² + σ²)/(1 + γ) (None when 1 + γ ≤ 0);
          "drift_number": ((sβ)²/α² + (sρ)²/σ²)/(1 + γ) (a term with α = 0 and β ≠ 0 is
              infinite; None when 1 + γ ≤ 0);
          "zero_mode_dominates": 1 + γ > 0 and both numbers ≤ 1, i.e. max|G| = 1 + γ;
          "max_abs_G": the exact max_p |G(p)| (support-function formula);
          "stable": max_abs_G ≤ 1 (up to 1e-12).
    """
    a, b = float(alpha) ** 2, float(sigma) ** 2
    bx, by = drift_scale * float(beta), drift_scale * float(rho)
    c = 1.0 + float(gamma)

    def ratio(drift, diffusion):
        if drift == 0:
            return 0.0
        return drift**2 / diffusion if diffusion > 0 else float("inf")

    diffusion = (a + b) / c if c > 0 else None
    drift = (ratio(bx, a) + ratio(by, b)) / c if c > 0 else None
    max_abs = _support_max(c - a - b, a, bx, b, by)
    return {
        "G_zero": c,
        "G_pi": c - 2 * a - 2 * b,
        "diffusion_number": diffusion,
        "drift_number": drift,
        "zero_mode_dominates": bool(c > 0 and diffusion <= 1 and drift <= 1),
        "max_abs_G": max_abs,
        "stable": bool(max_abs <= 1 + 1e-12),
    }


def amplification_profile(layers_or_model, n=None):
    """Per-block max_p |G_t(p)|, its product over depth, and the same relative to the mean mode.

    The product bounds the whole stack: on any image with zero padding, the zero-padded
    correlation is a compression of the lattice convolution, whose ℓ² norm is max_p |G| by
    Parseval; ReLU is 1-Lipschitz and a bias cancels in differences, so

        ||Φ(ψ) - Φ(φ)||₂ ≤ prod_t max_p |G_t(p)| · ||ψ - φ||₂

    for the stack Φ of the blocks, ReLU included (per channel for depthwise blocks; for blocks
    that mix channels, max_p |G_t(p)| is the spectral norm max_p ‖G_t(p)‖₂ and the bound holds
    for the whole multi-channel state). Between stages at different resolutions (pdenet)
    the product covers the blocks only, not the transitions.
    The relative amplification max_p |G_t(p)| / |G_t(0)| ≥ 1 leaves out the uniform gain
    |G(0)| = |1 + γ| (a rescaling of the whole image, which a bias-free ReLU stack passes on
    unchanged, Φ(cψ) = cΦ(ψ) for c > 0) and measures how much faster than the mean any pattern
    grows: 1 exactly inside the region of `von_neumann`'s "zero_mode_dominates".

    Args:
        layers_or_model: as in `propagator` (a staged model: the blocks of every stage);
            n: grid size of `max_amplification`.

    Returns:
        dict: "max_abs_G" (N, C) for depthwise blocks with C > 1 channels each, else (N,)
        (one value per block: one channel, a mixing block's ‖G‖₂, or blocks of different
        widths, their maximum over channels); "layer_max" (N,) the maximum over channels;
        "log10_cumulative" (N,) cumulative sum of log10(layer_max); "log10_bound" the total;
        "relative_max" (N,) max over channels of max_p |G| / |G(0)| (inf where G(0) = 0);
        "log10_relative_bound" sum of log10(relative_max).
    """
    blocks = blocks_of(layers_or_model)
    per_block = [np.atleast_1d(max_amplification(b, n)) for b in blocks]
    zero_mode = [_zero_mode(b) for b in blocks]
    with np.errstate(divide="ignore"):
        relative = np.array([(g / z).max() for g, z in zip(per_block, zero_mode)])
    layer_max = np.array([g.max() for g in per_block])
    same_width = len({g.shape for g in per_block}) == 1 and per_block and per_block[0].shape[0] > 1
    cumulative = np.cumsum(np.log10(layer_max))
    return {
        "max_abs_G": np.stack(per_block) if same_width else layer_max,
        "layer_max": layer_max,
        "log10_cumulative": cumulative,
        "log10_bound": float(cumulative[-1]) if len(cumulative) else 0.0,
        "relative_max": relative,
        "log10_relative_bound": float(np.log10(relative).sum()),
    }
