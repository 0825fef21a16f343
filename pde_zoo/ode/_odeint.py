"""`odeint`: solve dy/dt = f(t, y) at given output times, with autodiff or adjoint gradients.

This module checks the arguments and chooses how the solve runs; the method is
`_rk.RungeKutta`, the adjoint `_adjoint`, the statistics `_stats`, the compiled eager path
`_compile` and the backend specifics `_backend`.

- Traced (inside `tf.function`, `jax.jit`, `jax.grad`, a Keras train step): the solver's ops
  join the caller's graph; failures are graph checks (`_backend.check`).
- Eager (values known now, no stateless scope): the solve runs as a compiled function cached
  per signature (`_compile`), with its own gradient on TensorFlow (the adjoint's backward solve
  compiled too); a callable that cannot be traced runs op by op.
"""

import keras
import numpy as np
from keras import ops

from pde_zoo.ode import _backend, _compile
from pde_zoo.ode._adjoint import backward_solve, parameter_scope, with_custom_gradient
from pde_zoo.ode._rk import METHODS
from pde_zoo.ode._stats import _LOG, KEYS, ODEStats

__all__ = ["odeint"]


def odeint(
    func,
    y0,
    t,
    method="dopri5",
    rtol=1e-6,
    atol=1e-8,
    step_size=None,
    adjoint=False,
    adjoint_params=None,
    max_steps=10_000,
    return_stats=False,
    compile=True,  # noqa: A002  (the option's natural name; the builtin is not used here)
):
    """Solve dy/dt = func(t, y), y(t[0]) = y0, and return y at every time in `t`.

    Methods (`METHODS`): `euler`, `midpoint`, `rk4` (classic 4th order) on a fixed grid of
    `step_size`; adaptive `dopri5` (Dormand–Prince 5(4)), `bosh3` (Bogacki–Shampine 3(2)) and
    `adaptive_heun` (Heun–Euler 2(1)); see `pde_zoo.ode._rk` and `_tableaus`.

    Gradients: with `adjoint=False`, autodiff through the solver's operations (TensorFlow: through
    its while loops; JAX: the fixed-step methods with times known at trace time, whose loops are
    scans). With `adjoint=True`, the adjoint method (`pde_zoo.ode._adjoint`): memory independent
    of the number of steps, gradients for `y0` and for the parameters `adjoint_params`.

    Eager calls (TensorFlow eager, or JAX with concrete values) run the solver compiled
    (`tf.function`, by XLA for a small state when no tape records; `jax.jit`), cached per func,
    method, options, times, shapes and dtypes (`pde_zoo.ode._compile` says what a func's key
    holds and what runs); the first call of a signature traces and compiles. Inside a traced
    function the solver's ops join that trace.

    Args:
        func: callable `(t, y) -> dy/dt` written with `keras.ops`; `t` is a scalar tensor of y's
            dtype, the result has y's shape. A Keras layer works (`func(t, y)`).
        y0: the initial state, a floating tensor of any shape (e.g. NHWC images).
        t: 1-D strictly increasing output times (list, NumPy array or tensor); t[0] is the
            initial time. Values known at trace time (Python/NumPy/eager tensors) give fixed-step
            loops a static trip count.
        method: a key of `METHODS`.
        rtol, atol: relative and absolute tolerances of the adaptive methods (ignored by fixed
            ones).
        step_size: the step of a fixed method (required there); for an adaptive one, optional
            first step (default: Hairer's heuristic).
        adjoint: use the adjoint method for gradients.
        adjoint_params: Keras Variables θ that `func` reads, for the adjoint (and, on JAX, for
            the gradient guard of adaptive methods); default `func.trainable_variables` when
            `func` has it, else none (an unbuilt Keras layer is first built by one call, not
            counted in `nfe`). Gradients reach only these variables; `func` runs inside a
            `keras.StatelessScope` holding their values, so variable updates inside `func` are
            dropped. The adjoint's error norm includes a_θ as one flattened tensor.
        max_steps: most step attempts (accepted + rejected) of an adaptive solve (the forward
            and each adjoint backward solve separately).
        return_stats: also return the statistics (`ODEStats`).
        compile: run eager calls compiled (default). False runs them op by op (debugging, or a
            func with Python side effects per evaluation); no effect inside a trace.

    Returns:
        Tensor of shape `(len(t),) + y0.shape`, y at every output time (torchdiffeq's layout);
        with `return_stats`, `(ys, stats)`: `stats` maps `nfe` (evaluations of func), `steps`
        (accepted steps) and `rejected` (0 for fixed methods) to int32 scalar tensors, and
        collects the adjoint backward solves of gradients through `ys` in `stats.backward`
        (`pde_zoo.ode._stats`). A forward + backward pass costs `stats["nfe"]` evaluations of
        f plus `stats.nfe_backward` evaluations of f each with a vector-Jacobian product.

    Raises:
        ValueError: unknown `method`; `t` not 1-D and strictly increasing; non-positive `rtol`,
            `atol`, `step_size` or `max_steps`; a fixed method without `step_size`; eagerly, a
            non-finite (NaN or Inf) `y0` or parameter (`adjoint_params`, or the trainable
            variables of a layer `func`). Inside a trace an adaptive solve refuses a non-finite
            `y0` or `adjoint_params` value before its first step (TensorFlow:
            `InvalidArgumentError`; `jax.jit`: a host callback raises).
        RuntimeError: an adaptive method exceeded `max_steps` (eagerly; in a graph a check op
            raises `InvalidArgumentError`, under `jax.jit` a host callback raises, with the same
            message).
        NotImplementedError: reverse-mode autodiff on JAX through an adaptive method (or a fixed
            method with traced times) with `adjoint=False`; use `adjoint=True`.
    """
    solver, y0, dtype, times, static = _checked_problem(method, y0, t, rtol, atol, step_size, max_steps)
    options = dict(
        static=static, dtype=dtype, rtol=float(rtol), atol=float(atol),
        step_size=None if step_size is None else float(step_size), max_steps=int(max_steps),
    )
    jax_guard = keras.backend.backend() == "jax" and not adjoint and (solver.adaptive or not static)
    eager = static and _backend.is_concrete(y0) and not _backend.in_stateless_scope()
    params = []
    if adjoint or jax_guard or eager:
        _build(func, times, y0, dtype)  # an eager call makes the variables before any trace
        params = _default_params(func, adjoint_params)
    solve = _Solve(solver, func, times, options, adjoint)
    result = None
    if eager:
        _refuse_non_finite(y0, params)
        if compile:
            result = _compile.run(solve, y0, params if adjoint else [])
    if result is None:
        guard = solver.adaptive and not eager
        if adjoint or jax_guard:
            values = [ops.convert_to_tensor(p.value) for p in params]  # read outside: the tape sees it
            result = with_custom_gradient(
                lambda y, *v: solve.forward(y, params, v, guard=guard), lambda ys, g, *v: solve.backward(ys, g, params, v),
                y0, values,
            )
        else:
            result = solve.forward(y0, [], [], guard=guard)
    ys, nfe, steps, rejected = result
    if not return_stats:
        return ys
    stats = ODEStats(zip(KEYS, (nfe, steps, rejected)), method=solver.name)
    solve.reporter.attach(stats)
    return ys, stats


