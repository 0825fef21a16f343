"""The zoo's GroupNormalization (a fused C++ kernel in TF training steps) against Keras's layer."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from layer_gradients import values_gradients_and_op_types
from pde_zoo.layers import GroupNormalization, _native


@pytest.fixture(scope="module", autouse=True)
def native_ops():
    if _native.stencil_ops() is None:
        pytest.skip("no C++ compiler here: the native op is not built")


@pytest.mark.parametrize(
    "shape, options",
    [
        ((4, 28, 28, 32), {"groups": 8}),
        ((3, 7, 7, 64), {"groups": 32}),
        ((2, 5, 6, 12), {"groups": 4, "center": False}),
        ((2, 5, 6, 12), {"groups": 3, "scale": False}),
        ((3, 10, 6), {"groups": 2}),
    ],
)
def test_equals_keras_group_normalization(shape, options):
    """Values and gradients (input, γ, β) equal Keras's layer with the same weights at 1e-5, inputs far
    from zero mean (the variance is centred, not E[x²] − E[x]²)."""
    rng = np.random.default_rng(sum(shape))
    ours, keras_layer = GroupNormalization(**options), keras.layers.GroupNormalization(**options)
    for layer in (ours, keras_layer):
        layer.build(shape)
    for a, b in zip(ours.weights, keras_layer.weights):
        value = rng.normal(loc=1.0, scale=0.5, size=a.shape).astype("float32")
        a.assign(value), b.assign(value)
    x = tf.constant((20.0 + 3.0 * rng.normal(size=shape)).astype("float32"))
    fused, types = values_gradients_and_op_types(ours, x, training=True)
    reference, _ = values_gradients_and_op_types(keras_layer, x, training=True)
    assert "PdeZooGroupNorm" in types and "PdeZooGroupNormGrad" in types
    assert not any(t.startswith("PdeZoo") for t in values_gradients_and_op_types(ours, x, training=False)[1])
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_one_value_per_group_gives_beta_exactly():
    """A group of one value normalizes to 0: y = β, dL/dx = 0, dL/dγ = 0, dL/dβ = Σ u (analytic; Keras's
    x·inv + (β − μ·inv) loses ~1e-5 to cancellation here)."""
    layer = GroupNormalization(groups=8, epsilon=1e-3)
    layer.build((1, 1, 1, 8))
    layer.beta.assign(np.linspace(-1, 1, 8).astype("float32"))
    x = tf.constant(np.random.default_rng(0).normal(loc=20.0, size=(3, 1, 1, 8)).astype("float32"))
    (y, d_x, d_gamma, d_beta), _ = values_gradients_and_op_types(layer, x, training=True)
    upstream = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    np.testing.assert_array_equal(y, np.broadcast_to(layer.beta.numpy(), y.shape))
    np.testing.assert_allclose(d_x, 0.0, atol=1e-6)
    np.testing.assert_allclose(d_gamma, 0.0, atol=1e-6)
    np.testing.assert_allclose(d_beta, upstream.sum(axis=(0, 1, 2)), rtol=1e-6)


def test_same_config_and_weights_as_keras():
    """The config round-trips through either class: a file written with one loads into the other."""
    ours = GroupNormalization(groups=4, epsilon=1e-5, name="norm")
    config = ours.get_config()
    assert config == keras.layers.GroupNormalization.from_config(config).get_config()
    assert type(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))) is GroupNormalization


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_other_dtypes_warn_once_and_run_keras_ops(dtype):
    _native.warn_not_float32.cache_clear()
    with pytest.warns(RuntimeWarning, match=f"runs float32 only; a layer computing in {dtype}"):
        layer = GroupNormalization(groups=2, dtype=dtype)
        layer.build((None, 4, 4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GroupNormalization(groups=2, dtype=dtype).build((None, 4, 4, 6))
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype(dtype))
    trained, types = values_gradients_and_op_types(layer, x, training=True)
    assert not any(t.startswith("PdeZoo") for t in types)
    inferred, _ = values_gradients_and_op_types(layer, x, training=False)
    for a, b in zip(trained, inferred):
        np.testing.assert_array_equal(a, b)


def test_odenet_and_pdenet_use_it():
    """The zoo's GroupNorm models build with it (same layer class name as their shipped files)."""
    for model in (pde_zoo.build("pdenet", 2, channels=8), pde_zoo.build("odenet", 1)):
        norms = [l for l in model._flatten_layers() if isinstance(l, keras.layers.GroupNormalization)]
        assert norms and all(type(l) is GroupNormalization for l in norms)


def test_op_rejects_bad_groups():
    ops = _native.stencil_ops()
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be a multiple of groups = 4"):
        ops.pde_zoo_group_norm(tf.zeros([2, 3, 6]), tf.ones([6]), tf.zeros([6]), groups=4, epsilon=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream must have the shape"):
        ops.pde_zoo_group_norm_grad(tf.zeros([2, 3, 6]), tf.ones([6]), tf.zeros([2, 3]), tf.ones([2, 3]), tf.zeros([2, 3, 5]), groups=3)
