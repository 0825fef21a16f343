"""One explicit Runge–Kutta solver for dy/dt = f(t, y), fixed-step or adaptive by its tableau,
written with `keras.ops`; and the registry `METHODS` of the methods made from the tableaus.

A state is a tuple of tensors (the public `odeint` passes a 1-tuple; the adjoint passes
(y, a, a_θ)); a vector field maps (t, state) -> tuple of the same shapes.

Fixed step (a tableau without embedded weights): each output interval [t_i, t_{i+1}] is covered
by n = ceil((t_{i+1} - t_i) / step_size) equal steps, so the solve lands exactly on every output
time; when the times are known at trace time n is a Python int and the loop has a static trip
count (a scan on JAX, reverse-differentiable there). Each step costs s evaluations of f.

Adaptive (embedded weights): steps of the size the controller (`_controller.IController`)
proposes from the error estimate err = h Σ (b_i - b̂_i) k_i, clipped to land exactly on each
output time (Hairer's DOPRI5 rule: a step within 1% of the remaining interval is stretched to
it). f(t, y) is carried from step to step; an attempt costs s - 1 evaluations for an FSAL
tableau (its last stage is the next step's first) and s otherwise (f(t + h, y1) is evaluated
after the stages). The start costs 1 + 1 (f(t0, y0) and the first-step heuristic; 1 when a first
step is given).
"""

import math

from keras import ops

from pde_zoo.ode import _backend
from pde_zoo.ode._controller import IController
from pde_zoo.ode._tableaus import TABLEAUS, ButcherTableau

__all__ = ["METHODS", "RungeKutta", "register_tableau"]


# --------------------------------------------------------------------------- tuple arithmetic


def _combine(base, h, coefficients, ks):
    """base + h Σ_j coefficients[j] ks[j] for every tensor of the state (zero terms skipped).

    `base` None means 0. The scalar weights h·c_j are formed once and shared by all tensors.
    """
    weights = [(ops.multiply(h, c), k) for c, k in zip(coefficients, ks) if c != 0.0]
    add_n = _backend.add_n()
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


def _where(cond, a, b):
    return tuple(ops.where(cond, x, y) for x, y in zip(a, b))


def _scalar(value, dtype):
    return ops.convert_to_tensor(value, dtype=dtype)


def _is_tensor(x):
    return not isinstance(x, (int, float))


def _as_time(t, dtype):
    return t if _is_tensor(t) else _scalar(t, dtype)