# --------------------------------------------------------------------------- validation


def _checked_problem(method, y0, t, rtol, atol, step_size, max_steps):
    """(solver, y0 as a float tensor, its dtype, times, whether the times are static) after the
    checks `odeint` and `solve_steps` share; ValueError naming the bad argument."""
    solver = _get_solver(method)
    _check_positive(rtol=rtol, atol=atol, max_steps=max_steps)
    if step_size is not None:
        _check_positive(step_size=step_size)
    elif not solver.adaptive:
        raise ValueError(
            f"method={method!r} is a fixed-step method and needs `step_size`: pass e.g. "
            f"step_size=0.1 (each output interval is covered by ceil(interval / step_size) equal "
            f"steps), or use an adaptive method such as 'dopri5'. Received: step_size=None"
        )
    y0 = ops.convert_to_tensor(y0)
    dtype = keras.backend.standardize_dtype(y0.dtype)
    if "float" not in dtype:
        y0 = ops.cast(y0, keras.backend.floatx())
        dtype = keras.backend.floatx()
    times, static = _prepare_times(t, dtype)
    return solver, y0, dtype, times, static


def _get_solver(method):
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"Unknown ODE method {method!r}; expected one of {sorted(METHODS)}. Received: method={method!r}")
    return METHODS[method]


def _check_positive(**values):
    for name, value in values.items():
        try:
            ok = bool(np.isfinite(float(value)) and float(value) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")


def _concrete(x):
    """x as a float64 NumPy array when its values are known now, else None."""
    if isinstance(x, (list, tuple, np.ndarray, float, int, np.number)):
        try:
            return np.asarray(x, dtype="float64")
        except (TypeError, ValueError):
            pass
    try:
        return np.asarray(ops.convert_to_numpy(x), dtype="float64")
    except Exception:  # noqa: BLE001  symbolic tensor or tracer
        return None


def _prepare_times(t, dtype):
    values = _concrete(t)
    if values is not None:
        if values.ndim != 1 or values.size < 1:
            raise ValueError(f"`t` must be a 1-D array of output times. Received: t with shape {values.shape}")
        if not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0):
            raise ValueError(f"`t` must be finite and strictly increasing (t[0] is the initial time). Received: t={values}")
        return [float(v) for v in values], True
    t = ops.cast(ops.convert_to_tensor(t), dtype)
    if len(t.shape) != 1 or t.shape[0] is None or t.shape[0] < 1:
        raise ValueError(f"`t` must be a 1-D array with a static length. Received: t with shape {t.shape}")
    return [t[i] for i in range(t.shape[0])], False


