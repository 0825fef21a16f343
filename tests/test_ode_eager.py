"""Eager `odeint` runs compiled (tf.function / jax.jit), cached per signature; the statistics come
back in a result object; a non-finite start is refused at once."""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from pde_zoo.layers import ODEBlock, VectorField
from pde_zoo.ode import ODEStats, _compile, last_backward_stats, odeint, record_backward_stats

SCALE = -1.0  # a module global read by `scaled_decay`: part of its compiled key


def scaled_decay(t, y):
    return SCALE * y


def np_(x):
    return ops.convert_to_numpy(x)


class Counting:
    """f(t, y) = -y (1 + t), counting the Python calls: a compiled solve calls it only while tracing."""

    def __init__(self):
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return -y * (1.0 + t)


# --------------------------------------------------------------------------- compiled and cached


@pytest.mark.parametrize("method, options", [("rk4", dict(step_size=0.1)), ("dopri5", {}), ("bosh3", {}), ("adaptive_heun", dict(rtol=1e-4))])
def test_eager_call_is_compiled_cached_and_equal_to_op_by_op(method, options):
    f = Counting()
    y0 = np.random.default_rng(0).normal(size=(3, 4))
    t = [0.0, 0.4, 1.0]
    ys, stats = odeint(f, y0, t, method=method, return_stats=True, **options)
    traced = f.calls
    assert 0 < traced < int(stats["nfe"])  # the first call traced the solver once
    again, stats_again = odeint(f, y0 + 1.0, t, method=method, return_stats=True, **options)
    assert f.calls == traced  # the second call ran the compiled function: no Python evaluation of f
    f.calls = 0
    eager, stats_eager = odeint(f, y0, t, method=method, return_stats=True, compile=False, **options)
    assert f.calls == int(stats_eager["nfe"])  # op by op: one Python call per evaluation
    np.testing.assert_allclose(np_(ys), np_(eager), rtol=1e-12, atol=1e-14)
    assert stats.numpy() == stats_eager.numpy()
    assert np.abs(np_(again) - np_(ys)).max() > 0.1


def test_compiled_key_follows_python_values_and_variables():
    """A new closure value or global value compiles anew; a variable is read at run time."""
    global SCALE
    y0, t = np.ones(2), [0.0, 1.0]
    results = []
    for k in (-1.0, -2.0):
        results.append(np_(odeint(lambda t, y, k=k: k * y, y0, t))[-1, 0])
    np.testing.assert_allclose(results, np.exp([-1.0, -2.0]), rtol=1e-6)
    try:
        for value in (-1.0, -3.0):
            SCALE = value
            np.testing.assert_allclose(np_(odeint(scaled_decay, y0, t))[-1, 0], np.exp(value), rtol=1e-6)
    finally:
        SCALE = -1.0
    rate = keras.Variable(-1.0, dtype="float64")
    f = lambda t, y: rate * y  # noqa: E731
    for value in (-1.0, -0.5):
        rate.assign(value)
        np.testing.assert_allclose(np_(odeint(f, y0, t))[-1, 0], np.exp(value), rtol=1e-6)
    arr = np.array([-1.0])
    g = lambda t, y: arr * y  # noqa: E731
    first = np_(odeint(g, y0, t))[-1, 0]
    arr[0] = -2.0  # changed in place: keyed by value
    np.testing.assert_allclose([first, np_(odeint(g, y0, t))[-1, 0]], np.exp([-1.0, -2.0]), rtol=1e-6)


