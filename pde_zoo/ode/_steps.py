"""The steps a solve takes: `solve_steps` runs the solver of `odeint` eagerly, step by step, and
records every accepted step (its start time and size) beside the usual statistics.

`odeint` itself keeps its steps inside a compiled loop and returns only their counts; this
module repeats that loop in Python, with the same `RungeKutta` (`step`, `embedded_step`), the same
controller (`initial_step`, `error_ratio_squared`, `adapt`) and the same rules (a step within 1%
of the remaining interval is stretched to it; the first step from the controller's heuristic
unless `step_size` is given; equal fixed steps of ceil(interval / step_size)), so its counts
equal `odeint(..., return_stats=True)`'s for the same problem (tests hold them equal). It is
for analysis (`pde-zoo analyze` reads the step sizes of a continuous model's real solve): eager
op-by-op, no gradient, no adjoint.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from keras import ops

from pde_zoo.ode._odeint import _build, _checked_problem

__all__ = ["SolveSteps", "solve_steps"]


@dataclass
class SolveSteps:
    """The accepted steps of one solve.

    Attributes:
        method: the solver's name.
        times: (n,) float64 start time of each accepted step, in order.
        sizes: (n,) float64 size h of each accepted step (times[i] + sizes[i] is the next start,
            up to rounding; the last step of each output interval ends on its output time).
        interval: (n,) int index i of the output interval [t[i], t[i+1]] the step belongs to.
        ys: the states at the output times, stacked on axis 0 (as `odeint` returns them).
        stats: {"nfe", "steps", "rejected"} as Python ints (`odeint`'s `ODEStats` counts).
        rejected_sizes: sizes of the rejected attempts, in order.
    """

    method: str
    times: np.ndarray
    sizes: np.ndarray
    interval: np.ndarray
    ys: object
    stats: dict
    rejected_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))


def solve_steps(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, step_size=None, max_steps=10_000):
    """Solve dy/dt = func(t, y) as `odeint` does (same arguments and defaults) and return every
    accepted step.

    Args:
        func, y0, t, method, rtol, atol, step_size, max_steps: as `pde_zoo.ode.odeint`.

    Returns:
        `SolveSteps`.

    Raises:
        ValueError: the arguments `odeint` refuses.
        RuntimeError: an adaptive solve that needs more than `max_steps` attempts.
    """
    solver, y0, dtype, times, static = _checked_problem(method, y0, t, rtol, atol, step_size, max_steps)
    if not static:
        raise ValueError("solve_steps needs output times known now (a list, NumPy array or eager tensor).")
    _build(func, times, y0, dtype)
    f = lambda tt, y: (func(tt, y[0]),)
    record = (_fixed if not solver.adaptive else _adaptive)(solver, f, (y0,), times, dtype, rtol, atol, step_size, max_steps)
    starts, sizes, interval, states, counts, rejected_sizes = record
    return SolveSteps(
        method=solver.name, times=np.asarray(starts, dtype=np.float64), sizes=np.asarray(sizes, dtype=np.float64),
        interval=np.asarray(interval, dtype=int), ys=ops.stack([s[0] for s in states], axis=0), stats=counts,
        rejected_sizes=np.asarray(rejected_sizes, dtype=np.float64),
    )


def _fixed(solver, func, y, times, dtype, rtol, atol, step_size, max_steps):
    """Equal steps per output interval (`RungeKutta.fixed_interval`'s static rule)."""
    del rtol, atol, max_steps
    starts, sizes, interval, states = [], [], [], [y]
    for i in range(len(times) - 1):
        t0, t1 = times[i], times[i + 1]
        ratio = (t1 - t0) / step_size
        n = max(1, math.ceil(ratio - 1e-9 * max(1.0, ratio)))
        dt = (t1 - t0) / n
        dt_t = ops.convert_to_tensor(dt, dtype)
        for k in range(n):
            t = ops.convert_to_tensor(t0, dtype) if n == 1 else ops.add(ops.multiply(ops.cast(k, dtype), dt), t0)
            starts.append(float(ops.convert_to_numpy(t)))
            sizes.append(dt)
            interval.append(i)
            y = solver.step(func, t, dt_t, y)
        states.append(y)
    steps = len(sizes)
    return starts, sizes, interval, states, {"nfe": steps * solver.stages, "steps": steps, "rejected": 0}, []


def _adaptive(solver, func, y, times, dtype, rtol, atol, step_size, max_steps):
    """`RungeKutta.integrate` / `adaptive_interval` of an adaptive tableau, one attempt at a time."""
    controller, order = solver.controller, solver.order
    starts, sizes, interval, states, rejected_sizes = [], [], [], [y], []
    if len(times) == 1:
        return starts, sizes, interval, states, {"nfe": 0, "steps": 0, "rejected": 0}, rejected_sizes
    t0 = ops.convert_to_tensor(times[0], dtype)
    k1 = tuple(func(t0, y))
    extra_nfe = 1
    if step_size is None:
        h = controller.initial_step(func, t0, y, k1, rtol, atol, order)
        extra_nfe += 1
    else:
        h = ops.convert_to_tensor(step_size, dtype)
    attempts = accepted = rejected = 0
    for i in range(len(times) - 1):
        t, t1 = ops.convert_to_tensor(times[i], dtype), ops.convert_to_tensor(times[i + 1], dtype)
        while bool(ops.convert_to_numpy(ops.less(t, t1))):
            if attempts >= max_steps:
                raise RuntimeError(f"{solver.name} exceeded max_steps={max_steps} step attempts before reaching t={times[i + 1]}.")
            remaining = ops.subtract(t1, t)
            clipped = ops.greater_equal(ops.multiply(h, 1.01), remaining)
            dt = ops.where(clipped, remaining, h)
            y1, k_next, err = solver.embedded_step(func, t, dt, y, k1)
            accept, h_next = controller.adapt(controller.error_ratio_squared(err, y, y1, rtol, atol), dt, h, clipped, order)
            attempts += 1
            if bool(ops.convert_to_numpy(accept)):
                starts.append(float(ops.convert_to_numpy(t)))
                sizes.append(float(ops.convert_to_numpy(dt)))
                interval.append(i)
                t = t1 if bool(ops.convert_to_numpy(clipped)) else ops.add(t, dt)
                y, k1 = y1, k_next
                accepted += 1
            else:
                rejected_sizes.append(float(ops.convert_to_numpy(dt)))
                rejected += 1
            h = h_next
        states.append(y)
    nfe = attempts * solver.evaluations_per_attempt + extra_nfe
    return starts, sizes, interval, states, {"nfe": nfe, "steps": accepted, "rejected": rejected}, rejected_sizes
