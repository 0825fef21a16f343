"""The Gaussian limit of the path sum and the action of eq 35-38, exact and continuum.

Offsets d = (dy, dx) are those of `propagator`: the mass P[d] is what ψ_N[x] reads from
ψ_0[x + d]. A feature at x_0 therefore shows up at x_0 - d: features move by -mean(d).

Exact discrete result (constant or varying coefficients). With c = 1 + γ ≠ 0 and s the drift
scale, the normalised stencil w = K / c of one PDE block has

    mass  c = 1 + γ = G(0)
    mean  E[dx] = sβ / c,   E[dy] = sρ / c
    var   Var dx = α²/c - (sβ/c)²,   Var dy = σ²/c - (sρ/c)²,   Cov(dx, dy) = -s²βρ / c²

(E[dx²] = α²/c, and dx·dy = 0 on the five-point cross). The N-block propagator is the
convolution of the stencils, so its mass is prod_t c_t and its mean and covariance are the
sums of the one-step ones (cumulants add: they are the Taylor coefficients of
log(G(p)/G(0)), and G multiplies). For PDE1 with β > 0 features drift to -x (left) by
β/(1+γ) per block; PDE2 (s = -1/8) moves them to +x by β/(8(1+γ)).

Thesis continuum result (eq 34-38). Integrating out p with H = -α²p²/2 + isβp + γ gives per
block e^γ e^{-(ẋ + sβ)²/2α²} / (√(2π) α), ẋ = x_t - x_{t-1} = -d_t: mean d = sβ, variance α²,
mass e^γ (eq 35 writes the prefactor e^γ/α, dropping the √(2π) of the Gaussian integral).
Over N blocks the sum over paths of e^{-S} is a Gaussian with mean sum_t sβ_t, variance
sum_t α_t², mass prod_t e^{γ_t}. It differs from the exact lattice result by the factor
1/(1+γ) in mean and variance, the -(sβ/(1+γ))² variance term, the βρ cross-covariance, and
the mass e^γ instead of 1 + γ; the two agree when γ → 0 and β² ≪ α². The CLT makes the
normalised lattice propagator approach the Gaussian with the *exact* moments when the
stencil weights are non-negative (1 + γ ≥ α² + σ², |sβ| ≤ α², |sρ| ≤ σ²).
"""

import numpy as np

from pde_zoo.physics.paths import blocks_of
from pde_zoo.physics.stencils import channel_stencil, continuum_coefficients


def stencil_moments(kernel):
    """Mass, mean and covariance of an offset-indexed kernel (a stencil or a propagator):

        mass = sum_d P[d],  mean = sum_d d P[d] / mass,  cov = sum_d (d - mean)(d - mean)^T P[d] / mass,

    d = (dy, dx) from -n..n for a (2n+1, 2n+1) array (signed weights allowed).

    Returns:
        dict: "mass" (float), "mean" (2,) as (dy, dx), "cov" (2, 2) in (y, x) order.

    Raises:
        ValueError: not a square array of odd size, or zero mass.
    """
    p = np.asarray(kernel, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] % 2 == 0:
        raise ValueError(f"Expected one channel's (2n+1, 2n+1) kernel. Received: shape={p.shape}")
    mass = p.sum()
    if mass == 0:
        raise ValueError("The kernel has zero mass (1 + γ = 0 for a PDE block); its moments are undefined.")
    n = p.shape[0] // 2
    d = np.arange(-n, n + 1, dtype=np.float64)
    w = p / mass
    mean = np.array([(w.sum(axis=1) * d).sum(), (w.sum(axis=0) * d).sum()])
    second = np.array([
        [(w.sum(axis=1) * d * d).sum(), (w * np.outer(d, d)).sum()],
        [(w * np.outer(d, d)).sum(), (w.sum(axis=0) * d * d).sum()],
    ])
    return {"mass": float(mass), "mean": mean, "cov": second - np.outer(mean, mean)}


def pde_step_moments(alpha, beta, sigma, rho, gamma, drift_scale=1.0):
    """Closed-form `stencil_moments` of one PDE block (module docstring), c = 1 + γ:
    mass c, mean (sρ/c, sβ/c), cov [[σ²/c - (sρ/c)², -s²βρ/c²], [-s²βρ/c², α²/c - (sβ/c)²]].

    Args:
        alpha, beta, sigma, rho, gamma: scalar coefficients; drift_scale: s.

    Returns:
        dict as `stencil_moments`.
    """
    c = 1.0 + gamma
    my, mx = drift_scale * rho / c, drift_scale * beta / c
    cov = np.array([[sigma**2 / c - my**2, -mx * my], [-mx * my, alpha**2 / c - mx**2]])
    return {"mass": float(c), "mean": np.array([my, mx]), "cov": cov}


