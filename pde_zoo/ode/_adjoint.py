"""The adjoint method (Chen et al. 2018; thesis eq 43-44) as a custom gradient of the solve.

For a loss L(y(t_0), ..., y(t_N)) let a(t) = ∂L/∂y(t). Between output times

    dy/dt   = f(t, y; θ)
    da/dt   = -aᵀ ∂f/∂y
    da_θ/dt = -aᵀ ∂f/∂θ

solved backwards from t_N (y = y(t_N), a = ∂L/∂y(t_N), a_θ = 0) to t_0, adding ∂L/∂y(t_i) to a
at each output time t_i (and putting back the forward value y(t_i)); then ∂L/∂y0 = a(t_0) and
∂L/∂θ = a_θ(t_0). The backward system runs in reversed time s = -t (so ds > 0) with the same
solver and tolerances. Only the states at the output times are kept from the forward pass; the
error norm of the backward solve includes a_θ as one flattened tensor.
"""

import keras
import numpy as np
from keras import ops

from pde_zoo.ode import _backend

__all__ = ["backward_solve", "parameter_scope", "with_custom_gradient"]


def parameter_scope(params, values):
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


def _flatten(tensors, dtype):
    return ops.concatenate([ops.reshape(ops.cast(x, dtype), (-1,)) for x in tensors], axis=0)


def _unflatten(flat, like):
    out, start = [], 0
    for v in like:
        size = int(np.prod(v.shape))
        out.append(ops.cast(ops.reshape(flat[start : start + size], v.shape), v.dtype))
        start += size
    return out


def with_custom_gradient(forward, backward, y0, values):
    """`forward(y0, *values) -> (ys, nfe, steps, rejected)` whose gradient with respect to
    (y0, *values) is `backward(ys, g, *values) -> (∂L/∂y0, *∂L/∂values)`, g = ∂L/∂ys.

    Variables that `forward` reads without taking them from `values` get no gradient.
    """

    @ops.custom_gradient
    def solve(y0, *values):
        ys, nfe, steps, rejected = forward(y0, *values)

        def grad(*upstream, **kwargs):
            if len(upstream) == 1 and isinstance(upstream[0], (tuple, list)):
                upstream = tuple(upstream[0])  # JAX passes the output structure
            g = upstream[0]
            g = ops.zeros(ys.shape, ys.dtype) if g is None else ops.cast(g, ys.dtype)
            grads = tuple(backward(ys, g, *values))
            variables = kwargs.get("variables")
            if variables:
                return grads, [None] * len(variables)
            return grads

        return (ys, nfe, steps, rejected), grad

    return solve(y0, *values)


def backward_solve(solver, func, params, values, ys, g, times, options):
    """Integrate (y, a, a_θ) backwards from times[-1] to times[0] (module docstring).

    Args:
        solver: the forward solve's `RungeKutta`.
        func: the field f(t, y), reading the variables `params` (mapped to `values`).
        ys, g: the forward states and ∂L/∂y at every output time (stacked on axis 0).
        times: the forward output times.
        options: the forward solve's integration options (`RungeKutta.integrate` keywords).

    Returns:
        ((a(t0), *a_θ(t0)), counts, failed): the gradients with respect to y0 and to each value,
        then the backward solve's counts and failure flag as `RungeKutta.integrate` gives them
        (counts None when there is nothing to solve: a single output time).
    """
    dtype = options["dtype"]
    n = len(times)
    if n == 1:
        return (g[0],) + tuple(ops.zeros_like(v) for v in values), None, None
    s_times = [(-t if options["static"] else ops.negative(t)) for t in reversed(times)]
    has_params = len(params) > 0

    def augmented(s, state):
        y, a = state[0], state[1]
        t = ops.negative(s)

        def f(y, *vals):
            with parameter_scope(params, vals):
                return func(t, y)

        fy, grads = _backend.vjp(f, (y,) + tuple(values), a)
        out = (ops.negative(fy), grads[0])  # dy/ds = -f, da/ds = aᵀ ∂f/∂y
        if has_params:
            out = out + (_flatten(grads[1:], dtype),)  # da_θ/ds = aᵀ ∂f/∂θ
        return out

    state = (ys[n - 1], g[n - 1])
    if has_params:
        state = state + (ops.zeros((sum(int(np.prod(v.shape)) for v in values),), dtype),)

    def jump(i, state):  # reached s_times[i], i.e. t = times[n - 1 - i]
        j = n - 1 - i
        return (ys[j], ops.add(state[1], g[j])) + tuple(state[2:])

    states, counts, failed = solver.integrate(augmented, state, s_times, jump=jump, **options)
    final = states[-1]
    a0 = ops.add(final[1], g[0])
    grads = (a0,) if not has_params else (a0,) + tuple(_unflatten(final[2], values))
    return grads, counts, failed
