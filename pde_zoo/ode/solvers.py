"""Explicit Runge–Kutta solvers for dy/dt = f(t, y), written with `keras.ops`.

A state is a tuple of tensors (the public `odeint` passes a 1-tuple; the adjoint passes
(y, a, a_θ)); a vector field maps (t, state) -> tuple of the same shapes. One explicit RK step of
size h from (t, y) with Butcher tableau (c, A, b) is

    k_i = f(t + c_i h, y + h Σ_{j<i} A_ij k_j),    i = 1..s
    y1  = y + h Σ_i b_i k_i

Fixed-grid solvers (`euler`, `midpoint`, `rk4`) cover each output interval [t_i, t_{i+1}] with
n = ceil((t_{i+1} - t_i) / step_size) equal steps, so they land exactly on every output time;
when the times are known at trace time n is a Python int and the loop has a static trip count
(`keras.ops.fori_loop`, a scan on JAX, reverse-differentiable there).

`dopri5` is Dormand–Prince 5(4) with the first-same-as-last property: the 7th stage is
f(t + h, y1), the next step's first stage. The embedded 4th-order solution ŷ1 = y + h Σ b̂_i k_i
gives the local error estimate err = y1 - ŷ1 = h Σ (b_i - b̂_i) k_i, measured by

    ratio = max over state tensors of RMS( err / (atol + rtol max(|y|, |y1|)) )

(the RMS norm for a single tensor; torchdiffeq's mixed norm for a tuple). A step is accepted when
ratio <= 1; the next step is h · clip(0.9 ratio^(-1/5), 0.2, 10), never shrinking after an
accepted step. The first step follows Hairer, Nørsett & Wanner (Solving ODEs I, II.4), as
torchdiffeq's `_select_initial_step`. Steps are clipped to land exactly on each output time
(Hairer's DOPRI5 rule: a step within 1% of the remaining interval is stretched to it). Each step
attempt costs 6 evaluations of f; the start costs 2 (f(t0, y0) and one for the step heuristic,
1 when a first step is given).

Step sizes and error ratios are computed from stop-gradient values: differentiating through the
solver differentiates the discrete solution on the step sizes it chose, as torchdiffeq does.
"""

import math
from dataclasses import dataclass

import keras
from keras import ops

__all__ = ["ButcherTableau", "EULER", "MIDPOINT", "RK4", "DOPRI5", "FixedGridSolver", "Dopri5Solver", "METHODS"]


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method.

    Args:
        name: the method's name.
        order: the order of the solution `b`.
        c: nodes c_i (c_1 = 0).
        a: rows of the strictly lower-triangular matrix A; row i holds A_i1..A_i,i-1.
        b: weights of the solution.
        b_error: weights b_i - b̂_i of the embedded error estimate (adaptive methods only).
    """

    name: str
    order: int
    c: tuple
    a: tuple
    b: tuple
    b_error: tuple = None

    @property
    def stages(self):
        return len(self.c)


EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
RK4 = ButcherTableau(
    "rk4", 4, c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6)
)
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DOPRI5 = ButcherTableau(
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
        _DOPRI5_B[:6],  # FSAL: the last stage is evaluated at y1
    ),
    b=_DOPRI5_B,
    b_error=tuple(b - bh for b, bh in zip(_DOPRI5_B, _DOPRI5_B_HAT)),
)


# --------------------------------------------------------------------------- tuple arithmetic


def _combine(base, h, coefficients, ks):
    """base + h Σ_j coefficients[j] ks[j] for every tensor of the state (zero terms skipped).

    `base` None means 0. The scalar weights h·c_j are formed once and shared by all tensors.
    """
    weights = [(ops.multiply(h, c), k) for c, k in zip(coefficients, ks) if c != 0.0]
    add_n = _add_n()
    out = []
    for m in range(len(ks[0])):
        terms = ([] if base is None else [base[m]]) + [ops.multiply(k[m], w) for w, k in weights]
        if add_n is not None and len(terms) > 2:
            out.append(add_n(terms))  # one pass over memory instead of a chain of adds
            continue
        acc = terms[0]
        for term in terms[1:]:
            acc = ops.add(acc, term)
        out.append(acc)
    return tuple(out)


def _add_n():
    """tf.math.add_n on the TensorFlow backend (XLA fuses the adds on JAX), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.math.add_n


