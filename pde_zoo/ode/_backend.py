"""What differs between the Keras backends, in one place: loops, sums, vector-Jacobian
products, checks that must raise from inside a graph, host callbacks, and compilation.

TensorFlow runs the solver's loops as `tf.while_loop` (one iteration at a time) and compiles
with `tf.function`; JAX runs `lax` loops (through `keras.ops`) and compiles with `jax.jit`.
A graph cannot raise a Python exception: on TensorFlow a failed check is an `Assert` op
(`InvalidArgumentError`), under `jax.jit` a host callback raises (and the outputs become NaN).
"""

import keras
import numpy as np
from keras import ops

__all__ = [
    "XLA_ERRORS", "add_n", "all_finite", "check", "compile_function", "fori_loop", "in_stateless_scope", "is_concrete",
    "name", "report", "tape_active", "vjp", "while_loop",
]


def name():
    return keras.backend.backend()


# --------------------------------------------------------------------------- loops


def while_loop(cond, body, loop_vars):
    """`keras.ops.while_loop`, but on TensorFlow one iteration at a time (parallel_iterations=1).

    With TF's default of 10, the adjoint's backward loop ran its (ψ, a) chain up to 10 steps
    ahead of the parameter-gradient convolutions, each step in flight holding its intermediates:
    memory grew with the number of steps (scripts/bench_ode.py). One at a time keeps the
    adjoint's memory flat at no measured cost in time.
    """
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.while_loop(cond, body, loop_vars, parallel_iterations=1)
    return ops.while_loop(cond, body, loop_vars)


def fori_loop(lower, upper, body, init):
    """`keras.ops.fori_loop` (a scan on JAX when the bounds are Python ints, so reverse-mode
    autodiff works there), with `while_loop`'s one-iteration-at-a-time on TensorFlow."""
    if name() == "tensorflow":
        return while_loop(lambda i, state: i < upper, lambda i, state: (i + 1, body(i, state)), (lower, init))[1]
    return ops.fori_loop(lower, upper, body, init)


def add_n():
    """tf.math.add_n on TensorFlow (one pass over memory; XLA fuses the adds on JAX), else None."""
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.math.add_n


# --------------------------------------------------------------------------- derivatives


def vjp(fn, primals, cotangent):
    """(fn(*primals), cotangentᵀ ∂fn/∂primals): one evaluation and one vector-Jacobian product."""
    backend = name()
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


# --------------------------------------------------------------------------- values and checks


def is_concrete(*tensors):
    """Whether these tensors hold values now: TensorFlow executing eagerly; on JAX, no tracer."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not any(isinstance(x, jax.core.Tracer) for x in tensors)
    return True


def in_stateless_scope():
    """Whether a `keras.StatelessScope` is active (variables then read values it maps)."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope as active

    return active()


def check(ok, message, tensors, error=RuntimeError):
    """Refuse unless the bool scalar `ok` holds; returns `tensors` (a tuple), tied to the check.

    Concrete `ok`: raises `error(message)` now. TensorFlow graph: an Assert op the returned
    tensors depend on (`InvalidArgumentError` with the message). JAX tracing: a host callback
    raises, and the returned tensors are NaN where the check failed.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            if not bool(ok):
                raise error(message)
            return tensors
        assertion = tf.debugging.Assert(ok, [message])
        with tf.control_dependencies([assertion]):
            return tuple(tf.identity(x) for x in tensors)
    if backend == "jax":
        import jax

        if not isinstance(ok, jax.core.Tracer):
            if not bool(ok):
                raise error(message)
            return tensors

        def _raise(flag):
            if not bool(flag):
                raise error(message)

        jax.debug.callback(_raise, ok)
        return tuple(ops.where(ok, x, np.nan) if "float" in str(x.dtype) else x for x in tensors)
    if not bool(ops.convert_to_numpy(ok)):
        raise error(message)
    return tensors


def all_finite(tensors):
    """A bool scalar: every value of every tensor is finite."""
    flags = [ops.all(ops.isfinite(x)) for x in tensors]
    out = flags[0]
    for flag in flags[1:]:
        out = ops.logical_and(out, flag)
    return out


def report(store, *values):
    """Call `store(*python_ints)` with the values of int scalar tensors, where they can be known:
    now when concrete, on JAX through a host callback (also under `jit`), never inside a
    TensorFlow graph."""
    backend = name()
    if backend == "jax":
        import jax

        if any(isinstance(v, jax.core.Tracer) for v in values):
            jax.debug.callback(lambda *v: store(*(int(x) for x in v)), *values)
            return
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return
    store(*(int(ops.convert_to_numpy(v)) for v in values))


# --------------------------------------------------------------------------- compilation


def _xla_errors():
    if name() != "tensorflow":
        return ()
    import tensorflow as tf

    return (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError)


XLA_ERRORS = _xla_errors()  # what TensorFlow raises when XLA cannot compile a function


def tape_active():
    """Whether a TensorFlow gradient tape (or forward accumulator) could record an op now."""
    if name() != "tensorflow":
        return False
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - TF internals moved: assume one could
        return True
    return bool(record.could_possibly_record())


def compile_function(fn, args, xla=False):
    """`fn` compiled for arguments shaped like `args` (a flat list of tensors), traced now.

    TensorFlow: `tf.function(fn, input_signature=..., autograph=False, jit_compile=xla)`, traced
    by `get_concrete_function` (the returned polymorphic function is called, so gradient tapes
    see the call; XLA compiles at the first call). JAX: `jax.jit(fn)` lowered and compiled for
    these shapes. Errors of the trace itself (e.g. `func` needs concrete values) propagate from
    here, before anything runs.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        specs = [tf.TensorSpec(x.shape, x.dtype) for x in args]
        compiled = tf.function(fn, input_signature=specs, autograph=False, jit_compile=bool(xla))
        compiled.get_concrete_function(*specs)
        return compiled
    if backend == "jax":
        import jax

        return jax.jit(fn).lower(*args).compile()
    return fn
