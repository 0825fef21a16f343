"""Eager `odeint` calls run a compiled solver (`tf.function` / `jax.jit`), cached per signature.

A compiled function bakes in what the Python callable `func` computes at trace time: its code,
the Python numbers and arrays it reads from closures, defaults and module globals. The cache key
is therefore a fingerprint of `func`:

- a function: its code object, and every value it can read without arguments (closure cells,
  defaults, the globals its code names, helper functions of its own module, recursively):
  numbers, strings and small arrays / concrete tensors by value, anything else by identity;
- a bound method: the fingerprint of the function and the identity of its object;
  `functools.partial`: the function's fingerprint and the bound arguments;
- any other callable (a Keras layer): its identity;

plus the method, its options, the output times and the shapes and dtypes of y0 and of the
parameters passed as arguments. A callable with new closure values, or a global it reads set to
another number, is a new key (compiled anew); Python state reached through attributes of other
objects (`self.scale = 2.0` on a layer) is not part of the key, as with `tf.function`.

Keras variables are read at run time: TensorFlow captures them by reference. On JAX their
values are arguments of the jitted function (a `keras.StatelessScope` maps them inside): the
variables of layers and of Keras variables found while fingerprinting, and any other variable
the trace reads (found by the scope, then traced again with it as an argument).

What runs: on TensorFlow a small state (at most `XLA_MAX_VALUES` values) is compiled by XLA
(`jit_compile`) when no gradient tape records the call: a small solve costs what the graph
executor spends per op (~1 µs), XLA fuses the loop. A larger state, whose convolutions cost more
than the ops' dispatch, a gradient through the solver's loops (XLA has no gradient of a loop of
unknown length), or a func XLA cannot compile runs the plain `tf.function`. With the adjoint, the
forward and the backward solve are compiled apart and joined by an eager custom gradient, so the
backward counts arrive as values (`_stats`). JAX compiles with `jax.jit` (XLA) always; no gradient
can follow a call with concrete values there.

Entries are kept for the last `CAPACITY` keys (least recently used dropped), holding strong
references to what their keys name by identity, so an identity key never outlives its object.
A callable that cannot be traced (e.g. it converts a tensor to a Python float) is remembered as
such and runs op by op, with one warning.
"""

import collections
import dis
import functools
import hashlib
import threading
import types
import warnings

import keras
import numpy as np
from keras import ops

from pde_zoo.ode import _backend
from pde_zoo.ode._adjoint import parameter_scope, with_custom_gradient

__all__ = ["CAPACITY", "XLA_MAX_VALUES", "clear", "fingerprint", "run"]

CAPACITY = 32
XLA_MAX_VALUES = 4096  # TensorFlow: states up to this many values run under XLA (`_CompiledSolve`)
UNCOMPILABLE = object()
_SMALL = 4096  # arrays and tensors up to this many values are keyed by value
_DEPTH = 3  # how deep helper functions are followed

_CACHE = collections.OrderedDict()  # key -> (entry, references kept alive)
_LOCK = threading.Lock()


class _Traced(Exception):
    """A value that is being traced (a JAX tracer, a symbolic tensor): nothing to compile."""


def fingerprint(func):
    """(key, references, variables, unbuilt) for `func`, or None when it cannot be keyed
    (module docstring); `unbuilt` says whether a Keras layer it reaches is not built yet (its
    variables would be made inside the trace: build it by an eager call first)."""
    refs, variables = [], []
    try:
        key = _key(func, refs, variables, _DEPTH, set())
    except (_Traced, RecursionError, TypeError, ValueError):
        return None
    unbuilt = any(isinstance(x, keras.layers.Layer) and not x.built for x in refs)
    return key, refs, variables, unbuilt


def _identity(x, refs):
    refs.append(x)
    return ("id", type(x).__name__, id(x))


