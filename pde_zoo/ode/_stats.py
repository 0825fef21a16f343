"""Solver statistics: the result object of one `odeint` call, and where adjoint backward passes
report their counts.

The cost of a forward + backward pass of `odeint(..., adjoint=True)` is

    stats["nfe"]       evaluations of f (forward solve)
    stats.nfe_backward evaluations of the augmented field (f and one vector-Jacobian product)

`ODEStats` holds the forward counts as tensors (known in any mode) and collects the backward
solves of gradients taken through that call's output, when their counts are concrete: an eager
TensorFlow gradient, or JAX (a host callback, also under `jit`). A backward pass inside a
TensorFlow graph (`model.fit`) is not recorded. `record_backward_stats()` collects every backward
solve of a block of code (e.g. a whole model's gradient), `last_backward_stats()` the latest.
"""

import contextlib
import weakref
from collections.abc import Mapping

import keras

__all__ = ["ODEStats", "last_backward_stats", "record_backward_stats"]

KEYS = ("nfe", "steps", "rejected")


class ODEStats(Mapping):
    """Statistics of one `odeint` call: a mapping of the forward counts, plus the backward solves.

    Mapping (int32 scalar tensors): `nfe` (evaluations of f), `steps` (accepted steps),
    `rejected` (rejected step attempts; 0 for fixed-step methods).

    Attributes:
        method: the solver's name (None when rebuilt by `tf.nest` / a JAX pytree).
        backward: one dict (`nfe`, `steps`, `rejected`, `method`: Python ints and str) per
            adjoint backward solve of a gradient through this call, appended when recorded
            (module docstring); empty before, and for `adjoint=False`.
        nfe_backward: the sum of `backward`'s `nfe`, or None when none was recorded.
    """

    def __init__(self, items=(), method=None):
        self._counts = dict(items)
        if set(self._counts) != set(KEYS):
            raise ValueError(f"ODEStats holds exactly {KEYS}. Received: {sorted(self._counts)}")
        self.method = method
        self.backward = []

    def __getitem__(self, key):
        return self._counts[key]

    def __iter__(self):
        return iter(KEYS)

    def __len__(self):
        return len(KEYS)

    @property
    def nfe_backward(self):
        return sum(record["nfe"] for record in self.backward) if self.backward else None

    def numpy(self):
        """The forward counts as Python ints (only when they hold values)."""
        return {k: int(keras.ops.convert_to_numpy(v)) for k, v in self._counts.items()}

    def __repr__(self):
        try:
            counts = self.numpy()
        except Exception:  # noqa: BLE001  symbolic tensors of any backend refuse conversion
            counts = {k: "?" for k in KEYS}
        return f"ODEStats(method={self.method!r}, {', '.join(f'{k}={v}' for k, v in counts.items())}, backward={self.backward})"


class _BackwardLog:
    """The process's sink of recorded backward solves (read by the two functions below)."""

    def __init__(self):
        self.last = None
        self.recorders = []  # the lists of the active `record_backward_stats` blocks

    def reporter(self, method):
        """A `_Reporter` for the backward solves of one odeint call."""
        return _Reporter(self, method)

    def record(self, record, target=None):
        self.last = record
        for records in self.recorders:
            records.append(dict(record))
        if target is not None:
            target.backward.append(dict(record))


class _Reporter:
    """`reporter(nfe, steps, rejected)` records one backward solve of an odeint call: in the log
    and in the call's `ODEStats` once attached (held weakly: a result that is gone, e.g. one made
    while tracing, gets nothing)."""

    def __init__(self, log, method):
        self.log, self.method, self._target = log, method, None

    def attach(self, stats):
        self._target = weakref.ref(stats)

    def __call__(self, nfe, steps, rejected):
        record = {"nfe": int(nfe), "steps": int(steps), "rejected": int(rejected), "method": self.method}
        self.log.record(record, None if self._target is None else self._target())


_LOG = _BackwardLog()


def last_backward_stats():
    """Statistics of the most recent adjoint backward solve that ran with concrete values.

    Recorded when the backward pass runs eagerly (TensorFlow eager `GradientTape`) and on JAX
    always (also under `jit`, through a host callback). A backward pass inside a `tf.function`
    (e.g. `model.fit` on TensorFlow) is not recorded.

    Returns:
        dict with Python ints `nfe` (evaluations of the augmented field, each one evaluation of f
        plus one vector-Jacobian product), `steps`, `rejected` and the str `method`; None when no
        backward pass has been recorded in this process.
    """
    return dict(_LOG.last) if _LOG.last else None


@contextlib.contextmanager
def record_backward_stats():
    """Collect every adjoint backward solve recorded inside the block (recorded under the same
    conditions as `last_backward_stats`): yields a list that receives one stats dict per
    backward solve, e.g. one per `ODEBlock` segment, so a whole gradient's NFE is their sum.
    (On JAX the host callbacks of a jitted step arrive asynchronously: block on the step's
    results before leaving the block.)
    """
    records = []
    _LOG.recorders.append(records)
    try:
        yield records
    finally:
        _LOG.recorders.remove(records)


def _register_jax_pytree():
    """On JAX, `ODEStats` is a pytree (its counts the leaves), so a jitted function may return it."""
    if keras.backend.backend() != "jax":
        return
    import jax

    jax.tree_util.register_pytree_node(
        ODEStats,
        lambda s: (tuple(s[k] for k in KEYS), s.method),
        lambda method, leaves: ODEStats(zip(KEYS, leaves), method=method),
    )


_register_jax_pytree()
