"""Von Neumann analysis of a solver step: the symbol of one explicit Runge–Kutta step on a linear
constant-coefficient PDE field (continuous depth, thesis chapter V).

The maths. Let the field be linear with constant coefficients on the lattice, dψ/dt = L ψ, L a
3x3 correlation stencil (no identity). On the plane wave ψ[i, j] = v exp(i(px j + py i)) L acts
as multiplication by its symbol λ(p) = Σ L[dy + 1, dx + 1] exp(i(px dx + py dy))
(`pde_zoo.layers.physics_protocol.symbol_of_taps`). An explicit Runge–Kutta method with Butcher
tableau (A, b, c) steps by h as

    k_i = L (ψ + h Σ_{j<i} a_ij k_j),    ψ1 = ψ + h Σ_i b_i k_i.

On the wave every k_i is a multiple of the wave: with z = h λ(p) and K = (k_1..k_s)/λ as
scalars, K = ψ (1 + z A K), so K = (I - zA)⁻¹ 1 ψ and

    ψ1 = R(z) ψ,    R(z) = 1 + z bᵀ (I - z A)⁻¹ 1,

the method's stability function. For an explicit method A is strictly lower triangular
(nilpotent, A^s = 0), so (I - zA)⁻¹ = Σ_{k<s} z^k A^k and R is the polynomial

    R(z) = 1 + Σ_{k=1}^{s} (bᵀ A^{k-1} 1) z^k

of degree ≤ s; a method of order p has R(z) = e^z + O(z^{p+1}) (r_k = 1/k! for k ≤ p). So one
step multiplies the mode p by G_h(p) = R(h λ(p)): the step is the (2s+1) x (2s+1) stencil
R(hL) = Σ_k r_k h^k L^k (`step_stencil`), and its ℓ² amplification on the lattice is
max_p |R(h λ(p))| (Parseval). A solve of steps h_1..h_n on one time segment multiplies the mode
by Π_j R(h_j λ(p)) (the coefficients are constant on the segment), to be compared with the
exact flow exp(T λ(p)), T = Σ_j h_j; hence

    max_p |Π_j R(h_j λ(p))|  ≤  Π_j max_p |R(h_j λ(p))|

(the composite amplification, and the product bound, of the segment's linear solve).

For the zoo's ReLU fields f(ψ) = relu(ψ + Lψ) − ψ this is the analysis of the linear part (all
gates open, f = Lψ), the same reading as the per-block von Neumann analysis of the discrete
models; with Euler and h = 1 it is exactly that: R(λ) = 1 + λ = G(p) of the PDE block.
"""

import numpy as np

__all__ = [
    "max_over_p", "stability_function", "stability_polynomial", "step_amplification", "step_stencil", "tableau_of",
]


def tableau_of(method):
    """The `ButcherTableau` of a method name (`pde_zoo.ode.METHODS`), a `RungeKutta` solver or a tableau."""
    from pde_zoo.ode import METHODS, ButcherTableau

    if isinstance(method, ButcherTableau):
        return method
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"Unknown ODE method {method!r}; expected one of {sorted(METHODS)}.")
        return METHODS[method].tableau
    tableau = getattr(method, "tableau", None)
    if tableau is None:
        raise TypeError(f"Expected a method name, a RungeKutta solver or a ButcherTableau. Received: {type(method).__name__}")
    return tableau


def _matrices(tableau):
    s = tableau.stages
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a):
        a[i, : len(row)] = row
    return a, np.asarray(tableau.b, dtype=np.float64)


def stability_polynomial(method):
    """Coefficients r_0..r_s of R(z) = Σ r_k z^k (module docstring): r_0 = 1, r_k = bᵀ A^{k-1} 1.

    Args:
        method: name, `RungeKutta` solver or `ButcherTableau` of an explicit method.

    Returns:
        float64 array (s + 1,).
    """
    a, b = _matrices(tableau_of(method))
    r, v = [1.0], np.ones(len(b))
    for _ in range(len(b)):
        r.append(float(b @ v))
        v = a @ v
    return np.array(r)


