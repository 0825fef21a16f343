"""The C++ stencil op's build and fallback, and the SavedModel export that must not need it."""

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
    with pytest.raises(RuntimeError, match="compiling stencil_op.cc failed"):
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
    x, taps, offsets = tf.zeros([4, 4, 16]), tf.zeros([2, 9, 16]), tf.zeros([2, 16])
    assert ops.pde_zoo_stencil_stack(x, taps, offsets).shape == (4, 4, 16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of"):
        ops.pde_zoo_stencil_stack(tf.zeros([4, 4, 10]), tf.zeros([2, 9, 10]), tf.zeros([2, 10]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="taps \\(D, 9, L\\)"):
        ops.pde_zoo_stencil_stack(x, tf.zeros([2, 8, 16]), offsets)
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream"):
        ops.pde_zoo_stencil_stack_grad(x, taps, offsets, tf.zeros([4, 5, 16]))
