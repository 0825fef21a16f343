"""Stencil algebra shared by the layers, `pde_zoo.physics` and `pde_zoo.analysis` (no Keras layer here).

Convention (docs/conventions.md): a linear update is the cross-correlation

    pre[i, j, c] = Σ_{dy, dx ∈ {-1, 0, 1}} K[dy + 1, dx + 1, c] ψ[i + dy, j + dx, c]

with x = column j (width, axis 2), y = row i (height, axis 1), Δx = Δy = 1 and zero padding.
"""

import numpy as np
from keras import ops

COEFFICIENT_NAMES = ("alpha", "beta", "sigma", "rho", "gamma")
PDE_TERMS = ("Dxx", "Dx", "Dyy", "Dy", "I")

# The eq-22 operators as correlation stencils, rows dy = -1, 0, 1 (north, centre, south),
# columns dx = -1, 0, 1 (west, centre, east).
OPERATORS = {
    "Dxx": np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]]),
    "Dx": np.array([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]),
    "Dyy": np.array([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1.0, 0.0]]),
    "Dy": np.array([[0.0, -0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]]),
    "I": np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
}
IDENTITY = OPERATORS["I"]


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


def taps_matrix(drift_scale, identity=True, time_step=1.0):
    """The linear map M (9 x 6) from u = [1, α², σ², β, ρ, γ] to the 3x3 correlation taps of
    ψ + Δt L ψ, with L ψ = α²/2 Dxx ψ + s β Dx ψ + σ²/2 Dyy ψ + s ρ Dy ψ + γ ψ.

    taps[3*r + c] = Σ_k M[3*r + c, k] u[k], where (r, c) = (1 + dy, 1 + dx). With s = drift_scale,
    the five non-zero taps of L (eq-22 stencils, x = column j, y = row i) are
        centre (0, 0):  γ - α² - σ²
        east  (0, +1):  α²/2 + s β/2        west  (0, -1):  α²/2 - s β/2
        south (+1, 0):  σ²/2 + s ρ/2        north (-1, 0):  σ²/2 - s ρ/2
    scaled by Δt = `time_step`; `identity` adds the 1 of ψ itself at the centre. With
    identity=False (and Δt = 1) these are the taps of the operator L alone.
    """
    m = np.zeros((9, 6), dtype="float32")
    m[4] = [0.0, -1.0, -1.0, 0.0, 0.0, 1.0]
    m[5] = [0.0, 0.5, 0.0, 0.5 * drift_scale, 0.0, 0.0]
    m[3] = [0.0, 0.5, 0.0, -0.5 * drift_scale, 0.0, 0.0]
    m[7] = [0.0, 0.0, 0.5, 0.0, 0.5 * drift_scale, 0.0]
    m[1] = [0.0, 0.0, 0.5, 0.0, -0.5 * drift_scale, 0.0]
    if time_step != 1.0:
        m = (m * np.float32(time_step)).astype("float32")
    m[4, 0] = float(identity)
    return m


def coefficient_taps(alpha, beta, sigma, rho, gamma, matrices):
    """Taps of D coefficient sets in one batched matmul: taps[t] = M_t u_t, with
    u_t = [1, α_t², σ_t², β_t, ρ_t, γ_t] (6 x C) and M_t = `matrices[t]` (9 x 6, `taps_matrix`).

    Args: the five coefficients, each a tensor (D, C); matrices a NumPy array (D, 9, 6).
    Returns: (D, 3, 3, C).
    """
    u = ops.stack([ops.ones_like(alpha), alpha * alpha, sigma * sigma, beta, rho, gamma], axis=1)  # (D, 6, C)
    taps = ops.matmul(ops.convert_to_tensor(matrices, dtype=u.dtype), u)
    return ops.reshape(taps, (len(matrices), 3, 3, -1))


def pde_stencil(alpha, beta, sigma, rho, gamma, drift_scale=1.0, time_step=1.0):
    """The stencil K = I + Δt L of one explicit Euler step of the eq-39/40 PDE, in float64:

        K = I + Δt (α²/2 Dxx + s β Dx + σ²/2 Dyy + s ρ Dy + γ I),   s = drift_scale,

    i.e. at Δt = 1 centre 1 + γ - α² - σ², east/west α²/2 ± sβ/2, south/north σ²/2 ± sρ/2
    (`taps_matrix`, evaluated in float64 with NumPy: the physics' independent form).

    Args:
        alpha, beta, sigma, rho, gamma: scalars, or arrays of one shape (one per channel).
        drift_scale: `s`; 1 for PDE1 (eq 39), -1/8 for PDE2 (eq 40).
        time_step: Δt of the step (1: the thesis blocks).

    Returns:
        float64 array (3, 3) for scalar coefficients, (3, 3, C) for coefficients of shape (C,).
    """
    alpha, beta, sigma, rho, gamma = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (alpha, beta, sigma, rho, gamma))
    )
    s, dt = float(drift_scale), float(time_step)
    operator = (
        np.multiply.outer(OPERATORS["Dxx"], alpha**2 / 2) + np.multiply.outer(OPERATORS["Dx"], s * beta)
        + np.multiply.outer(OPERATORS["Dyy"], sigma**2 / 2) + np.multiply.outer(OPERATORS["Dy"], s * rho)
        + np.multiply.outer(IDENTITY, gamma)
    )
    return np.multiply.outer(IDENTITY, np.ones_like(alpha)) + dt * operator
