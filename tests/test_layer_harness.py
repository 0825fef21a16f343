"""One harness for every public layer (keras-hub's `run_layer_test`): build on NHWC input of
several channel counts, eager call, config round trip, `.keras` round trip, SavedModel export
(standard TF ops only, same outputs), finite gradients. A layer added to
`pde_zoo.layers.__all__` must be added to `CASES` (or to `ABSTRACT`), or the coverage test fails."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from pde_zoo import layers

ABSTRACT = {"ResidualBlock": "base of the residual blocks", "VectorField": "base of the vector fields"}
T = 0.5  # the time a vector field is evaluated at


def _field(cls, **kwargs):
    return lambda channels: (cls(**kwargs), True)


CASES = {
    "PDE1Block": lambda c: (layers.PDE1Block(), False),
    "PDE2Block": lambda c: (layers.PDE2Block(), False),
    "PDEBlock": lambda c: (layers.PDEBlock(drift_scale=0.5), False),
    "ResidualConvBlock": lambda c: (layers.ResidualConvBlock(), False),
    "PDESystemBlock": lambda c: (layers.PDESystemBlock(), False),
    "EulerStep": lambda c: (layers.EulerStep(layers.PDESystemField(activation=None, stable=True), time_step=0.5), False),
    "StencilStack": lambda c: (layers.StencilStack([layers.PDE1Block(), layers.PDE2Block(), layers.ResidualConvBlock()]), False),
    "PDEField": _field(layers.PDEField),
    "PDESystemField": _field(layers.PDESystemField),
    "LinearConvField": _field(layers.LinearConvField),
    "ConvField": _field(layers.ConvField),
    "ODEBlock": lambda c: (layers.ODEBlock(layers.PDEField(), t1=1.0, method="rk4", step_size=0.5), False),
    "GroupNormalization": lambda c: (layers.GroupNormalization(groups=c), False),
}


def _public_layer_classes():
    return {name for name in layers.__all__ if inspect.isclass(getattr(layers, name)) and issubclass(getattr(layers, name), keras.layers.Layer)}


def test_every_public_layer_is_covered():
    assert _public_layer_classes() == set(CASES) | set(ABSTRACT)


@keras.saving.register_keras_serializable(package="pde_zoo_tests")
class FieldAt(keras.layers.Layer):
    """A vector field evaluated at the time `T`, as a one-input layer (a field's own call takes
    (t, ψ), which a functional model cannot record)."""

    def __init__(self, field, **kwargs):
        super().__init__(**kwargs)
        self.field = field if isinstance(field, keras.layers.Layer) else keras.saving.deserialize_keras_object(field)

    def call(self, psi):
        return self.field(T, psi)

    def get_config(self):
        return {**super().get_config(), "field": keras.saving.serialize_keras_object(self.field)}


def _model(layer, is_field, channels):
    inputs = keras.Input((9, 8, channels))
    outputs = FieldAt(layer)(inputs) if is_field else layer(inputs)
    return keras.Model(inputs, outputs)


def _randomize(model, rng):
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))


# ODEBlock at 3 channels (a solver loop exported to a SavedModel, ~10 s) runs in CI's slow set.
@pytest.mark.parametrize(
    "name, channels",
    [pytest.param(n, c, marks=pytest.mark.slow) if (n, c) == ("ODEBlock", 3) else (n, c) for n in sorted(CASES) for c in (1, 3)],
)
def test_layer(name, channels, tmp_path):
    rng = np.random.default_rng(7)
    layer, is_field = CASES[name](channels)
    model = _model(layer, is_field, channels)
    _randomize(model, rng)
    x = rng.random((2, 9, 8, channels)).astype("float32")
    y = np.asarray(model(x))
    assert y.shape == (2, 9, 8, channels) and np.isfinite(y).all()

    clone = type(layer).from_config(layer.get_config())  # config round trip: same layer, same outputs
    cloned = _model(clone, is_field, channels)
    cloned.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(cloned(x)), y, atol=1e-6)
    assert clone.get_config() == layer.get_config()

    model.save(tmp_path / "m.keras")  # .keras round trip
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(tmp_path / "m.keras")(x)), y, atol=1e-6)

    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)  # SavedModel: standard ops only
    assert b"PdeZoo" not in (tmp_path / "sm" / "saved_model.pb").read_bytes()
    served = tf.saved_model.load(str(tmp_path / "sm"))  # kept: the signature references its variables
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), y, atol=1e-5)

    with tf.GradientTape() as tape:  # gradients: finite, and present for every trainable weight
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.isfinite(np.asarray(g)).all() for g in grads)
