"""Butcher tableaus of explicit Runge–Kutta methods, as data.

An s-stage explicit method with nodes c, strictly lower-triangular matrix A and weights b steps
from (t, y) by h as

    k_i = f(t + c_i h, y + h Σ_{j<i} a_ij k_j),    i = 1..s
    y1  = y + h Σ_i b_i k_i

An embedded pair adds weights b̂ of a lower order q = p - 1; ŷ1 = y + h Σ_i b̂_i k_i and the
local error estimate is err = y1 - ŷ1 = h Σ_i (b_i - b̂_i) k_i = O(h^p) (the step-size controller
reads it). A method is FSAL (first same as last) when its last stage is evaluated at y1
(c_s = 1, a_s = b_1..b_{s-1}, b_s = 0): that k_s is f(t + h, y1), the next step's k_1.

`ButcherTableau.validate` (run by `register_tableau`) refuses a tableau that is not consistent:

    Σ_j a_ij = c_i                  (each stage samples f at the time it claims)
    Σ_i b_i = 1,  Σ_i b̂_i = 1       (the weights of y1 and of ŷ1 are consistent)
    Σ_i b_i c_i^(k-1) = 1/k,  k = 1..p;   Σ_i b̂_i c_i^(k-1) = 1/k,  k = 1..p - 1

(the last line: the quadrature conditions of the stated orders, which every method of order p
satisfies; the remaining order conditions are what the convergence-order tests measure).
"""

import math
from dataclasses import dataclass

__all__ = ["ButcherTableau", "EULER", "MIDPOINT", "RK4", "DOPRI5", "BOSH3", "ADAPTIVE_HEUN", "TABLEAUS"]

_TOLERANCE = 1e-12  # exact rationals in binary floating point: sums agree to a few ulps


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method (module docstring for the formulas).

    Args:
        name: the method's name (the key of `pde_zoo.ode.METHODS` once registered).
        order: the order p of the solution `b`.
        c: nodes c_i, c_1 = 0.
        a: rows of the strictly lower-triangular A; row i holds a_i1..a_i,i-1 (row 1 is empty).
        b: weights of the solution y1.
        b_embedded: weights b̂ of the embedded solution of order p - 1 (adaptive methods), or
            None for a fixed-step method.
    """

    name: str
    order: int
    c: tuple
    a: tuple
    b: tuple
    b_embedded: tuple = None

    @property
    def stages(self):
        return len(self.c)

    @property
    def adaptive(self):
        """Whether the tableau has an embedded error estimate."""
        return self.b_embedded is not None

    @property
    def b_error(self):
        """b_i - b̂_i: err = h Σ_i (b_i - b̂_i) k_i (None for a fixed-step tableau)."""
        if self.b_embedded is None:
            return None
        return tuple(b - bh for b, bh in zip(self.b, self.b_embedded))

    @property
    def fsal(self):
        """First same as last: the last stage is f(t + h, y1)."""
        return self.c[-1] == 1.0 and tuple(self.a[-1]) == tuple(self.b[:-1]) and self.b[-1] == 0.0

    def validate(self):
        """Raise ValueError naming the first rule the tableau breaks; returns the tableau."""
        where = f"Butcher tableau {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"A Butcher tableau needs a non-empty str name. Received: name={self.name!r}")
        if not isinstance(self.order, int) or isinstance(self.order, bool) or self.order < 1:
            raise ValueError(f"{where}: `order` must be a positive int. Received: order={self.order!r}")
        s = len(self.c)
        if s < 1 or len(self.a) != s or len(self.b) != s:
            raise ValueError(f"{where}: c, a and b need one entry per stage. Received: {len(self.c)}, {len(self.a)}, {len(self.b)} entries")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"{where}: explicit methods need a strictly lower-triangular A, row {i} with {i} entries. Received: a[{i}]={row}")
        numbers = [*self.c, *self.b, *(x for row in self.a for x in row), *(self.b_embedded or ())]
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
            raise ValueError(f"{where}: every coefficient must be a finite number")
        if self.c[0] != 0.0:
            raise ValueError(f"{where}: the first stage is f(t, y), c_1 = 0. Received: c[0]={self.c[0]}")
        for i, (ci, row) in enumerate(zip(self.c, self.a)):
            if abs(math.fsum(row) - ci) > _TOLERANCE:
                raise ValueError(f"{where}: rule Σ_j a_ij = c_i broken at row {i}: Σ a[{i}] = {math.fsum(row)!r}, c[{i}] = {ci!r}")
        _check_weights(where, "b", self.b, self.c, self.order)
        if self.b_embedded is not None:
            if len(self.b_embedded) != s:
                raise ValueError(f"{where}: b_embedded needs one entry per stage. Received: {len(self.b_embedded)} entries for {s} stages")
            _check_weights(where, "b_embedded", self.b_embedded, self.c, self.order - 1)
        return self


def _check_weights(where, label, weights, c, order):
    """Σ w_i = 1 and the quadrature conditions Σ w_i c_i^(k-1) = 1/k for k = 2..order."""
    if abs(math.fsum(weights) - 1.0) > _TOLERANCE:
        raise ValueError(f"{where}: rule Σ_i {label}_i = 1 broken: Σ {label} = {math.fsum(weights)!r}")
    for k in range(2, order + 1):
        moment = math.fsum(w * ci ** (k - 1) for w, ci in zip(weights, c))
        if abs(moment - 1.0 / k) > _TOLERANCE:
            raise ValueError(
                f"{where}: rule Σ_i {label}_i c_i^{k - 1} = 1/{k} (needed for order {order}) broken: it is {moment!r}"
            )


EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
RK4 = ButcherTableau(
    "rk4", 4, c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6)
)
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5 = ButcherTableau(  # Dormand & Prince 1980, 5(4), FSAL
    "dopri5",
    5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:6],
    ),
    b=_DOPRI5_B,
    b_embedded=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
)
BOSH3 = ButcherTableau(  # Bogacki & Shampine 1989, 3(2), FSAL
    "bosh3",
    3,
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((), (1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_embedded=(7 / 24, 1 / 4, 1 / 3, 1 / 8),
)
ADAPTIVE_HEUN = ButcherTableau(  # Heun's method with explicit Euler embedded, 2(1)
    "adaptive_heun", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(1 / 2, 1 / 2), b_embedded=(1.0, 0.0)
)

TABLEAUS = (EULER, MIDPOINT, RK4, DOPRI5, BOSH3, ADAPTIVE_HEUN)