def gaussian_limit(layers_or_model, channel=None):
    """The Gaussian parameters of the N-block propagator, exact and per the thesis continuum.

    "discrete": mass prod_t G_t(0), mean sum_t mean_t, cov sum_t cov_t from each block's
        stencil (`stencil_moments`; for PDE blocks the closed form `pde_step_moments`). These
        equal `stencil_moments(propagator(...))` exactly.
    "continuum": eq 35-38 with the blocks' continuum coefficients (`continuum_coefficients`):
        mass prod_t e^{γ_t}, mean (sum sρ_t, sum sβ_t), cov diag(sum σ_t², sum α_t²).

    Args:
        layers_or_model: as in `propagator`; channel: for multi-channel blocks.

    Returns:
        {"steps": N, "discrete": {...}, "continuum": {...}}, the inner dicts as `stencil_moments`.
    """
    layers = blocks_of(layers_or_model)
    steps = [stencil_moments(channel_stencil(layer, channel)) for layer in layers]
    coefficients = [continuum_coefficients(layer, channel) for layer in layers]
    discrete = {
        "mass": float(np.prod([m["mass"] for m in steps])),
        "mean": np.sum([m["mean"] for m in steps], axis=0) if steps else np.zeros(2),
        "cov": np.sum([m["cov"] for m in steps], axis=0) if steps else np.zeros((2, 2)),
    }
    continuum = {
        "mass": float(np.exp(sum(c["gamma"] for c in coefficients))),
        "mean": np.array([sum(c["drift_y"] for c in coefficients), sum(c["drift_x"] for c in coefficients)], dtype=np.float64),
        "cov": np.diag([sum(c["sigma2"] for c in coefficients), sum(c["alpha2"] for c in coefficients)]).astype(np.float64),
    }
    return {"steps": len(layers), "discrete": discrete, "continuum": continuum}


def gaussian_on_grid(mean, cov, n):
    """The normal density N(d; mean, cov) at the integer offsets d = (dy, dx), -n..n.

    Returns:
        float64 array (2n+1, 2n+1), rows dy, columns dx (sums to ≈ 1 when cov ≫ 1).

    Raises:
        ValueError: cov not positive definite.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if np.any(np.linalg.eigvalsh(cov) <= 0):
        raise ValueError(f"The covariance must be positive definite (stable, non-negative stencils). Received: cov={cov.tolist()}")
    d = np.arange(-n, n + 1, dtype=np.float64)
    grid = np.stack(np.meshgrid(d, d, indexing="ij"), axis=-1) - np.asarray(mean, dtype=np.float64)
    quad = np.einsum("...a,ab,...b->...", grid, np.linalg.inv(cov), grid)
    return np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))


def _action_terms(layers_or_model, channel):
    coefficients = [continuum_coefficients(layer, channel) for layer in blocks_of(layers_or_model)]
    if not coefficients:
        raise ValueError("The action needs at least one block.")
    if any(c["alpha2"] <= 0 or c["sigma2"] <= 0 for c in coefficients):
        raise ValueError("The action of eq 36-38 needs α² > 0 and σ² > 0 in every block (a diffusion in x and in y).")
    return coefficients


def _potential(c):
    """V = γ - log α - log σ (eq 37, with the y direction)."""
    return c["gamma"] - 0.5 * np.log(c["alpha2"]) - 0.5 * np.log(c["sigma2"])


def path_action(layers_or_model, path, channel=None):
    """The thesis action S of one continuum path (eq 36-38, in 2-D):

        S = sum_t [ (ẋ_t + sβ_t)²/(2α_t²) + (ẏ_t + sρ_t)²/(2σ_t²) - V_t ],  V_t = γ_t - log α_t - log σ_t,

    with ẋ_t = x_t - x_{t-1}, ẏ_t = y_t - y_{t-1}; the path contributes e^{-S} to eq 38.

    Args:
        layers_or_model: the N blocks (continuum coefficients, `continuum_coefficients`).
        path: array (N+1, 2) of positions (y, x) at t = 0..N (real numbers).
        channel: for multi-channel blocks.

    Raises:
        ValueError: path length ≠ N+1, or a block without diffusion in x or y.
    """
    coefficients = _action_terms(layers_or_model, channel)
    path = np.asarray(path, dtype=np.float64)
    if path.shape != (len(coefficients) + 1, 2):
        raise ValueError(f"path must be (N+1, 2) = ({len(coefficients) + 1}, 2) positions (y, x). Received: shape={path.shape}")
    velocity = np.diff(path, axis=0)
    return float(sum(
        (v[1] + c["drift_x"]) ** 2 / (2 * c["alpha2"]) + (v[0] + c["drift_y"]) ** 2 / (2 * c["sigma2"]) - _potential(c)
        for v, c in zip(velocity, coefficients)
    ))


def classical_action(layers_or_model, dy, dx, channel=None):
    """The least action over paths from x_0 = x_N + d to x_N (d = (dy, dx), the propagator offset):

        S_cl(d) = (sum_t sβ_t - dx)²/(2 sum_t α_t²) + (sum_t sρ_t - dy)²/(2 sum_t σ_t²) - sum_t V_t,

    attained at ẋ_t = λ α_t² - sβ_t with λ = (sum sβ - dx)/sum α² (Lagrange). Since the step
    weights are Gaussian, the continuum path sum of eq 38 is exactly ∝ e^{-S_cl(d)}: a Gaussian
    in d with mean (sum sρ, sum sβ) and variance (sum σ², sum α²) (`gaussian_limit`'s "continuum").

    Args:
        layers_or_model: the N blocks; dy, dx: offsets (arrays broadcast); channel: as above.

    Returns:
        float64 array of the broadcast shape of dy, dx.
    """
    coefficients = _action_terms(layers_or_model, channel)
    a = sum(c["alpha2"] for c in coefficients)
    b = sum(c["sigma2"] for c in coefficients)
    bx = sum(c["drift_x"] for c in coefficients)
    by = sum(c["drift_y"] for c in coefficients)
    dy, dx = np.broadcast_arrays(np.asarray(dy, dtype=np.float64), np.asarray(dx, dtype=np.float64))
    return (bx - dx) ** 2 / (2 * a) + (by - dy) ** 2 / (2 * b) - sum(_potential(c) for c in coefficients)
