"""`odeint`: solve dy/dt = f(t, y) at given output times, with autodiff or adjoint gradients.

Adjoint method (Chen et al. 2018; thesis eq 43-44). For a loss L(y(t_0), ..., y(t_N)) let
a(t) = ∂L/∂y(t). Between output times

    dy/dt   = f(t, y; θ)
    da/dt   = -aᵀ ∂f/∂y
    da_θ/dt = -aᵀ ∂f/∂θ

solved backwards from t_N (y = y(t_N), a = ∂L/∂y(t_N), a_θ = 0) to t_0, adding ∂L/∂y(t_i) to a
at each output time t_i (and putting back the forward value y(t_i)); then ∂L/∂y0 = a(t_0) and
∂L/∂θ = a_θ(t_0). The backward system runs in reversed time s = -t (so ds > 0) with the same
solver and tolerances. Only the states at the output times are kept from the forward pass.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from pde_zoo.ode import solvers as _solvers
from pde_zoo.ode.solvers import METHODS

__all__ = ["odeint", "last_backward_stats", "record_backward_stats"]

_LAST_BACKWARD_STATS = {}
_RECORDERS = []  # the lists of the active `record_backward_stats` blocks


def last_backward_stats():
    """Statistics of the most recent adjoint backward pass that ran with concrete values.

    Recorded when the backward pass runs eagerly (TensorFlow eager `GradientTape`) and on JAX
    always (also under `jit`, through a host callback). A backward pass inside a `tf.function`
    (e.g. `model.fit` on TensorFlow) is not recorded.

    Returns:
        dict with Python ints `nfe` (evaluations of the augmented field, each one evaluation of f
        plus one vector-Jacobian product), `steps`, `rejected` and the str `method`; None when no
        backward pass has been recorded in this process.
    """
    return dict(_LAST_BACKWARD_STATS) if _LAST_BACKWARD_STATS else None


@contextlib.contextmanager
def record_backward_stats():
    """Collect every adjoint backward pass recorded inside the block (recorded under the same
    conditions as `last_backward_stats`): yields a list that receives one stats dict per
    backward solve, e.g. one per `ODEBlock` segment, so a whole gradient's NFE is their sum.
    (On JAX the host callbacks of a jitted step arrive asynchronously: block on the step's
    results before leaving the block.)
    """
    records = []
    _RECORDERS.append(records)
    try:
        yield records
    finally:
        _RECORDERS.remove(records)


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
):
    """Solve dy/dt = func(t, y), y(t[0]) = y0, and return y at every time in `t`.

    Methods (`METHODS`): `euler`, `midpoint`, `rk4` (classic 4th order) on a fixed grid of
    `step_size`, and adaptive `dopri5` (Dormand–Prince 5(4)); see `pde_zoo.ode.solvers`.

    Gradients: with `adjoint=False`, autodiff through the solver's operations (TensorFlow: through
    its while loops; JAX: the fixed-step methods with times known at trace time, whose loops are
    scans). With `adjoint=True`, the adjoint method (module docstring): memory independent of the
    number of steps, gradients for `y0` and for the parameters `adjoint_params`.

    Reading the cost: `return_stats=True` gives the forward counts (tensors, in any mode); the
    adjoint backward pass's counts are read with `pde_zoo.ode.last_backward_stats()` after the
    gradient was computed eagerly (or on JAX). A forward+backward step costs
    `stats["nfe"]` evaluations of f plus `last_backward_stats()["nfe"]` evaluations of f each
    with a vector-Jacobian product.

    Args:
        func: callable `(t, y) -> dy/dt` written with `keras.ops`; `t` is a scalar tensor of y's
            dtype, the result has y's shape. A Keras layer works (`func(t, y)`).
        y0: the initial state, a floating tensor of any shape (e.g. NHWC images).
        t: 1-D strictly increasing output times (list, NumPy array or tensor); t[0] is the
            initial time. Values known at trace time (Python/NumPy/eager tensors) give fixed-step
            loops a static trip count.
        method: a key of `METHODS`.
        rtol, atol: relative and absolute tolerances of `dopri5` (ignored by fixed methods).
        step_size: the step of a fixed method (required there); for `dopri5`, optional first
            step (default: Hairer's heuristic).
        adjoint: use the adjoint method for gradients.
        adjoint_params: Keras Variables θ that `func` reads, for the adjoint (and, on JAX, for
            the dopri5 gradient guard); default `func.trainable_variables` when `func` has it,
            else none (an unbuilt Keras layer is first built by one call, not counted in
            `nfe`). Gradients reach only these variables; `func` runs inside a
            `keras.StatelessScope` holding their values, so variable updates inside `func` are
            dropped. The adjoint's error norm includes a_θ as one flattened tensor.
        max_steps: most `dopri5` step attempts (accepted + rejected) in one solve (the forward
            and each adjoint backward solve separately).
        return_stats: also return the forward statistics.

    Returns:
        Tensor of shape `(len(t),) + y0.shape`, y at every output time (torchdiffeq's layout);
        with `return_stats`, `(ys, stats)` where stats holds int32 scalar tensors `nfe`
        (evaluations of func), `steps` (accepted steps) and `rejected` (0 for fixed methods).

    Raises:
        ValueError: unknown `method`; `t` not 1-D and strictly increasing; non-positive `rtol`,
            `atol`, `step_size` or `max_steps`; a fixed method without `step_size`.
        RuntimeError: `dopri5` exceeded `max_steps` (eagerly; in a graph a check op raises
            `InvalidArgumentError`, under `jax.jit` a host callback raises, with the same
            message).
        NotImplementedError: reverse-mode autodiff on JAX through `dopri5` (or a fixed method
            with traced times) with `adjoint=False`; use `adjoint=True`.
    """
    solver = _get_solver(method)
    _check_positive(rtol=rtol, atol=atol, max_steps=max_steps)
    if step_size is not None:
        _check_positive(step_size=step_size)
    elif not solver.adaptive:
        raise ValueError(
            f"method={method!r} is a fixed-step method and needs `step_size`: pass e.g. "
            f"step_size=0.1 (each output interval is covered by ceil(interval / step_size) equal "
            f"steps), or use method='dopri5'. Received: step_size=None"
        )
    y0 = ops.convert_to_tensor(y0)
    dtype = keras.backend.standardize_dtype(y0.dtype)
    if "float" not in dtype:
        y0 = ops.cast(y0, keras.backend.floatx())
        dtype = keras.backend.floatx()
    times, static = _prepare_times(t, dtype)
    options = dict(
        solver=solver, static=static, dtype=dtype, rtol=float(rtol), atol=float(atol),
        step_size=None if step_size is None else float(step_size), max_steps=int(max_steps),
    )
    backend = keras.backend.backend()
    jax_guard = backend == "jax" and not adjoint and (solver.adaptive or not static)
    if adjoint or jax_guard:
        params = _default_params(func, adjoint_params, times, y0, dtype)
        ys, stats = _solve_with_custom_gradient(func, y0, times, params, options, adjoint=adjoint)
    else:
        ys, stats = _solve(lambda tt, y: (func(tt, y[0]),), y0, times, options)
    return (ys, stats) if return_stats else ys


# --------------------------------------------------------------------------- validation


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
    except Exception:  # symbolic tensor or tracer
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


def _default_params(func, adjoint_params, times, y0, dtype):
    if adjoint_params is not None:
        params = list(adjoint_params)
        for p in params:
            if not isinstance(p, keras.Variable):
                raise ValueError(f"`adjoint_params` must be Keras Variables. Received: {p!r}")
        return params
    if isinstance(func, keras.layers.Layer) and not func.built:
        # Build the layer so its variables exist before they are handed to the adjoint.
        t0 = times[0] if not isinstance(times[0], float) else ops.convert_to_tensor(times[0], dtype)
        func(t0, y0)
    return list(getattr(func, "trainable_variables", ()))


# --------------------------------------------------------------------------- solving


def _solve(func_tuple, y0, times, options, jump=None, context="forward"):
    """Run the solver on a tuple state; returns (stacked ys of state[0], stats) or the raw states."""
    states, stats, failed = _solvers.integrate(
        options["solver"], func_tuple, (y0,) if not isinstance(y0, tuple) else y0, times,
        static=options["static"], dtype=options["dtype"], rtol=options["rtol"], atol=options["atol"],
        step_size=options["step_size"], max_steps=options["max_steps"], jump=jump,
    )
    if failed is not None:
        states = _check_finished(failed, states, options["max_steps"], context)
    if isinstance(y0, tuple):
        return states, stats
    return ops.stack([s[0] for s in states], axis=0), stats


def _check_finished(failed, states, max_steps, context):
    """Raise (eagerly) or attach a check op (graph / jit) for a dopri5 solve cut at max_steps."""
    where = "" if context == "forward" else " in the adjoint backward solve"
    message = (
        f"dopri5 exceeded max_steps={max_steps} step attempts{where} before reaching the last "
        f"output time; raise max_steps or loosen rtol/atol (the problem may be stiff, or the "
        f"solution may blow up or be non-finite)."
    )
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            if bool(failed):
                raise RuntimeError(message)
            return states
        check = tf.debugging.Assert(tf.logical_not(failed), [message])
        with tf.control_dependencies([check]):
            return [tuple(tf.identity(x) for x in s) for s in states]
    if backend == "jax":
        import jax

        if not isinstance(failed, jax.core.Tracer):
            if bool(failed):
                raise RuntimeError(message)
            return states

        def _raise(flag):
            if bool(flag):
                raise RuntimeError(message)

        jax.debug.callback(_raise, failed)
        return [tuple(ops.where(failed, np.nan, x) for x in s) for s in states]
    if bool(ops.convert_to_numpy(failed)):
        raise RuntimeError(message)
    return states


# --------------------------------------------------------------------------- adjoint


def _parameter_scope(params, values):
    """A StatelessScope in which each variable of `params` reads the matching tensor of `values`
    (the other variables keep what an enclosing stateless scope maps them to)."""
    scope = keras.StatelessScope(state_mapping=list(zip(params, values)), initialize_variables=False)
    outer = _current_stateless_scope()
    if outer is not None:
        scope.state_mapping = {**outer.state_mapping, **scope.state_mapping}
    return scope


def _current_stateless_scope():
    try:
        from keras.src.backend.common.stateless_scope import get_stateless_scope
    except ImportError:  # pragma: no cover - keras internals moved
        return None
    return get_stateless_scope()


def _vjp(fn, primals, cotangent):
    """(fn(*primals), cotangentᵀ ∂fn/∂primals) on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for p in primals:
                tape.watch(p)
            out = fn(*primals)
        grads = tape.gradient(out, list(primals), output_gradients=cotangent, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return out, grads
    if backend == "jax":
        import jax

        out, pullback = jax.vjp(fn, *primals)
        return out, pullback(cotangent)
    raise NotImplementedError(f"odeint(adjoint=True) supports the tensorflow and jax backends. Received backend: {backend!r}")


def _flatten(tensors, dtype):
    return ops.concatenate([ops.reshape(ops.cast(x, dtype), (-1,)) for x in tensors], axis=0)


def _unflatten(flat, like):
    out, start = [], 0
    for v in like:
        size = int(np.prod(v.shape))
        out.append(ops.cast(ops.reshape(flat[start : start + size], v.shape), v.dtype))
        start += size
    return out


def _record_backward(stats, method):
    def store(nfe, steps, rejected):
        _LAST_BACKWARD_STATS.clear()
        _LAST_BACKWARD_STATS.update(nfe=int(nfe), steps=int(steps), rejected=int(rejected), method=method)
        for records in _RECORDERS:
            records.append(dict(_LAST_BACKWARD_STATS))

    backend = keras.backend.backend()
    values = (stats["nfe"], stats["steps"], stats["rejected"])
    if backend == "jax":
        import jax

        jax.debug.callback(store, *values)
        return
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return
    store(*(ops.convert_to_numpy(v) for v in values))


def _solve_with_custom_gradient(func, y0, times, params, options, adjoint):
    """Forward solve wrapped in `keras.ops.custom_gradient` over (y0, *param values); its
    gradient is the adjoint backward solve, or (JAX guard) a NotImplementedError."""
    values = [ops.convert_to_tensor(p.value) for p in params]  # read outside: the tape sees it
    dtype = options["dtype"]
    n_out = len(times)

    @ops.custom_gradient
    def solve(y0, *values):
        with _parameter_scope(params, values):
            states, stats = _solve(lambda tt, y: (func(tt, y[0]),), (y0,), times, options)
        ys = [s[0] for s in states]

        def grad(*upstream, **kwargs):
            if len(upstream) == 1 and isinstance(upstream[0], (tuple, list)):
                upstream = tuple(upstream[0])  # JAX passes the output structure
            if not adjoint:
                raise NotImplementedError(
                    f"Reverse-mode autodiff through odeint(method={options['solver'].name!r}) is not "
                    f"available on the JAX backend with adjoint=False (its loop has a dynamic trip "
                    f"count). Use adjoint=True, or a fixed-step method with times given as "
                    f"Python/NumPy values."
                )
            g = upstream[0]
            g = ops.zeros((n_out,) + tuple(y0.shape), dtype) if g is None else ops.cast(g, dtype)
            grads = _adjoint_backward(func, params, values, ys, g, times, options)
            variables = kwargs.get("variables")
            if variables:
                return grads, [None] * len(variables)
            return grads

        return (ops.stack(ys, axis=0), stats["nfe"], stats["steps"], stats["rejected"]), grad

    ys, nfe, steps, rejected = solve(y0, *values)
    return ys, {"nfe": nfe, "steps": steps, "rejected": rejected}


def _adjoint_backward(func, params, values, ys, g, times, options):
    """Integrate (y, a, a_θ) backwards from times[-1] to times[0]; returns (a(t0), *a_θ)."""
    dtype = options["dtype"]
    n = len(times)
    if n == 1:
        return (g[0],) + tuple(ops.zeros_like(v) for v in values)
    static = options["static"]
    s_times = [(-t if static else ops.negative(t)) for t in reversed(times)]
    has_params = len(params) > 0

    def augmented(s, state):
        y, a = state[0], state[1]
        t = ops.negative(s)

        def f(y, *vals):
            with _parameter_scope(params, vals):
                return func(t, y)

        fy, grads = _vjp(f, (y,) + tuple(values), a)
        out = (ops.negative(fy), grads[0])  # dy/ds = -f, da/ds = aᵀ ∂f/∂y
        if has_params:
            out = out + (_flatten(grads[1:], dtype),)  # da_θ/ds = aᵀ ∂f/∂θ
        return out

    state = (ys[-1], g[n - 1])
    if has_params:
        state = state + (ops.zeros((sum(int(np.prod(v.shape)) for v in values),), dtype),)

    def jump(i, state):  # reached s_times[i], i.e. t = times[n - 1 - i]
        j = n - 1 - i
        return (ys[j], ops.add(state[1], g[j])) + tuple(state[2:])

    states, stats = _solve(augmented, state, s_times, options, jump=jump, context="backward")
    _record_backward(stats, options["solver"].name)
    final = states[-1]
    a0 = ops.add(final[1], g[0])
    if not has_params:
        return (a0,)
    return (a0,) + tuple(_unflatten(final[2], values))
