"""Layer numerics against the NumPy reference (tests/numpy_reference.py), plus basic checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import randomize_weights
from numpy_reference import conv_step, pde_step
from pde_zoo.layers import COEFFICIENT_NAMES, PDE1Block, PDE2Block, PDEBlock, ResidualConvBlock, StencilStack

PDE_BLOCKS = [(PDE1Block, 1.0), (PDE2Block, -0.125)]


@pytest.mark.parametrize("block_class, drift", PDE_BLOCKS)
@pytest.mark.parametrize("channels", [1, 3])
def test_pde_block_matches_numpy(block_class, drift, channels, rng):
    # Random coefficients of both signs; pre-ReLU values are checked too (relu=False path
    # via a large positive gamma shift would change the maths, so compare the full block and
    # then the linear part through the stencil) -- the image includes its boundary.
    x = rng.random((3, 9, 11, channels)).astype("float32")
    block = block_class()
    block.build(x.shape)
    randomize_weights(block, rng)
    coeffs = block.coefficients()
    expected = pde_step(x, *(coeffs[n] for n in COEFFICIENT_NAMES), drift=drift)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, atol=1e-5)
    assert (expected == 0).any() and (expected > 0).any(), "test input must exercise both ReLU branches"


@pytest.mark.parametrize("block_class, drift", PDE_BLOCKS)
@pytest.mark.parametrize("term, axis", [("beta", 2), ("rho", 1), ("alpha", 2), ("sigma", 1)])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_each_term_alone_moves_the_right_way(block_class, drift, term, axis, sign):
    """One term at a time on a delta at the image edge and in the interior: axis, sign and boundary."""
    for position in [(0, 0), (4, 5), (6, 6)]:
        x = np.zeros((1, 7, 7, 1), "float32")
        x[0, position[0], position[1], 0] = 1.0
        block = block_class()
        block.build(x.shape)
        block.set_coefficients(alpha=0.0, beta=0.0, sigma=0.0, rho=0.0, gamma=0.0)
        block.set_coefficients(**{term: sign * 0.7})
        values = {n: 0.0 for n in COEFFICIENT_NAMES} | {term: sign * 0.7}
        expected = pde_step(x, *(values[n] for n in COEFFICIENT_NAMES), drift=drift)
        got = keras.ops.convert_to_numpy(block(x))
        np.testing.assert_allclose(got, expected, atol=1e-6)
        # Only neighbours along `axis` change.
        other = 1 if axis == 2 else 2
        i, j = position
        changed = np.argwhere(np.abs(got[0, ..., 0] - x[0, ..., 0]) > 1e-7)
        assert all((r == i) if other == 1 else (c == j) for r, c in changed)


def test_dx_sign_convention():
    """β Dx with Dx ψ[i,j] = (ψ[i,j+1] - ψ[i,j-1])/2: on ψ = j (a ramp to the right), Dx = 1 in the interior."""
    x = np.tile(np.arange(8, dtype="float32"), (8, 1))[None, ..., None] + 1.0
    block = PDE1Block()
    block.build(x.shape)
    block.set_coefficients(alpha=0.0, sigma=0.0, beta=0.25, rho=0.0, gamma=0.0)
    out = keras.ops.convert_to_numpy(block(x))[0, ..., 0]
    psi = x[0, ..., 0]
    np.testing.assert_allclose(out[2:-2, 1:-1], psi[2:-2, 1:-1] + 0.25, atol=1e-6)
    # Thesis eq 24 order [ψ(x+1), ψ(x), ψ(x-1)] with weights [1/2, 0, -1/2] is the same operator.
    thesis = 0.5 * psi[3, 2:] + 0.0 * psi[3, 1:-1] - 0.5 * psi[3, :-2]
    np.testing.assert_allclose(out[3, 1:-1] - psi[3, 1:-1], 0.25 * thesis, atol=1e-6)


def test_one_dimensional_kernel_of_eq_24(rng):
    """With σ = ρ = 0 the update along a row is eq 24: f = [(α²+β)/2, γ-α², (α²-β)/2] on [ψ(x+1), ψ(x), ψ(x-1)]."""
    alpha, beta, gamma = 0.8, -0.3, 0.2
    row = rng.random(12).astype("float32")
    x = row[None, None, :, None]
    block = PDE1Block()
    block.build(x.shape)
    block.set_coefficients(alpha=alpha, beta=beta, sigma=0.0, rho=0.0, gamma=gamma)
    f = np.array([(alpha**2 + beta) / 2, gamma - alpha**2, (alpha**2 - beta) / 2])
    padded = np.concatenate([[0.0], row, [0.0]])
    expected = np.array([row[k] + f @ [padded[k + 2], padded[k + 1], padded[k]] for k in range(12)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x))[0, 0, :, 0], np.maximum(expected, 0), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2])
def test_residual_conv_block_matches_numpy(channels, rng):
    x = rng.random((2, 8, 6, channels)).astype("float32")
    block = ResidualConvBlock()
    block.build(x.shape)
    randomize_weights(block, rng)
    expected = conv_step(x, keras.ops.convert_to_numpy(block.kernel), keras.ops.convert_to_numpy(block.bias))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, atol=1e-5)


@pytest.mark.parametrize("block_class", [PDE1Block, PDE2Block, ResidualConvBlock])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    "implementation, parallel, batch",
    [
        ("standard", 1, 5),
        ("standard", 2, 5),
        ("standard", 3, 2),  # one chain gets no images
        ("native", 1, 5),
        ("native", 3, 40),  # several lane groups, shared by three threads, plus padding lanes
    ],
)
def test_fast_stack_equals_block_by_block(block_class, channels, implementation, parallel, batch, rng, monkeypatch):
    """Both fused TF paths (the C++ op; standard ops on a batch-as-channels layout in parallel
    chains), with their hand-written gradients, == the keras.ops path, values and gradients
    (input and weights)."""
    from pde_zoo.layers import _native, _tf_stencil

    if implementation == "native":
        if _native.stencil_ops() is None:
            pytest.skip("no C++ compiler here: the native op is not built")
        monkeypatch.setattr(_tf_stencil, "worker_threads", lambda: parallel)
        calls = []
        monkeypatch.setattr(_tf_stencil, "_native_stack", lambda *a, f=_tf_stencil._native_stack: calls.append(1) or f(*a))
    else:
        monkeypatch.setattr(_tf_stencil, "parallel_chains", lambda: parallel)
        monkeypatch.setattr(_tf_stencil, "stencil_ops", lambda: None)
    blocks = [block_class(name=f"b{t}") for t in range(4)]
    stack = StencilStack(blocks)
    x = tf.constant(rng.random((batch, 7, 9, channels)).astype("float32"))
    stack.build(x.shape)
    for b in blocks:
        randomize_weights(b, rng, 0.3)
    assert stack.uses_fast_path == (block_class is not ResidualConvBlock or channels == 1)

    def loss_and_grads(forward):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
            loss = tf.reduce_sum(tf.sin(3 * y))
        return y, tape.gradient(loss, [x] + stack.trainable_weights)

    def sequential(h):
        for b in blocks:
            h = b(h)
        return h

    y_fast, g_fast = loss_and_grads(lambda h: stack(h, training=True))  # the C++ op runs in training
    y_ref, g_ref = loss_and_grads(sequential)
    if implementation == "native":
        assert bool(calls) == stack.uses_fast_path
    np.testing.assert_allclose(y_fast.numpy(), y_ref.numpy(), atol=1e-5)
    for a, b in zip(g_fast, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def test_initialisation_is_near_identity():
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    pde = PDE2Block()
    conv = ResidualConvBlock()
    assert np.abs(keras.ops.convert_to_numpy(conv(x)) - x).max() == 0.0
    assert np.abs(keras.ops.convert_to_numpy(pde(x)) - x).max() < 0.05
    assert pde.coefficients()["alpha"] != 0 and pde.coefficients()["sigma"] != 0


def test_coefficients_shapes_and_setter():
    scalar = PDE1Block()
    scalar.build((None, 5, 5, 1))
    assert all(v.shape == () for v in scalar.coefficients().values())
    per_channel = PDE2Block()
    per_channel.build((None, 5, 5, 4))
    assert all(v.shape == (4,) for v in per_channel.coefficients().values())
    per_channel.set_coefficients(gamma=[1, 2, 3, 4], beta=0.5)
    np.testing.assert_array_equal(per_channel.coefficients()["gamma"], [1, 2, 3, 4])
    np.testing.assert_array_equal(per_channel.coefficients()["beta"], [0.5] * 4)
    assert [w.path.split("/")[-1] for w in per_channel.weights] == list(COEFFICIENT_NAMES)
    with pytest.raises(ValueError, match="Unknown coefficient"):
        per_channel.set_coefficients(delta=1.0)
    with pytest.raises(ValueError, match="build"):
        PDE1Block().set_coefficients(alpha=1.0)


@pytest.mark.parametrize("block_class", [PDE1Block, PDE2Block, ResidualConvBlock])
def test_bad_input_rank(block_class):
    with pytest.raises(ValueError, match="NHWC"):
        block_class()(np.zeros((28, 28), "float32"))


@pytest.mark.parametrize("layer", [PDE1Block(beta_initializer="ones"), PDE2Block(), PDEBlock(drift_scale=0.3), ResidualConvBlock(), StencilStack([PDE2Block(name="a"), PDE1Block(name="b")])])
def test_config_round_trip(layer, rng):
    x = rng.random((2, 6, 6, 1)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    clone = type(layer).from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), y)