def test_uncompilable_func_runs_op_by_op_with_a_warning():
    seen = []

    def f(t, y):
        seen.append(float(t))  # needs a concrete t
        return -y

    with pytest.warns(UserWarning, match="could not compile f for an eager call"):
        ys = odeint(f, np.ones(2), [0.0, 1.0], method="euler", step_size=0.25)
    assert seen == [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_allclose(np_(ys)[-1], [0.75**4] * 2)
    seen.clear()
    odeint(f, np.ones(2), [0.0, 1.0], method="euler", step_size=0.25)  # remembered: no second attempt
    assert seen == [0.0, 0.25, 0.5, 0.75]


def _latest_entry():
    return next(reversed(_compile._CACHE.values()))[0]


def test_xla_for_small_states_and_the_plain_graph_otherwise():
    """TensorFlow: a small state runs under XLA when no tape records; a func XLA cannot compile
    (here a NumPy callback) falls back to the plain tf.function at its first call."""
    f = lambda t, y: -y  # noqa: E731
    odeint(f, np.ones(3), [0.0, 1.0])
    assert _latest_entry().xla and ("forward", True) in _latest_entry()._functions
    odeint(f, np.ones(_compile.XLA_MAX_VALUES + 1), [0.0, 1.0])
    assert not _latest_entry().xla and list(_latest_entry()._functions) == [("forward", False)]
    y0 = tf.ones(3, tf.float64)
    with tf.GradientTape() as tape:  # a tape records: the plain graph, whose loops TF can differentiate
        tape.watch(y0)
        loss = tf.reduce_sum(odeint(f, y0, [0.0, 1.0])[-1])
    np.testing.assert_allclose(tape.gradient(loss, y0).numpy(), [np.exp(-1.0)] * 3, rtol=1e-6)
    assert ("forward", False) in _latest_entry()._functions

    def callback(t, y):
        return tf.ensure_shape(tf.numpy_function(lambda a: -a, [y], tf.float64), y.shape)

    for _ in range(2):
        np.testing.assert_allclose(np_(odeint(callback, np.ones(3), [0.0, 1.0]))[-1], [np.exp(-1.0)] * 3, rtol=1e-6)
    assert not _latest_entry().xla


def test_cache_keeps_the_most_recent_keys(monkeypatch):
    monkeypatch.setattr(_compile, "CAPACITY", 2)
    _compile.clear()
    for k in (1.0, 2.0, 3.0):
        odeint(lambda t, y, k=k: -k * y, np.ones(2), [0.0, 1.0], method="euler", step_size=0.5)
    assert len(_compile._CACHE) == 2
    _compile.clear()


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_eager_gradients_compiled_equal_op_by_op_and_stats_come_back():
    rng = np.random.default_rng(7)
    w = keras.Variable(rng.normal(scale=0.7, size=(2, 2)), dtype="float64")
    s = keras.Variable(0.3, dtype="float64")
    f = lambda t, y: ops.sin(ops.matmul(y, w)) - s * y * t  # noqa: E731
    y0 = tf.constant(rng.normal(size=(3, 2)))
    grads, back = {}, {}
    for compile in (True, False):
        for adjoint in (True, False):
            with tf.GradientTape() as tape:
                tape.watch(y0)
                ys, stats = odeint(f, y0, [0.0, 0.4, 1.2], rtol=1e-8, atol=1e-10, adjoint=adjoint, adjoint_params=[w, s],
                                   return_stats=True, compile=compile)
                loss = tf.reduce_sum(tf.sin(ys))
            with record_backward_stats() as records:
                grads[compile, adjoint] = [g.numpy() for g in tape.gradient(loss, [y0, w, s])]
            back[compile, adjoint] = (stats.backward, stats.nfe_backward, records)
    for adjoint in (True, False):
        for a, b in zip(grads[True, adjoint], grads[False, adjoint]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    for compile in (True, False):
        records, total, collected = back[compile, True]  # stats.backward, stats.nfe_backward, record_backward_stats()
        assert len(records) == 1 and records == collected and records[0]["method"] == "dopri5"
        # 2 (start) + 1 (f re-evaluated after the cotangent jump at t = 0.4) + 6 per attempt
        assert total == records[0]["nfe"] == 3 + 6 * (records[0]["steps"] + records[0]["rejected"])
        assert back[compile, False] == ([], None, [])  # backprop through the solver: no backward solve
    assert back[True, True][0] == back[False, True][0]  # the same backward steps compiled or not
    assert last_backward_stats() == back[False, True][0][0]


def test_stats_object_is_a_mapping_and_crosses_tf_function():
    ys, stats = odeint(lambda t, y: -y, np.ones(2), [0.0, 1.0], return_stats=True)
    assert isinstance(stats, ODEStats) and set(stats) == {"nfe", "steps", "rejected"} and len(stats) == 3
    assert stats.method == "dopri5" and stats.backward == [] and stats.nfe_backward is None
    assert stats.numpy() == {k: int(v) for k, v in stats.items()} and "ODEStats(method='dopri5'" in repr(stats)
    graph = tf.function(lambda y: odeint(lambda t, y: -y, y, [0.0, 1.0], return_stats=True))
    ys_graph, stats_graph = graph(tf.ones(2, tf.float64))
    assert isinstance(stats_graph, ODEStats) and stats_graph.numpy() == stats.numpy()
    with pytest.raises(ValueError, match="exactly"):
        ODEStats({"nfe": 1})


# --------------------------------------------------------------------------- refused at once


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5", "bosh3", "adaptive_heun"])
def test_non_finite_start_is_refused_eagerly(method):
    f = Counting()
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"initial state y0 is not finite \(1 NaN or Inf of its 3 values\)"):
            odeint(f, np.array([1.0, bad, 0.0]), [0.0, 1.0], method=method, step_size=0.1)
    assert f.calls == 0


def test_non_finite_parameter_is_refused_eagerly():
    w = keras.Variable([1.0, np.nan], dtype="float64", name="rate")
    with pytest.raises(ValueError, match=r"parameter 'rate' of func is not finite"):
        odeint(lambda t, y: w * y, np.ones(2), [0.0, 1.0], adjoint=True, adjoint_params=[w])
    field = keras.layers.Dense(2, dtype="float64")
    layer_field = lambda t, y: field(y)  # noqa: E731
    odeint(layer_field, np.ones((1, 2)), [0.0, 1.0], method="euler", step_size=0.5)  # builds it
    field.kernel.assign([[np.inf, 0.0], [0.0, 1.0]])

    class Wrapped(keras.layers.Layer):
        def __init__(self):
            super().__init__(dtype="float64")
            self.inner = field

        def call(self, t, y):
            return self.inner(y)

    with pytest.raises(ValueError, match=r"parameter '.*kernel' of func is not finite"):
        odeint(Wrapped(), np.ones((1, 2)), [0.0, 1.0], method="rk4", step_size=0.5)


def test_non_finite_start_is_refused_at_once_inside_tf_function():
    """In a graph an adaptive solve checks y0 before its loop: with max_steps = 10^6 a solve that
    tried its steps from NaN would take minutes."""
    graph = tf.function(lambda y: odeint(lambda t, y: -y, y, [0.0, 1.0], max_steps=10**6))
    graph(tf.ones(2, tf.float64))  # trace
    start = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="not finite"):
        graph(tf.constant([1.0, np.nan], tf.float64))
    assert time.perf_counter() - start < 5.0


