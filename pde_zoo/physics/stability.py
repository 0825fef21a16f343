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
"""

import numpy as np

from pde_zoo.physics.paths import blocks_of, stencils_of
from pde_zoo.physics.stencils import OFFSETS, _stencil3, symbol


def _grid(n):
    if n < 3 or n % 2 == 0:
        raise ValueError(f"The p-grid needs an odd number of points >= 3 (so that it holds 0 and ±π). Received: n={n}")
    return np.linspace(-np.pi, np.pi, n)


def amplification_map(layer, n=257):
    """|G(p)| on the n x n grid p in [-π, π]² (both ends included).

    Returns:
        (p, mag): p (n,) the grid of px and of py; mag (n, n) with rows py and columns px,
        (n, n, C) for C > 1 channels.
    """
    p = _grid(n)
    phase = np.exp(1j * np.outer(p, OFFSETS))
    mag = np.abs(np.einsum("ar,rsc,bs->abc", phase, _stencil3(layer), phase))
    return p, (mag[..., 0] if mag.shape[-1] == 1 else mag)


def max_amplification(layer, n=257, refine=4):
    """max over p in [-π, π]² of |G(p)| (von Neumann amplification of one block).

    The maximum of the n x n grid is refined `refine` times on a 21 x 21 local grid around the
    best point, each time 10x finer, so smooth maxima are found to ~1e-12.

    Args:
        layer: block or stencil array.
        n: odd grid size; refine: refinement rounds.

    Returns:
        float, or array (C,) for C > 1 channels.
    """
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
    return out[0] if len(out) == 1 else np.array(out)


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


def amplification_profile(layers_or_model, n=257):
    """Per-block max_p |G_t(p)|, its product over depth, and the same relative to the mean mode.

    The product bounds the whole stack: on any image with zero padding, the zero-padded
    correlation is a compression of the lattice convolution, whose ℓ² norm is max_p |G| by
    Parseval; ReLU is 1-Lipschitz and a bias cancels in differences, so

        ||Φ(ψ) - Φ(φ)||₂ ≤ prod_t max_p |G_t(p)| · ||ψ - φ||₂

    for the stack Φ of the blocks, ReLU included (per channel for depthwise blocks).
    The relative amplification max_p |G_t(p)| / |G_t(0)| ≥ 1 leaves out the uniform gain
    |G(0)| = |1 + γ| (a rescaling of the whole image, which a bias-free ReLU stack passes on
    unchanged, Φ(cψ) = cΦ(ψ) for c > 0) and measures how much faster than the mean any pattern
    grows: 1 exactly inside the region of `von_neumann`'s "zero_mode_dominates".

    Args:
        layers_or_model: as in `propagator`; n: grid size of `max_amplification`.

    Returns:
        dict: "max_abs_G" (N,) or (N, C); "layer_max" (N,) the maximum over channels;
        "log10_cumulative" (N,) cumulative sum of log10(layer_max); "log10_bound" the total;
        "relative_max" (N,) max over channels of max_p |G| / |G(0)| (inf where G(0) = 0);
        "log10_relative_bound" sum of log10(relative_max).
    """
    stencils = stencils_of(blocks_of(layers_or_model))
    shape = (len(stencils), stencils[0].shape[-1] if stencils else 1)
    per_layer = np.array([max_amplification(k, n) for k in stencils]).reshape(shape)
    zero_mode = np.array([np.abs(k.sum(axis=(0, 1))) for k in stencils]).reshape(shape)
    with np.errstate(divide="ignore"):
        relative = (per_layer / zero_mode).max(axis=1)
    layer_max = per_layer.max(axis=1)
    cumulative = np.cumsum(np.log10(layer_max))
    return {
        "max_abs_G": per_layer[:, 0] if per_layer.shape[1] == 1 else per_layer,
        "layer_max": layer_max,
        "log10_cumulative": cumulative,
        "log10_bound": float(cumulative[-1]) if len(cumulative) else 0.0,
        "relative_max": relative,
        "log10_relative_bound": float(np.log10(relative).sum()),
    }