def _key(x, refs, variables, depth, seen):
    if x is None or isinstance(x, (bool, int, str, bytes)):
        return (type(x).__name__, x)
    if isinstance(x, float):
        return ("float", x.hex())
    if isinstance(x, complex):
        return ("complex", x.real.hex(), x.imag.hex())
    if isinstance(x, types.ModuleType):
        return ("id", id(x))  # modules outlive the cache
    if isinstance(x, (tuple, list, frozenset, set)) and len(x) <= 64:
        items = sorted(x, key=repr) if isinstance(x, (set, frozenset)) else x
        return (type(x).__name__, tuple(_key(v, refs, variables, depth, seen) for v in items))
    if isinstance(x, dict) and len(x) <= 64 and all(isinstance(k, (str, int)) for k in x):
        return ("dict", tuple((k, _key(v, refs, variables, depth, seen)) for k, v in sorted(x.items(), key=lambda kv: repr(kv[0]))))
    if isinstance(x, (np.ndarray, np.generic)):
        return _array_key(np.asarray(x), x, refs)
    if isinstance(x, keras.Variable):
        variables.append(x)
        return _identity(x, refs)
    if isinstance(x, keras.layers.Layer):
        variables.extend(x.variables)
        return _identity(x, refs)
    if _is_traced(x):
        raise _Traced()
    if keras.ops.is_tensor(x):
        return _array_key(keras.ops.convert_to_numpy(x), x, refs)
    if isinstance(x, functools.partial):
        return ("partial", _key(x.func, refs, variables, depth, seen), _key(x.args, refs, variables, depth, seen),
                _key(x.keywords, refs, variables, depth, seen))
    if isinstance(x, types.MethodType):
        return ("method", _key(x.__func__, refs, variables, depth, seen), _key(x.__self__, refs, variables, depth, seen))
    if isinstance(x, types.FunctionType):
        return _function_key(x, refs, variables, depth, seen)
    return _identity(x, refs)


def _array_key(values, original, refs):
    if values.size > _SMALL or values.dtype == object:
        return _identity(original, refs)
    return ("array", str(values.dtype), values.shape, hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest())


def _function_key(fn, refs, variables, depth, seen):
    if id(fn) in seen or depth <= 0:
        return _identity(fn, refs)
    seen = seen | {id(fn)}
    code = fn.__code__
    cells = tuple(_key(_cell_contents(c), refs, variables, depth, seen) for c in fn.__closure__ or ())
    names = sorted(_global_names(code))
    found = []
    for name in names:
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        if isinstance(value, types.FunctionType) and value.__module__ != fn.__module__:
            found.append((name, _identity(value, refs)))  # library functions: by identity
        else:
            found.append((name, _key(value, refs, variables, depth - 1, seen)))
    defaults = _key(fn.__defaults__, refs, variables, depth, seen)
    kwdefaults = _key(fn.__kwdefaults__ or {}, refs, variables, depth, seen)
    refs.append(fn)  # the code object lives as long as the function: keep it
    return ("function", id(code), cells, tuple(found), defaults, kwdefaults)


def _cell_contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a name assigned later in the enclosing scope)
        return None