# --------------------------------------------------------------------------- ODEBlock


class CountingField(VectorField):
    """f(t, ψ) = -ψ (1 + t), counting the Python calls."""

    calls = 0

    def call(self, psi, t):
        CountingField.calls += 1
        return -psi * (1.0 + t)


def test_eager_ode_block_call_is_compiled():
    block = ODEBlock(CountingField(), t1=1.0, method="dopri5", rtol=1e-6, atol=1e-6)
    x = np.random.default_rng(1).random((2, 5, 5, 1)).astype("float32")
    first = np_(block(x))
    traced = CountingField.calls
    second = np_(block(x))
    assert CountingField.calls == traced and block.last_stats["nfe"] > traced  # compiled, cached
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, x * np.exp(-1.5), rtol=1e-4)
    model = keras.Sequential([keras.Input((5, 5, 1)), block])
    np.testing.assert_allclose(model.predict(x, verbose=0), second, rtol=1e-6)


# --------------------------------------------------------------------------- JAX

JAX_SCRIPT = r"""
import json, time
import jax
jax.config.update("jax_enable_x64", True)
import keras, numpy as np
from keras import ops
assert keras.backend.backend() == "jax"
from pde_zoo.ode import odeint
from pde_zoo.layers import ODEBlock, PDEField

out = {}
class Holder: pass
h = Holder(); h.rate = keras.Variable(-1.0, dtype="float64")
f = lambda t, y: h.rate * y  # a variable the fingerprint cannot see: found while tracing
y0 = np.ones(3)
out["first"] = float(odeint(f, y0, [0.0, 1.0])[-1, 0])
h.rate.assign(-2.0)
out["after_assign"] = float(odeint(f, y0, [0.0, 1.0])[-1, 0])
class Calls:  # an object: keyed by identity (a list would be keyed by its values)
    n = 0
calls = Calls()
def g(t, y):
    calls.n += 1
    return -50.0 * (y - ops.cos(t))
for method in ("dopri5", "bosh3", "adaptive_heun"):
    ys, stats = odeint(g, np.zeros(4), [0.0, 1.0], method=method, rtol=1e-5, atol=1e-7, return_stats=True)
    n = calls.n
    start = time.perf_counter()
    ys2, stats2 = odeint(g, np.zeros(4), [0.0, 1.0], method=method, rtol=1e-5, atol=1e-7, return_stats=True)
    out[method + "_cached_s"] = time.perf_counter() - start
    out[method + "_retraced"] = calls.n - n
    eager, stats_eager = odeint(g, np.zeros(4), [0.0, 1.0], method=method, rtol=1e-5, atol=1e-7, return_stats=True, compile=False)
    out[method + "_diff"] = float(np.abs(np.asarray(ys) - np.asarray(eager)).max())
    out[method + "_stats"] = [stats.numpy(), stats_eager.numpy()]
    exact = 2500 * (50 * np.cos(1.0) + np.sin(1.0)) / 2501 / 50 - 2500 / 2501 * np.exp(-50.0)
    out[method + "_err"] = float(np.abs(np.asarray(ys)[-1] - exact).max())
try:
    odeint(g, np.array([np.nan, 0.0]), [0.0, 1.0])
    out["nan_eager"] = "no error"
except ValueError as e:
    out["nan_eager"] = str(e)
start = time.perf_counter()
try:
    jax.jit(lambda y: odeint(lambda t, y: -y, y, [0.0, 1.0], max_steps=10**6))(np.array([np.nan, 0.0])).block_until_ready()
    out["nan_jit"] = "no error"
except Exception as e:
    out["nan_jit"] = str(e)
out["nan_jit_s"] = time.perf_counter() - start
stats = jax.jit(lambda y: odeint(lambda t, y: -y, y, [0.0, 1.0], return_stats=True)[1])(np.ones(2))  # a pytree
out["jit_stats"] = [type(stats).__name__, stats.numpy()]
block = ODEBlock(PDEField(pieces=2, horizon=1.0, activation=None), t1=1.0, method="rk4", step_size=0.1)
x = np.random.default_rng(0).random((2, 6, 6, 1))
a = np.asarray(block(x)); b = np.asarray(block(x)); stats = block.last_stats
model = keras.Sequential([keras.Input((6, 6, 1)), block])
out["block"] = [float(np.abs(a - b).max()), float(np.abs(model.predict(x, verbose=0) - a).max()), stats]
print(json.dumps(out))
"""


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_eager_jax_is_jitted_and_reads_variables_at_run_time():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose([got["first"], got["after_assign"]], np.exp([-1.0, -2.0]), rtol=1e-6)
    for method in ("dopri5", "bosh3", "adaptive_heun"):
        assert got[method + "_retraced"] == 0 and got[method + "_cached_s"] < 1.0
        assert got[method + "_diff"] < 1e-12 and got[method + "_stats"][0] == got[method + "_stats"][1]
        assert got[method + "_err"] < 1e-4
    assert "initial state y0 is not finite" in got["nan_eager"]
    assert "not finite" in got["nan_jit"] and got["nan_jit_s"] < 30
    assert got["jit_stats"][0] == "ODEStats" and got["jit_stats"][1]["nfe"] == 2 + 6 * got["jit_stats"][1]["steps"]
    diff_calls, diff_predict, stats = got["block"]
    assert diff_calls == 0 and diff_predict < 1e-6 and stats == {"nfe": 40, "steps": 10, "rejected": 0}