def _mean_square_max(tensors):
    """max over tensors of mean(x²): the squared mixed RMS norm."""
    result = None
    for x in tensors:
        ms = ops.mean(ops.square(x))
        result = ms if result is None else ops.maximum(result, ms)
    return result


def _norm(tensors):
    return ops.sqrt(_mean_square_max(tensors))


def _where(cond, a, b):
    return tuple(ops.where(cond, x, y) for x, y in zip(a, b))


def _scalar(value, dtype):
    return ops.convert_to_tensor(value, dtype=dtype)


def _rk_step(tableau, func, t, h, y):
    """One explicit RK step; returns y1 (the tableau's solution)."""
    ks = []
    for c, a in zip(tableau.c, tableau.a):
        yi = _combine(y, h, a, ks) if ks else y
        ti = t if c == 0.0 else ops.add(t, ops.multiply(h, c))
        ks.append(tuple(func(ti, yi)))
    return _combine(y, h, tableau.b, ks)


# --------------------------------------------------------------------------- fixed grid


class FixedGridSolver:
    """Fixed-step explicit Runge–Kutta solver (`euler`, `midpoint`, `rk4`).

    Each output interval [t0, t1] is covered by n = ceil((t1 - t0) / step_size) steps of size
    (t1 - t0) / n; f is evaluated `stages` times per step.
    """

    adaptive = False

    def __init__(self, tableau):
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.stages = tableau.stages

    def __repr__(self):
        return f"FixedGridSolver({self.name!r}, order={self.order}, stages={self.stages})"

    def integrate_interval(self, func, y, t0, t1, step_size, dtype, static):
        """Integrate from t0 to t1; returns (y1, number of steps as Python int or int32 tensor)."""
        if static:
            ratio = (t1 - t0) / step_size
            n = max(1, math.ceil(ratio - 1e-9 * max(1.0, ratio)))
            dt = (t1 - t0) / n
            if n == 1:
                return _rk_step(self.tableau, func, _scalar(t0, dtype), _scalar(dt, dtype), y), 1
            dt_t = _scalar(dt, dtype)

            def body(k, state):
                t = ops.add(ops.multiply(ops.cast(k, dtype), dt), t0)
                return _rk_step(self.tableau, func, t, dt_t, state)

            return _fori_loop(0, n, body, tuple(y)), n
        eps = 1e-9 if dtype == "float64" else 1e-5
        ratio = ops.divide(ops.subtract(t1, t0), step_size)
        n = ops.maximum(ops.cast(ops.ceil(ops.multiply(ratio, 1.0 - eps)), "int32"), 1)
        dt = ops.divide(ops.subtract(t1, t0), ops.cast(n, dtype))

        def body(k, state):
            t = ops.add(ops.multiply(ops.cast(k, dtype), dt), t0)
            return _rk_step(self.tableau, func, t, dt, state)

        return _fori_loop(0, n, body, tuple(y)), n


# --------------------------------------------------------------------------- dopri5