@functools.lru_cache(maxsize=1024)
def _global_names(code):
    """The module globals `code` (and the functions defined in it) loads: LOAD_GLOBAL / LOAD_NAME
    operands, not attribute names (which `co_names` mixes in)."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return frozenset(names)


def _is_traced(x):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return isinstance(x, tf.Tensor) and not hasattr(x, "numpy")
    return False


def lookup(key):
    """The entry of `key` (most recently used now), UNCOMPILABLE, or None."""
    with _LOCK:
        found = _CACHE.get(key)
        if found is None:
            return None
        _CACHE.move_to_end(key)
        return found[0]


def store(key, entry, refs):
    """Keep `entry` (or UNCOMPILABLE) for `key`, with the objects its key names by identity."""
    with _LOCK:
        _CACHE[key] = (entry, refs)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CAPACITY:
            _CACHE.popitem(last=False)


def clear():
    """Drop every compiled entry."""
    with _LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------- compiled solves


def run(solve, y0, params):
    """(ys, nfe, steps, rejected) by the cached compiled solve, or None to run op by op."""
    found = fingerprint(solve.func)
    if found is not None and found[3]:  # build the layers it calls eagerly (one uncounted call), then key it
        solve.func(ops.convert_to_tensor(solve.times[0], solve.options["dtype"]), y0)
        found = fingerprint(solve.func)
    if found is None or found[3]:
        return None
    func_key, refs, variables, _ = found
    jax = _backend.name() == "jax"
    if jax:  # no gradient can follow a concrete JAX call: pass every variable func reads as an argument
        params = list({id(v): v for v in [*params, *variables]}.values())
    options = solve.options
    key = (
        func_key, _backend.name(), solve.solver.name, id(solve.solver), tuple(sorted(options.items())), tuple(solve.times),
        solve.adjoint and not jax, _signature([y0] + [p.value for p in params]),
    )
    entry = lookup(key)
    if entry is UNCOMPILABLE:
        return None
    if entry is None:
        entry = _CompiledSolve(solve, y0, params, watch=jax)
        try:
            entry.trace_forward(y0)
        except Exception as err:  # noqa: BLE001  any trace failure: run op by op instead
            warnings.warn(
                f"odeint: could not compile {getattr(solve.func, '__name__', type(solve.func).__name__)} for an eager "
                f"call ({type(err).__name__}: {str(err)[:200]}); it runs op by op (slower). odeint(..., compile=False) "
                "skips the attempt.",
                stacklevel=3,
            )
            store(key, UNCOMPILABLE, refs)
            return None
        store(key, entry, refs + [entry.params])
    values = [ops.convert_to_tensor(p.value) for p in entry.params]
    if entry.adjoint:
        return with_custom_gradient(
            lambda y, *v: entry.forward(solve, y, *v), lambda ys, g, *v: entry.backward(solve, ys, g, *v), y0, values
        )
    return entry.forward(solve, y0, *values)


def _signature(tensors):
    return tuple((tuple(x.shape), keras.backend.standardize_dtype(x.dtype)) for x in tensors)


class _WatchingScope(keras.StatelessScope):
    """A stateless scope that notes the variables read without a value in its mapping."""

    def __init__(self, params, values):
        super().__init__(state_mapping=list(zip(params, values)), initialize_variables=False)
        self.missed = {}

    def get_current_value(self, variable):
        value = super().get_current_value(variable)
        if value is None:
            self.missed[id(variable)] = variable
        return value


class _CompiledSolve:
    """The compiled solves of one key: the forward solve and, for the adjoint on TensorFlow, the
    backward solve (compiled at the first gradient).

    On TensorFlow a small state (at most `XLA_MAX_VALUES` values, where the graph executor's cost
    per op dominates) runs under XLA (`jit_compile`) when no gradient tape can record the call;
    a gradient through the solver's loops, a larger state, or a func XLA cannot compile runs the
    plain `tf.function`. JAX compiles with XLA always.
    """

    def __init__(self, solve, y0, params, watch):
        self.solve, self.params, self.watch = solve, list(params), watch
        self.adjoint = solve.adjoint and not watch
        self.xla = _backend.name() == "tensorflow" and int(np.prod(y0.shape)) <= XLA_MAX_VALUES
        self._functions, self._verified = {}, set()

    def trace_forward(self, y0):
        """Trace the forward solve now (trace errors raise here); on JAX until every Keras
        variable it reads is an argument."""
        for _ in range(3):
            values = [ops.convert_to_tensor(p.value) for p in self.params]
            missed = self._trace("forward", self.xla and not _backend.tape_active(), [y0, *values])
            if not missed:
                return
            self.params += list(missed.values())
            self._functions.clear()
        raise RuntimeError("func keeps reading Keras variables that are not passed to the compiled solve")

    def _trace(self, kind, xla, args):
        """Compile `kind` ("forward" / "backward") for `args`; returns the variables read but not
        passed (JAX)."""
        scopes = []

        def scope(params, values):
            scopes.append(_WatchingScope(params, values) if self.watch else parameter_scope(params, values))
            return scopes[-1]

        solve, params = self.solve, self.params

        def forward(y0, *values):
            ys, counts, failed = solve.forward_core(y0, params, values, scope=scope)
            return ys, counts["nfe"], counts["steps"], counts["rejected"], _flag(failed)

        def backward(ys, g, *values):
            grads, counts, failed = solve.backward_core(ys, g, params, values)
            if counts is None:
                zero = ops.zeros((), "int32")
                counts = {"nfe": zero, "steps": zero, "rejected": zero}
            return (*grads, counts["nfe"], counts["steps"], counts["rejected"], _flag(failed))

        self._functions[kind, xla] = _backend.compile_function(forward if kind == "forward" else backward, args, xla=xla)
        return {k: v for s in scopes if self.watch for k, v in s.missed.items()}

    def _call(self, kind, args):
        xla = self.xla and not _backend.tape_active()
        if (kind, xla) not in self._functions:
            self._trace(kind, xla, args)
        try:
            return self._functions[kind, xla](*args)
        except _backend.XLA_ERRORS:
            if not xla or (kind, xla) in self._verified:
                raise
            self.xla = False  # XLA cannot compile this func: the plain tf.function from now on
            return self._call(kind, args)
        finally:
            self._verified.add((kind, xla))

    def forward(self, solve, y0, *values):
        """The compiled forward solve, for the call `solve` (same key: same problem)."""
        ys, nfe, steps, rejected, failed = self._call("forward", [y0, *values])
        if bool(failed):
            raise RuntimeError(solve._message("forward"))
        return ys, nfe, steps, rejected

    def backward(self, solve, ys, g, *values):
        """The compiled adjoint backward solve; its counts go to the call `solve`'s reporter."""
        *grads, nfe, steps, rejected, failed = self._call("backward", [ys, g, *values])
        if bool(failed):
            raise RuntimeError(solve._message("backward"))
        if len(solve.times) > 1:
            solve.reporter(int(nfe), int(steps), int(rejected))
        return tuple(grads)


def _flag(failed):
    return ops.convert_to_tensor(False) if failed is None else failed
