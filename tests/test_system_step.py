"""The fused multi-channel PDE-system steps (the C++ ops of system_step_op.cc: one block, or a StencilStack of
them in one op each way) against the keras.ops path."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from layer_gradients import values_gradients_and_op_types
from pde_zoo.layers import PDESystemBlock, _native


@pytest.fixture(scope="module", autouse=True)
def native_ops():
    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")


def _random_block(channels, rng, **options):
    """A built PDESystemBlock with every raw weight random (drifts, mixing and bias of both signs)."""
    block = PDESystemBlock(**options)
    block.build((None, None, None, channels))
    for weight in block.field.weights:
        weight.assign(rng.normal(scale=0.4, size=weight.shape).astype(weight.dtype))
    return block


@pytest.mark.parametrize(
    "shape, options",
    [
        ((3, 9, 6, 12), {}),
        ((2, 28, 28, 32), {"drift_scale": -0.125}),
        ((4, 7, 7, 48), {"stable": True}),
        ((2, 5, 11, 24), {"stable": True, "time_step": 0.3}),
        ((1, 1, 1, 1), {"time_step": 0.5}),
        ((5, 2, 3, 3), {}),
        ((2, 3, 9, 16), {}),
        ((2, 6, 5, 64), {"stable": True}),
        ((3, 4, 4, 128), {}),
    ],
)
def test_fused_step_equals_the_keras_ops_path(shape, options):
    """Values and the gradients of the input and of every raw weight, random weights, at 1e-5
    (relative to each tensor's largest entry); the training graph holds the op, the other none. The
    channel counts cover the register-tiled kernels (C a multiple of the SIMD width, up to 4 vectors:
    16-64 with AVX-512, 8-32 with AVX2) and the Eigen path (12, 24, 1, 3, 128 with AVX-512)."""
    rng = np.random.default_rng(sum(shape))
    block = _random_block(shape[-1], rng, **options)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    fused, fused_ops = values_gradients_and_op_types(block, x, training=True)
    reference, reference_ops = values_gradients_and_op_types(block, x, training=False)
    assert "PdeZooSystemStack" in fused_ops and "PdeZooSystemStackGrad" in fused_ops
    assert not any(op.startswith("PdeZoo") for op in reference_ops)
    if fused[0].size >= 16:  # both sides of the ReLU are exercised
        assert (fused[0] > 0).any() and (fused[0] == 0).any()
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_fused_gradients_are_deterministic():
    """Each thread sums the weight gradients of its own contiguous images, added in order: repeat runs
    give the same bits."""
    rng = np.random.default_rng(3)
    block = _random_block(16, rng)
    x = tf.constant(rng.normal(size=(9, 12, 12, 16)).astype("float32"))
    first, _ = values_gradients_and_op_types(block, x, training=True)
    for _ in range(3):
        again, _ = values_gradients_and_op_types(block, x, training=True)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_other_dtypes_warn_once_and_run_the_standard_path(dtype):
    """The op runs float32 only: a block computing in another dtype says so once, at build, and trains on
    the keras.ops path (its training graph holds no C++ op), with the same numbers."""
    _native.warn_not_float32.cache_clear()
    rng = np.random.default_rng(4)
    with pytest.warns(RuntimeWarning, match=f"runs float32 only; a layer computing in {dtype}"):
        block = _random_block(6, rng, dtype=dtype)
    assert block.field.alpha.dtype == dtype  # the block's dtype reaches its field's weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: a second block of the same dtype is silent
        _random_block(6, rng, dtype=dtype)
    x = tf.constant(rng.normal(size=(2, 5, 5, 6)).astype(dtype))
    trained, ops = values_gradients_and_op_types(block, x, training=True)
    inferred, _ = values_gradients_and_op_types(block, x, training=False)
    assert not any(op.startswith("PdeZoo") for op in ops)
    for a, b in zip(trained, inferred):
        np.testing.assert_array_equal(a, b)


def test_pdenet_trains_through_the_fused_op_and_exports_standard_ops(tmp_path):
    """A pdenet training step runs the op; its inference graph (what SavedModels hold) does not; the
    training step's loss and gradients equal those of the keras.ops path (PDE_ZOO_NATIVE=0 equivalent).
    The layers outside the stages keep their initial weights, drawn from a fixed seed: drawn anew each run,
    1 draw in 30 (seed 5) put the two paths' stem-kernel gradients 115x the tolerance apart (the others
    within 0.2x), which made this test fail at random. That draw has a ReLU input at zero up to rounding,
    where either side is right: scaling the images by 1 +- 1e-6 (the stem's GroupNorm undoes the scale)
    brings the two within 0.1x."""
    keras.utils.set_random_seed(0)
    model = pde_zoo.build("pdenet", 4, channels=8)
    rng = np.random.default_rng(5)
    for weight in model.trainable_weights:
        if "stage" in weight.path:
            weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    images = tf.constant(rng.random((3, 28, 28, 1)).astype("float32"))
    labels = tf.constant([1, 4, 7])

    def loss_and_grads(training):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                loss = keras.losses.sparse_categorical_crossentropy(labels, model(images, training=training))
            return [tf.reduce_sum(loss)] + tape.gradient(loss, model.trainable_weights)

        types = {op.type for op in run.get_concrete_function().graph.get_operations()}
        return [t.numpy() for t in run()], types

    fused, fused_types = loss_and_grads(True)
    reference, reference_types = loss_and_grads(False)  # GroupNorm has no batch statistics: same function
    assert "PdeZooSystemStack" in fused_types and not any(t.startswith("PdeZoo") for t in reference_types)
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize(
    "shape, block_options",
    [
        ((3, 9, 6, 12), [{}, {"stable": True}, {"time_step": 0.5}]),  # Eigen path (12 channels)
        ((2, 28, 28, 32), [{"drift_scale": -0.125}, {}, {"stable": True, "time_step": 0.3}, {}]),  # tiled, chunks of one image
        ((5, 14, 14, 64), [{}, {"stable": True}]),  # tiled, several images per chunk
        ((7, 7, 7, 128), [{}, {}, {}]),  # Eigen path, a chunk split between ranges
        ((2, 5, 4, 16), [{"time_step": 0.25}]),
    ],
)
def test_a_stack_of_system_blocks_runs_one_op_equal_to_its_blocks(shape, block_options):
    """A StencilStack of PDESystemBlocks (each block its own options) trains through one fused op each way,
    whose values and gradients (input and every raw weight of every block) equal the blocks' keras.ops
    steps one after another at 1e-5."""
    from pde_zoo.layers import StencilStack

    rng = np.random.default_rng(sum(shape) + len(block_options))
    blocks = [_random_block(shape[-1], rng, name=f"block_{d}", **options) for d, options in enumerate(block_options)]
    stack = StencilStack(blocks)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    fused, fused_ops = values_gradients_and_op_types(stack, x, training=True)
    reference, reference_ops = values_gradients_and_op_types(stack, x, training=False)
    assert "PdeZooSystemStack" in fused_ops and "PdeZooSystemStackGrad" in fused_ops
    assert not any(op.startswith("PdeZoo") for op in reference_ops)
    assert len(fused) == 2 + 6 * len(blocks)  # y, dL/dx, six raw weights per block
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_op_rejects_mismatched_shapes():
    ops = _native.stencil_ops()
    x = tf.zeros([2, 4, 4, 5])
    taps, mixing, bias = tf.zeros([2, 9, 5]), tf.zeros([2, 5, 5]), tf.zeros([2, 5])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"taps \(D, 9, C\)"):
        ops.pde_zoo_system_stack(x, tf.zeros([2, 8, 5]), mixing, bias)
    with pytest.raises(tf.errors.InvalidArgumentError, match="disagree on the channel count"):
        ops.pde_zoo_system_stack(x, taps, tf.zeros([2, 4, 4]), bias)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the same number D >= 1 of blocks"):
        ops.pde_zoo_system_stack(x, taps, tf.zeros([3, 5, 5]), bias)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the same number D >= 1 of blocks"):
        ops.pde_zoo_system_stack(x, tf.zeros([0, 9, 5]), tf.zeros([0, 5, 5]), tf.zeros([0, 5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bias must have shape \(D, C\)"):
        ops.pde_zoo_system_stack(x, taps, mixing, tf.zeros([5]))
    states = tf.zeros([1, 2, 4, 4, 5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="outputs and upstream must have the shape"):
        ops.pde_zoo_system_stack_grad(x, taps, mixing, x, states, tf.zeros([2, 4, 3, 5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"states \(D - 1, N, H, W, C\)"):
        ops.pde_zoo_system_stack_grad(x, taps, mixing, x, tf.zeros([2, 2, 4, 4, 5]), x)