def _build(func, times, y0, dtype):
    """Build an unbuilt Keras layer `func` by one call (not counted in the statistics)."""
    if isinstance(func, keras.layers.Layer) and not func.built:
        t0 = times[0] if not isinstance(times[0], float) else ops.convert_to_tensor(times[0], dtype)
        func(t0, y0)


def _default_params(func, adjoint_params):
    """`adjoint_params` checked, else the trainable variables of `func` (none for a plain callable)."""
    if adjoint_params is not None:
        params = list(adjoint_params)
        for p in params:
            if not isinstance(p, keras.Variable):
                raise ValueError(f"`adjoint_params` must be Keras Variables. Received: {p!r}")
        return params
    return list(getattr(func, "trainable_variables", ()))


def _refuse_non_finite(y0, params):
    """Eagerly: ValueError for a NaN or Inf in y0 or in a parameter's value."""
    values = np.asarray(ops.convert_to_numpy(y0))
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ValueError(
            f"odeint: the initial state y0 is not finite ({bad} NaN or Inf of its {values.size} values); "
            f"no solver step can be taken from it. Received: y0 with shape {tuple(values.shape)}"
        )
    for p in params:
        value = np.asarray(ops.convert_to_numpy(p.value))
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"odeint: the parameter {getattr(p, 'path', p.name)!r} of func is not finite (NaN or Inf in "
                f"{int(value.size - np.count_nonzero(np.isfinite(value)))} of its {value.size} values). "
                f"Received: {p.name} with shape {tuple(value.shape)}"
            )


def _failure_message(method, max_steps, context):
    where = "" if context == "forward" else " in the adjoint backward solve"
    return (
        f"{method} exceeded max_steps={max_steps} step attempts{where} before reaching the last "
        f"output time; raise max_steps or loosen rtol/atol (the problem may be stiff, or the "
        f"solution may blow up or be non-finite)."
    )


_NON_FINITE = "odeint: the initial state y0 or a parameter is not finite (NaN or Inf); refused before the first step."


# --------------------------------------------------------------------------- the solve


class _Solve:
    """One odeint problem (solver, field, times, options): its forward and adjoint backward
    solves, checked in place (`forward`, `backward`) or returning their failure flags for a
    compiled caller to check (`forward_core`, `backward_core`)."""

    def __init__(self, solver, func, times, options, adjoint):
        self.solver, self.func, self.times, self.options, self.adjoint = solver, func, times, options, adjoint
        self.reporter = _LOG.reporter(solver.name)

    def forward_core(self, y0, params, values, scope=parameter_scope, max_steps=None):
        """(ys, counts, failed) of the forward solve; `func` reads `values` for `params` (in
        `scope(params, values)`, entered when there are params or `scope` is not the default)."""
        field = lambda tt, y: (self.func(tt, y[0]),)  # noqa: E731
        options = self.options if max_steps is None else {**self.options, "max_steps": max_steps}
        if params or scope is not parameter_scope:
            with scope(params, values):
                states, counts, failed = self.solver.integrate(field, (y0,), self.times, **options)
        else:
            states, counts, failed = self.solver.integrate(field, (y0,), self.times, **options)
        return ops.stack([s[0] for s in states], axis=0), counts, failed

    def forward(self, y0, params, values, guard):
        """(ys, nfe, steps, rejected), refusing (`_backend.check`) a non-finite start when
        `guard` (traced adaptive solves) and a solve cut at max_steps."""
        max_steps = finite = None
        if guard:
            finite = _backend.all_finite([y0, *values])
            (y0,) = _backend.check(finite, _NON_FINITE, (y0,), ValueError)
            max_steps = ops.where(finite, self.options["max_steps"], 0)  # no attempt from a bad start
        ys, counts, failed = self.forward_core(y0, params, values, max_steps=max_steps)
        if failed is not None:
            finished = ops.logical_not(failed) if finite is None else ops.logical_or(ops.logical_not(failed), ops.logical_not(finite))
            (ys,) = _backend.check(finished, self._message("forward"), (ys,))
        return ys, counts["nfe"], counts["steps"], counts["rejected"]

    def backward_core(self, ys, g, params, values):
        return backward_solve(self.solver, self.func, params, values, ys, g, self.times, self.options)

    def backward(self, ys, g, params, values):
        """∂L/∂(y0, *values) by the adjoint, checked and reported (`_stats`)."""
        if not self.adjoint:
            raise NotImplementedError(
                f"Reverse-mode autodiff through odeint(method={self.solver.name!r}) is not "
                f"available on the JAX backend with adjoint=False (its loop has a dynamic trip "
                f"count). Use adjoint=True, or a fixed-step method with times given as "
                f"Python/NumPy values."
            )
        grads, counts, failed = self.backward_core(ys, g, params, values)
        if counts is None:
            return grads
        if failed is not None:
            grads = _backend.check(ops.logical_not(failed), self._message("backward"), grads)
        _backend.report(self.reporter, counts["nfe"], counts["steps"], counts["rejected"])
        return grads

    def _message(self, context):
        return _failure_message(self.solver.name, self.options["max_steps"], context)