class Dopri5Solver:
    """Adaptive Dormand–Prince 5(4) solver (see the module docstring for the controller)."""

    adaptive = True
    name = "dopri5"
    order = 5
    stages = 7
    safety, ifactor, dfactor = 0.9, 10.0, 0.2

    def __init__(self, tableau=DOPRI5):
        self.tableau = tableau

    def __repr__(self):
        return "Dopri5Solver('dopri5', order=5(4), FSAL)"

    def initial_step(self, func, t0, y, f0, rtol, atol):
        """Hairer's heuristic for the first step (one evaluation of f)."""
        y = tuple(ops.stop_gradient(x) for x in y)
        f0 = tuple(ops.stop_gradient(x) for x in f0)
        scale = tuple(ops.add(atol, ops.multiply(ops.abs(x), rtol)) for x in y)
        d0 = _norm([ops.divide(x, s) for x, s in zip(y, scale)])
        d1 = _norm([ops.divide(x, s) for x, s in zip(f0, scale)])
        small = ops.logical_or(ops.less(d0, 1e-5), ops.less(d1, 1e-5))
        h0 = ops.where(small, 1e-6, ops.divide(ops.multiply(d0, 0.01), ops.where(small, 1.0, d1)))
        y1 = tuple(ops.add(x, ops.multiply(f, h0)) for x, f in zip(y, f0))
        f1 = tuple(ops.stop_gradient(x) for x in func(ops.add(t0, h0), y1))
        d2 = ops.divide(_norm([ops.divide(ops.subtract(a, b), s) for a, b, s in zip(f1, f0, scale)]), h0)
        tiny = ops.logical_and(ops.less_equal(d1, 1e-15), ops.less_equal(d2, 1e-15))
        dmax = ops.where(tiny, 1.0, ops.maximum(d1, d2))
        h1 = ops.where(tiny, ops.maximum(1e-6, ops.multiply(h0, 1e-3)), ops.power(ops.divide(0.01, dmax), 1.0 / 5.0))
        return ops.minimum(ops.multiply(h0, 100.0), h1)

    def integrate_interval(self, func, y, k1, h, t0, t1, counters, rtol, atol, max_steps, dtype):
        """Adaptive steps from t0 to t1 (loop ends early once `max_steps` attempts were made).

        Args:
            y, k1: state at t0 and f(t0, y) (FSAL).
            h: proposed next step.
            counters: int32 (attempts, accepted, rejected) so far.

        Returns:
            (y, k1, h, counters, failed): failed is True where t1 was not reached.
        """
        tab = self.tableau
        t0 = _scalar(t0, dtype) if not _is_tensor(t0) else t0
        t1 = _scalar(t1, dtype) if not _is_tensor(t1) else t1
        one = ops.convert_to_tensor(1, "int32")

        def cond(t, h, y, k1, attempts, accepted, rejected):
            return ops.logical_and(ops.less(t, t1), ops.less(attempts, max_steps))

        def body(t, h, y, k1, attempts, accepted, rejected):
            remaining = ops.subtract(t1, t)
            clipped = ops.greater_equal(ops.multiply(h, 1.01), remaining)
            dt = ops.where(clipped, remaining, h)
            ks = [k1]
            y1 = None
            for i in range(1, tab.stages):
                yi = _combine(y, dt, tab.a[i], ks)
                if i == tab.stages - 1:
                    y1 = yi
                ks.append(tuple(func(ops.add(t, ops.multiply(dt, tab.c[i])), yi)))
            err = _combine(None, dt, tab.b_error, ks)
            ms = _mean_square_max(
                [
                    ops.divide(e, ops.add(atol, ops.multiply(ops.maximum(ops.abs(a), ops.abs(b)), rtol)))
                    for e, a, b in zip(
                        (ops.stop_gradient(x) for x in err),
                        (ops.stop_gradient(x) for x in y),
                        (ops.stop_gradient(x) for x in y1),
                    )
                ]
            )
            accept = ops.less_equal(ms, 1.0)  # ratio <= 1  <=>  ratio² <= 1
            # factor = clip(safety · ratio^(-1/5)) with ratio^(-1/5) = (ratio²)^(-1/10)
            factor = ops.clip(ops.multiply(ops.power(ms, -0.1), self.safety), self.dfactor, self.ifactor)
            factor = ops.where(accept, ops.maximum(factor, 1.0), ops.where(ops.isnan(ms), self.dfactor, factor))
            h_next = ops.multiply(ops.stop_gradient(dt), factor)
            h_next = ops.where(ops.logical_and(accept, clipped), ops.maximum(h_next, h), h_next)
            t_next = ops.where(accept, ops.where(clipped, t1, ops.add(t, dt)), t)
            accept_i = ops.cast(accept, "int32")
            return (
                t_next,
                h_next,
                _where(accept, y1, y),
                _where(accept, ks[-1], k1),
                ops.add(attempts, one),
                ops.add(accepted, accept_i),
                ops.add(rejected, ops.subtract(one, accept_i)),
            )

        attempts, accepted, rejected = counters
        t, h, y, k1, attempts, accepted, rejected = _while_loop(
            cond, body, (t0, h, tuple(y), tuple(k1), attempts, accepted, rejected)
        )
        return y, k1, h, (attempts, accepted, rejected), ops.less(t, t1)