def stability_function(method, z):
    """R(z) = 1 + z bᵀ (I - z A)⁻¹ 1, evaluated by solving the s x s system at every z (the
    definition; `stability_polynomial` is its closed form for explicit methods).

    Args:
        method: name, `RungeKutta` solver or `ButcherTableau`.
        z: complex array-like of any shape.

    Returns:
        complex128 array of z's shape.
    """
    a, b = _matrices(tableau_of(method))
    z = np.asarray(z, dtype=np.complex128)
    flat = z.reshape(-1)
    s = len(b)
    systems = np.eye(s)[None] - flat[:, None, None] * a[None]
    k = np.linalg.solve(systems, np.ones((flat.size, s, 1), dtype=np.complex128))[..., 0]
    return (1.0 + flat * (k @ b)).reshape(z.shape)


def step_amplification(method, h, lam):
    """G_h(p) = R(h λ(p)) for symbols `lam` (any shape) and a step size h (Horner on
    `stability_polynomial`)."""
    r = stability_polynomial(method)
    z = h * np.asarray(lam, dtype=np.complex128)
    out = np.full(z.shape, r[-1], dtype=np.complex128)
    for coefficient in r[-2::-1]:
        out = out * z + coefficient
    return out


def step_stencil(method, h, operator):
    """The correlation stencil of one step, R(hL) = Σ_k r_k h^k L^k (module docstring).

    Args:
        method: name, solver or tableau (s stages).
        h: step size.
        operator: taps of L (no identity), (3, 3) or (3, 3, C) (depthwise).

    Returns:
        float64 array (2s + 1, 2s + 1[, C]), centred: entry [s + dy, s + dx] multiplies
        ψ[i + dy, j + dx]. Its symbol is R(h λ(p)).
    """
    from pde_zoo.physics.paths import _full_conv

    r = stability_polynomial(method)
    op = np.asarray(operator, dtype=np.float64)
    squeeze = op.ndim == 2
    op = op[..., None] if squeeze else op
    s = len(r) - 1
    size = 2 * s + 1
    total = np.zeros((size, size, op.shape[-1]))
    power = np.ones((1, 1, op.shape[-1]))  # L^0 = identity, offset-indexed
    for k in range(s + 1):
        n = power.shape[0] // 2
        total[s - n : s + n + 1, s - n : s + n + 1] += r[k] * h**k * power
        power = _full_conv(power, op)
    return total[..., 0] if squeeze else total


def _grid(n):
    if n < 3 or n % 2 == 0:
        raise ValueError(f"The p-grid needs an odd number of points >= 3 (so that it holds 0 and ±π). Received: n={n}")
    return np.linspace(-np.pi, np.pi, n)


def max_over_p(values, n=257, refine=4):
    """max over p in [-π, π]² of a smooth function values(px, py) -> array (..., C): the n x n
    grid maximum per channel, refined `refine` times on a 21 x 21 local grid, 10x finer each time
    (as `pde_zoo.physics.max_amplification`).

    Returns:
        (best (C,), argmax (C, 2) as (px, py)).
    """
    p = _grid(n)
    py, px = np.meshgrid(p, p, indexing="ij")
    grid = np.asarray(values(px, py))
    grid = grid.reshape(n, n, -1)
    best, where = [], []
    for c in range(grid.shape[-1]):
        row, col = np.unravel_index(np.argmax(grid[..., c]), (n, n))
        value, py0, px0, h = grid[row, col, c], p[row], p[col], p[1] - p[0]
        for _ in range(refine):
            local = np.linspace(-h, h, 21)
            gy, gx = np.meshgrid(py0 + local, px0 + local, indexing="ij")
            m = np.asarray(values(gx, gy)).reshape(21, 21, -1)[..., c]
            idx = np.unravel_index(np.argmax(m), m.shape)
            if m[idx] > value:
                value, py0, px0 = m[idx], gy[idx], gx[idx]
            h /= 10
        best.append(float(value))
        where.append((float(px0), float(py0)))
    return np.array(best), np.array(where)
