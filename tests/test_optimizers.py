"""pde_zoo.optimizers.Adam gives the same numbers as keras.optimizers.Adam."""

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo.optimizers import Adam
from numpy_reference import adam as numpy_adam


def adam_case(seed=0, size=500, steps=20):
    """Initial weights and gradients spanning five decades (Adam is scale-free, ε is not)."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=size).astype("float32")
    grads = [(rng.normal(size=size) * 10 ** rng.uniform(-5, 1)).astype("float32") for _ in range(steps)]
    return w0, grads


@pytest.mark.parametrize("optimizer_class", [Adam, keras.optimizers.Adam])
def test_steps_match_numpy_adam(optimizer_class):
    w0, grads = adam_case()
    optimizer = optimizer_class(learning_rate=3e-3, beta_1=0.8, beta_2=0.99)
    variable = keras.Variable(w0)
    optimizer.build([variable])
    got = []
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
        got.append(keras.ops.convert_to_numpy(variable))
    expected = numpy_adam(w0, grads, lr=3e-3, beta_1=0.8, beta_2=0.99)
    np.testing.assert_allclose(np.stack(got), expected, rtol=0, atol=2e-6)  # float32 rounding
    assert np.median(np.abs(expected[-1] - w0)) > 1e-3, "the steps moved the weights"


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_same_training_run_as_keras_adam():
    """The fused kernel rounds differently from Keras's op-by-op update (~1 ulp per step), so a
    short training run agrees to 1e-5, not bitwise."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    weights = None
    outputs = []
    for optimizer in (keras.optimizers.Adam(3e-3), Adam(3e-3)):
        keras.utils.set_random_seed(0)
        model = pde_zoo.build("pde1", depth=3)
        weights = weights or model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        outputs.append(model.get_weights())
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(outputs[0], weights)), "training moved the weights"


def test_config_round_trip_and_no_amsgrad():
    opt = Adam(learning_rate=0.01, beta_1=0.8)
    clone = Adam.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="amsgrad"):
        Adam(amsgrad=True)