class RungeKutta:
    """An explicit Runge–Kutta method given by a validated `ButcherTableau`.

    Args:
        tableau: the method's coefficients; adaptive when it has embedded weights.
        controller: the step-size controller of an adaptive method (default `IController()`).

    Attributes: `name`, `order`, `stages`, `adaptive`, `fsal`, `evaluations_per_attempt`.
    """

    def __init__(self, tableau, controller=None):
        self.tableau = tableau.validate()
        self.controller = (controller or IController()) if tableau.adaptive else None
        self.name, self.order, self.stages = tableau.name, tableau.order, tableau.stages
        self.adaptive, self.fsal = tableau.adaptive, tableau.adaptive and tableau.fsal
        self.b_error = tableau.b_error
        self.evaluations_per_attempt = self.stages - 1 if self.fsal else self.stages

    def __repr__(self):
        kind = f"adaptive {self.order}({self.order - 1}){', FSAL' if self.fsal else ''}" if self.adaptive else f"fixed step, order {self.order}"
        return f"RungeKutta({self.name!r}, {kind}, {self.stages} stages)"

    # ------------------------------------------------------------------- one step

    def step(self, func, t, h, y):
        """y1 = y + h Σ b_i k_i with every stage evaluated (the fixed-step method)."""
        tab, ks = self.tableau, []
        for c, a in zip(tab.c, tab.a):
            yi = _combine(y, h, a, ks) if ks else y
            ti = t if c == 0.0 else ops.add(t, ops.multiply(h, c))
            ks.append(tuple(func(ti, yi)))
        return _combine(y, h, tab.b, ks)

    def embedded_step(self, func, t, h, y, k1):
        """(y1, f(t + h, y1), err) from k1 = f(t, y): the stages after the first, then
        f(t + h, y1) (FSAL: the last stage already is), and err = h Σ (b_i - b̂_i) k_i."""
        tab, ks = self.tableau, [k1]
        y1 = None
        for i in range(1, tab.stages):
            yi = _combine(y, h, tab.a[i], ks)
            if self.fsal and i == tab.stages - 1:
                y1 = yi
            ks.append(tuple(func(ops.add(t, ops.multiply(h, tab.c[i])), yi)))
        if self.fsal:
            k_next = ks[-1]
        else:
            y1 = _combine(y, h, tab.b, ks)
            k_next = tuple(func(ops.add(t, h), y1))
        return y1, k_next, _combine(None, h, self.b_error, ks)

    # ------------------------------------------------------------------- one output interval

    def fixed_interval(self, func, y, t0, t1, step_size, dtype, static):
        """Equal steps from t0 to t1; returns (y1, number of steps as Python int or int32 tensor)."""
        if static:
            ratio = (t1 - t0) / step_size
            n = max(1, math.ceil(ratio - 1e-9 * max(1.0, ratio)))
            dt = (t1 - t0) / n
            if n == 1:
                return self.step(func, _scalar(t0, dtype), _scalar(dt, dtype), y), 1
            dt_t = _scalar(dt, dtype)
        else:
            eps = 1e-9 if dtype == "float64" else 1e-5
            ratio = ops.divide(ops.subtract(t1, t0), step_size)
            n = ops.maximum(ops.cast(ops.ceil(ops.multiply(ratio, 1.0 - eps)), "int32"), 1)
            dt = dt_t = ops.divide(ops.subtract(t1, t0), ops.cast(n, dtype))

        def body(k, state):
            t = ops.add(ops.multiply(ops.cast(k, dtype), dt), t0)
            return self.step(func, t, dt_t, state)

        return _backend.fori_loop(0, n, body, tuple(y)), n

    def adaptive_interval(self, func, y, k1, h, t0, t1, counters, rtol, atol, max_steps):
        """Adaptive steps from t0 to t1 (the loop ends early once `max_steps` attempts were made).

        Args:
            y, k1: state at t0 and f(t0, y).
            h: proposed next step.
            counters: int32 (attempts, accepted, rejected) so far.

        Returns:
            (y, k1, h, counters, failed): failed is True where t1 was not reached.
        """
        controller, order = self.controller, self.order
        one = ops.convert_to_tensor(1, "int32")

        def cond(t, h, y, k1, attempts, accepted, rejected):
            return ops.logical_and(ops.less(t, t1), ops.less(attempts, max_steps))

        def body(t, h, y, k1, attempts, accepted, rejected):
            remaining = ops.subtract(t1, t)
            clipped = ops.greater_equal(ops.multiply(h, 1.01), remaining)
            dt = ops.where(clipped, remaining, h)
            y1, k_next, err = self.embedded_step(func, t, dt, y, k1)
            accept, h_next = controller.adapt(controller.error_ratio_squared(err, y, y1, rtol, atol), dt, h, clipped, order)
            t_next = ops.where(accept, ops.where(clipped, t1, ops.add(t, dt)), t)
            accept_i = ops.cast(accept, "int32")
            return (
                t_next,
                h_next,
                _where(accept, y1, y),
                _where(accept, k_next, k1),
                ops.add(attempts, one),
                ops.add(accepted, accept_i),
                ops.add(rejected, ops.subtract(one, accept_i)),
            )

        attempts, accepted, rejected = counters
        t, h, y, k1, attempts, accepted, rejected = _backend.while_loop(
            cond, body, (t0, h, tuple(y), tuple(k1), attempts, accepted, rejected)
        )
        return y, k1, h, (attempts, accepted, rejected), ops.less(t, t1)

    # ------------------------------------------------------------------- output times

    def integrate(self, func, y0, times, *, static, dtype, rtol, atol, step_size, max_steps, jump=None):
        """Integrate dy/dt = func(t, y) through `times`.

        Args:
            func: (t, tuple of tensors) -> tuple of tensors.
            y0: tuple of tensors at times[0].
            times: increasing output times, Python floats (`static`) or scalar tensors of `dtype`.
            step_size: the fixed step (fixed methods) or the first step (adaptive; None ->
                the controller's heuristic).
            max_steps: most step attempts of an adaptive solve (int, or an int32 scalar).
            jump: optional `(i, state) -> state` applied on reaching times[i], 0 < i < len(times) - 1
                (the adjoint adds cotangents there). An adaptive solve re-evaluates f after a
                jump (1 evaluation).

        Returns:
            (states, counts, failed): the state at every output time (states[0] is y0), a dict
            of int32 scalars `nfe`, `steps`, `rejected`, and a bool scalar (None for fixed
            methods) that is True when an adaptive solve stopped at `max_steps` first.
        """
        y = tuple(y0)
        states = [y]
        if not self.adaptive:
            steps = 0
            for i in range(len(times) - 1):
                y, n = self.fixed_interval(func, y, times[i], times[i + 1], step_size, dtype, static)
                steps = ops.add(steps, n) if _is_tensor(n) or _is_tensor(steps) else steps + n
                if jump is not None and i + 1 < len(times) - 1:
                    y = tuple(jump(i + 1, y))
                states.append(y)
            steps = ops.cast(steps, "int32")
            counts = {"nfe": ops.multiply(steps, self.stages), "steps": steps, "rejected": ops.zeros((), "int32")}
            return states, counts, None

        zero = ops.zeros((), "int32")
        if len(times) == 1:
            return states, {"nfe": zero, "steps": zero, "rejected": zero}, None
        t0 = _as_time(times[0], dtype)
        k1 = tuple(func(t0, y))
        extra_nfe = 1
        if step_size is None:
            h = self.controller.initial_step(func, t0, y, k1, rtol, atol, self.order)
            extra_nfe += 1
        else:
            h = _scalar(step_size, dtype)
        counters, failed = (zero, zero, zero), None
        for i in range(len(times) - 1):
            y, k1, h, counters, failed = self.adaptive_interval(
                func, y, k1, h, _as_time(times[i], dtype), _as_time(times[i + 1], dtype), counters, rtol, atol, max_steps
            )
            if jump is not None and i + 1 < len(times) - 1:
                y = tuple(jump(i + 1, y))
                k1 = tuple(func(_as_time(times[i + 1], dtype), y))
                extra_nfe += 1
            states.append(y)
        attempts, accepted, rejected = counters
        nfe = ops.add(ops.multiply(attempts, self.evaluations_per_attempt), extra_nfe)
        return states, {"nfe": nfe, "steps": accepted, "rejected": rejected}, failed


# --------------------------------------------------------------------------- registry

METHODS = {}


def register_tableau(tableau, controller=None):
    """Validate `tableau` and add `RungeKutta(tableau, controller)` to `METHODS` under its name.

    Args:
        tableau: a `ButcherTableau`.
        controller: step-size controller of an adaptive tableau (default `IController()`).

    Returns:
        The new `RungeKutta` solver.

    Raises:
        TypeError: `tableau` is not a `ButcherTableau`.
        ValueError: the tableau breaks a consistency rule (`ButcherTableau.validate`), or its
            name is taken.
    """
    if not isinstance(tableau, ButcherTableau):
        raise TypeError(f"register_tableau expects a ButcherTableau. Received: {type(tableau).__name__}")
    solver = RungeKutta(tableau, controller)
    if tableau.name in METHODS:
        raise ValueError(f"An ODE method named {tableau.name!r} is registered already. Received: tableau.name={tableau.name!r}")
    METHODS[tableau.name] = solver
    return solver


for _tableau in TABLEAUS:
    register_tableau(_tableau)
del _tableau
