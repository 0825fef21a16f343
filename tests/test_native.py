"""The C++ ops' build and fallback, and the SavedModel export that must not need them."""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from pde_zoo.layers import _native


def test_build_reports_a_missing_compiler(tmp_path, monkeypatch):
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
        _native.build(cache=tmp_path)


def test_build_reports_compiler_errors_and_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match=r"compiling the C\+\+ ops \(\w+ kernel\) failed"):
        _native.build(cache=tmp_path, compiler="false")  # a "compiler" that always fails
    assert list(tmp_path.iterdir()) == []


def test_unbuildable_op_warns_once_and_falls_back(monkeypatch):
    def fail():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(_native, "build", fail)
    with pytest.warns(RuntimeWarning, match="using standard TF ops"):
        assert _native.stencil_ops.__wrapped__() is None
    monkeypatch.setenv("PDE_ZOO_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.stencil_ops.__wrapped__() is None


def test_the_ops_load_wherever_a_compiler_is_found():
    """The other tests here skip where the ops are unavailable; with a compiler at hand that would hide a
    source that no longer builds or loads, so here it fails."""
    if _native._compiler() is None or os.environ.get("PDE_ZOO_NATIVE") == "0":
        pytest.skip("no C++ compiler here, or the C++ ops switched off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning names the build or load error
        assert _native.stencil_ops.__wrapped__() is not None


def _traced_op_types(model, training):
    """The op types of `model`'s forward graph, traced now (for any batch size)."""
    traced = tf.function(lambda x: model(x, training=training)).get_concrete_function(tf.TensorSpec((None, 28, 28, 1)))
    return {op.type for op in traced.graph.get_operations()}


def test_only_training_graphs_use_the_op():
    """The C++ op is a training kernel; inference graphs (and so every SavedModel) never hold it."""
    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    model = pde_zoo.build("pde2", 3)
    assert "PdeZooStencilStack" in _traced_op_types(model, training=True)
    for training in (False, None):
        assert not any(op.startswith("PdeZoo") for op in _traced_op_types(model, training))


@pytest.mark.parametrize("name, options, fused_ops", [
    ("pde2", {"depth": 3}, {"PdeZooStencilStack"}),
    ("pdenet", {"depth": 4, "channels": 8}, {"PdeZooSystemStack", "PdeZooGroupNorm"}),
])
def test_the_scores_train_takes_run_the_forward_ops(name, options, fused_ops):
    """Within `fused_evaluation` (where `training.fit_epochs` scores each epoch) inference graphs run the C++
    forward ops, with the standard ops' outputs; outside it no inference graph holds them."""
    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    model = pde_zoo.build(name, **options)
    x = tf.constant(np.random.default_rng(3).random((5, 28, 28, 1), dtype=np.float32))
    standard = model(x, training=False)
    with _native.fused_evaluation():
        assert fused_ops <= _traced_op_types(model, training=False)
        fused = tf.function(lambda x: model(x, training=False))(x)
    np.testing.assert_allclose(fused.numpy(), standard.numpy(), rtol=1e-5, atol=1e-6)
    assert not any(op.startswith("PdeZoo") for op in _traced_op_types(model, training=False))


def test_a_float64_stack_warns_once_and_trains_on_standard_ops():
    """The C++ op is float32: a float64 stack says so once, at build, and its training graph holds standard ops."""
    from pde_zoo.layers import PDE2Block, StencilStack

    _native.warn_not_float32.cache_clear()
    with pytest.warns(RuntimeWarning, match="stencil stack .* runs float32 only; a layer computing in float64"):
        stack = StencilStack([PDE2Block(dtype="float64"), PDE2Block(dtype="float64")], dtype="float64")
        stack.build((None, 6, 6, 1))
    x = tf.constant(np.random.default_rng(0).random((2, 6, 6, 1)))
    traced = tf.function(lambda x: stack(x, training=True)).get_concrete_function(x)
    assert not any(op.type.startswith("PdeZoo") for op in traced.graph.get_operations())
    np.testing.assert_allclose(stack(x, training=True).numpy(), stack(x, training=False).numpy(), rtol=1e-12)


def test_xla_compiled_step_falls_back_to_standard_ops():
    """Under jit_compile=True (XLA cannot compile a custom op) the stack uses standard ops: same numbers."""
    model = pde_zoo.build("pde2", 2)
    images = tf.constant(np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32"))

    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        return [loss] + tape.gradient(loss, model.trainable_weights)

    for a, b in zip(tf.function(loss_and_grads, jit_compile=True)(images), tf.function(loss_and_grads)(images)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_op_rejects_mismatched_shapes():
    ops = _native.stencil_ops()
    if ops is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    x, taps, offsets = tf.zeros([3, 4, 4, 2]), tf.zeros([2, 9, 2]), tf.zeros([2, 2])
    assert ops.pde_zoo_stencil_stack(x, taps, offsets)[0].shape == (3, 4, 4, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="channel or block counts"):
        ops.pde_zoo_stencil_stack(x, tf.zeros([2, 9, 3]), offsets)
    with pytest.raises(tf.errors.InvalidArgumentError, match="channel or block counts"):
        ops.pde_zoo_stencil_stack(x, taps, tf.zeros([3, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="taps \\(D, 9, C\\)"):
        ops.pde_zoo_stencil_stack(x, tf.zeros([2, 8, 2]), offsets)
    none = tf.zeros([0, 0, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream"):
        ops.pde_zoo_stencil_stack_grad(x, taps, offsets, tf.zeros([3, 4, 5, 2]), none)
    with pytest.raises(tf.errors.InvalidArgumentError, match="checkpoints has shape \\[1,2,3\\]"):
        ops.pde_zoo_stencil_stack_grad(x, taps, offsets, tf.zeros([3, 4, 4, 2]), tf.zeros([1, 2, 3]))


@pytest.mark.parametrize("corners", [False, True])
@pytest.mark.parametrize("height, width, depth", [(28, 28, 60), (5, 80, 7)])
def test_a_stack_split_into_segments_equals_the_standard_ops(corners, height, width, depth):
    """60 blocks of 28x28 (~3.6 MB of states per lane group with AVX-512, ~0.9 MB with SSE: more than the
    backward op's cache budget, so it keeps checkpoints and recomputes segments; several blocks per sweep, and a
    last wavefront shorter than the others), 7 blocks of 5x80 (a wavefront over few, wide rows), and 7 x 3 = 21
    lanes (a padded lane group): values and gradients equal the standard TF ops'."""
    from pde_zoo.layers._tf_stencil import stencil_stack

    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    rng = np.random.default_rng(2)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], "float32")[None, :, :, None]
    taps = np.where(cross > 0, 0.1, 0.02) + rng.normal(scale=0.03, size=(depth, 3, 3, 3))  # sums ~1: the states neither die nor blow up
    taps[:, 1, 1] += 0.5
    taps = taps.astype("float32") * (1 if corners else cross)
    inputs = [tf.constant(rng.random((7, height, width, 3), dtype=np.float32)), tf.constant(taps),
              tf.constant(rng.normal(scale=0.01, size=(depth, 3)).astype("float32"))]
    results = []
    for native in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = stencil_stack(*inputs, five_point=not corners, native=native)
            loss = tf.reduce_sum(y * y)
        results.append([y] + tape.gradient(loss, inputs))
    if not corners:  # the five-point kernel reports the corner taps' gradient as zero
        results[1][2] = results[1][2] * cross
    for a, b in zip(*results):
        scale = float(tf.reduce_max(tf.abs(b)))
        assert scale > 0 and float(tf.reduce_max(tf.abs(a - b))) <= 1e-4 * scale


@pytest.mark.parametrize("height, width, depth", [(28, 28, 60), (5, 80, 7), (6, 6, 1)])
def test_the_backward_op_gives_the_same_gradients_with_or_without_the_forward_ops_checkpoints(height, width, depth):
    """Training steps hand the forward op's checkpoints (every S-th state) to the backward op; without them
    (`tf.gradients` outside a tape) it makes them itself. Same sums in the same order: bit-identical."""
    ops = _native.stencil_ops()
    if ops is None:
        pytest.skip("no C++ compiler here: the native op is not built")
    rng = np.random.default_rng(4)
    x = tf.constant(rng.random((5, height, width, 3), dtype=np.float32))
    taps = tf.constant((0.2 + rng.normal(scale=0.1, size=(depth, 9, 3))).astype("float32"))
    offsets = tf.constant(rng.normal(scale=0.01, size=(depth, 3)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(5, height, width, 3)).astype("float32"))
    y, checkpoints = ops.pde_zoo_stencil_stack(x, taps, offsets, keep_checkpoints=True)
    y_alone, none = ops.pde_zoo_stencil_stack(x, taps, offsets)
    assert none.shape == (0, 0, 0) and checkpoints.shape[0] == 1 and np.array_equal(y, y_alone)  # 15 lanes: one group
    given = ops.pde_zoo_stencil_stack_grad(x, taps, offsets, upstream, checkpoints)
    made = ops.pde_zoo_stencil_stack_grad(x, taps, offsets, upstream, none)
    for a, b in zip(given, made):
        assert np.abs(b.numpy()).max() > 0 and np.array_equal(a.numpy(), b.numpy())


AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "sse2"}


def test_the_kernel_follows_the_cpu_and_a_forced_one_is_checked(monkeypatch):
    monkeypatch.delenv(_native.KERNEL_ENV, raising=False)
    assert _native.kernel(AVX512) == "avx512"
    assert _native.kernel({"avx2", "fma", "avx512f"}) == "avx2"  # AVX-512 F alone (no BW/DQ/VL) is not enough
    assert _native.kernel({"avx2", "fma"}) == "avx2"
    assert _native.kernel({"sse2"}) == _native.kernel(set()) == "generic"
    monkeypatch.setenv(_native.KERNEL_ENV, "avx2")
    assert _native.kernel(AVX512) == "avx2"
    with pytest.raises(ValueError, match=r"'avx2' needs CPU features this machine lacks: avx2, fma"):
        _native.kernel({"sse2"})
    monkeypatch.setenv(_native.KERNEL_ENV, "sse9")
    with pytest.raises(ValueError, match="is not a kernel; choose one of avx512, avx2, generic"):
        _native.kernel(AVX512)


KERNEL_CHECK = """
import json, os
import numpy as np, tensorflow as tf
from pde_zoo.layers import _native
from pde_zoo.layers._tf_stencil import stencil_stack
assert _native.stencil_ops() is not None
rng = np.random.default_rng(0)
x = tf.constant(rng.random((5, 11, 9, 3), dtype=np.float32))
taps = tf.constant(rng.normal(scale=0.3, size=(4, 3, 3, 3)).astype("float32"))
offsets = tf.constant(rng.normal(scale=0.1, size=(4, 3)).astype("float32"))
out = {"kernel": _native.kernel(), "library": str(_native.build())}
deep_taps = 0.05 + rng.normal(scale=0.02, size=(100, 3, 3, 3))  # taps summing to ~1: states neither die nor blow up
deep_taps[:, 1, 1] += 0.55
deep = [tf.constant(rng.random((2, 28, 28, 3), dtype=np.float32)),  # 100 blocks: split into segments by every kernel
        tf.constant(deep_taps.astype("float32")), tf.constant(rng.normal(scale=0.01, size=(100, 3)).astype("float32"))]
results = []
for native in (True, False):
    with tf.GradientTape() as tape:
        tape.watch(deep)
        y = stencil_stack(*deep, native=native)
        loss = tf.reduce_sum(y * y)
    results.append([y] + tape.gradient(loss, deep))
out["max_error_deep"] = max(float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b))) for a, b in zip(*results))
cross = tf.constant([[0, 1, 0], [1, 1, 1], [0, 1, 0]], tf.float32)[None, :, :, None]
for five_point in (False, True):
    results = []
    if five_point:  # a five-point stack has zero corners (PDE blocks), which the five-point kernel never reads
        taps = taps * cross
    for native in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([x, taps, offsets])
            y = stencil_stack(x, taps, offsets, five_point=five_point, native=native)
            loss = tf.reduce_sum(y * y)
        results.append([y] + tape.gradient(loss, [x, taps, offsets]))
    if five_point:  # ... and reports their gradient as zero
        results[1][2] = results[1][2] * cross
    out[f"max_error_five_point_{five_point}"] = max(
        float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b))) for a, b in zip(*results))  # relative to the largest
from pde_zoo.layers import PDESystemBlock, StencilStack
from pde_zoo.layers import GroupNormalization
for channels in (5, 16, 32):  # the multi-channel op (system_step_op.cc): Eigen path, register-tiled kernels
    stack = StencilStack([PDESystemBlock(stable=True, time_step=0.5, name="a"), PDESystemBlock(name="b")])
    stack.build((None, None, None, channels))
    for weight in stack.weights:
        weight.assign(rng.normal(scale=0.4, size=weight.shape).astype("float32"))
    states = tf.constant(rng.normal(size=(3, 6, 7, channels)).astype("float32"))
    results = []
    for training in (True, False):  # the fused op in training, the keras.ops path otherwise
        with tf.GradientTape() as tape:
            tape.watch(states)
            y = stack(states, training=training)
            loss = tf.reduce_sum(y * y)
        results.append([y] + tape.gradient(loss, [states] + stack.trainable_weights))
    out[f"max_error_system_stack_{channels}"] = max(
        float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b))) for a, b in zip(*results))
norm, results = GroupNormalization(groups=4), []  # group_norm_op.cc against Keras's ops
for training in (True, False):
    with tf.GradientTape() as tape:
        tape.watch(states)
        y = norm(states, training=training)
        loss = tf.reduce_sum(y * y * y)
    results.append([y] + tape.gradient(loss, [states] + norm.trainable_weights))
out["max_error_group_norm"] = max(float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b))) for a, b in zip(*results))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow  # compiles every kernel this CPU can run (~45 s each)
def test_every_kernel_this_cpu_runs_equals_the_standard_ops(tmp_path):
    """Each kernel this machine supports, forced by $PDE_ZOO_KERNEL in its own process (a process loads one
    op library), builds and gives the standard TF ops' values and gradients: the stencil stack with corners
    on and off, a stack of two multi-channel system steps (Eigen and register-tiled paths) and the group normalization."""
    import json
    import os
    import subprocess
    import sys

    runnable = [name for name, (needs, _) in _native.KERNELS.items() if needs <= _native.cpu_flags()]
    assert "generic" in runnable and runnable[0] == _native.kernel()
    for name in runnable:
        env = {**os.environ, _native.KERNEL_ENV: name, "PDE_ZOO_NATIVE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout.split("RESULT ", 1)[1])
        assert out["kernel"] == name and f"pde_zoo_ops-{name}-" in out["library"]
        assert out["max_error_five_point_False"] < 1e-5 and out["max_error_five_point_True"] < 1e-5, out
        assert out["max_error_deep"] < 1e-4, out  # 100 blocks of float32 rounding
        assert all(out[f"max_error_system_stack_{c}"] < 1e-5 for c in (5, 16, 32)) and out["max_error_group_norm"] < 1e-5, out