def _while_loop(cond, body, loop_vars):
    """`keras.ops.while_loop`, but on TensorFlow one iteration at a time (parallel_iterations=1).

    With TF's default of 10, the adjoint's backward loop ran its (ψ, a) chain up to 10 steps
    ahead of the parameter-gradient convolutions, each step in flight holding its intermediates:
    memory grew with the number of steps (scripts/bench_ode.py). One at a time keeps the
    adjoint's memory flat at no measured cost in time.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.while_loop(cond, body, loop_vars, parallel_iterations=1)
    return ops.while_loop(cond, body, loop_vars)


def _fori_loop(lower, upper, body, init):
    """`keras.ops.fori_loop` (a scan on JAX when the bounds are Python ints), with `_while_loop`'s
    one-iteration-at-a-time on TensorFlow."""
    if keras.backend.backend() == "tensorflow":
        return _while_loop(lambda i, state: i < upper, lambda i, state: (i + 1, body(i, state)), (lower, init))[1]
    return ops.fori_loop(lower, upper, body, init)


def _is_tensor(x):
    return not isinstance(x, (int, float))


# --------------------------------------------------------------------------- driver


def integrate(solver, func, y0, times, *, static, dtype, rtol, atol, step_size, max_steps, jump=None):
    """Integrate dy/dt = func(t, y) through `times` with `solver`.

    Args:
        solver: a `FixedGridSolver` or `Dopri5Solver`.
        func: (t, tuple of tensors) -> tuple of tensors.
        y0: tuple of tensors at times[0].
        times: increasing output times, Python floats (`static`) or scalar tensors of `dtype`.
        step_size: the fixed step (fixed solvers) or the first step (dopri5; None -> heuristic).
        jump: optional `(i, state) -> state` applied on reaching times[i], 0 < i < len(times) - 1
            (the adjoint adds cotangents there). dopri5 re-evaluates f after a jump (1 evaluation).

    Returns:
        (states, stats, failed): the state at every output time (states[0] is y0), a dict of
        int32 scalars `nfe`, `steps`, `rejected`, and a bool scalar (None for fixed solvers) that
        is True when dopri5 stopped at `max_steps` before the last output time.
    """
    y = tuple(y0)
    states = [y]
    if not solver.adaptive:
        steps = 0
        for i in range(len(times) - 1):
            y, n = solver.integrate_interval(func, y, times[i], times[i + 1], step_size, dtype, static)
            steps = ops.add(steps, n) if _is_tensor(n) or _is_tensor(steps) else steps + n
            if jump is not None and i + 1 < len(times) - 1:
                y = tuple(jump(i + 1, y))
            states.append(y)
        steps = ops.cast(steps, "int32")
        stats = {"nfe": ops.multiply(steps, solver.stages), "steps": steps, "rejected": ops.zeros((), "int32")}
        return states, stats, None

    zero = ops.zeros((), "int32")
    counters = (zero, zero, zero)
    if len(times) == 1:
        return states, {"nfe": zero, "steps": zero, "rejected": zero}, None
    t0 = times[0] if _is_tensor(times[0]) else _scalar(times[0], dtype)
    k1 = tuple(func(t0, y))
    extra_nfe = 1
    if step_size is None:
        h = solver.initial_step(func, t0, y, k1, rtol, atol)
        extra_nfe += 1
    else:
        h = _scalar(step_size, dtype)
    failed = None
    for i in range(len(times) - 1):
        y, k1, h, counters, failed = solver.integrate_interval(
            func, y, k1, h, times[i], times[i + 1], counters, rtol, atol, max_steps, dtype
        )
        if jump is not None and i + 1 < len(times) - 1:
            y = tuple(jump(i + 1, y))
            ti = times[i + 1] if _is_tensor(times[i + 1]) else _scalar(times[i + 1], dtype)
            k1 = tuple(func(ti, y))
            extra_nfe += 1
        states.append(y)
    attempts, accepted, rejected = counters
    stats = {"nfe": ops.add(ops.multiply(attempts, solver.stages - 1), extra_nfe), "steps": accepted, "rejected": rejected}
    return states, stats, failed


METHODS = {
    "euler": FixedGridSolver(EULER),
    "midpoint": FixedGridSolver(MIDPOINT),
    "rk4": FixedGridSolver(RK4),
    "dopri5": Dopri5Solver(),
}
