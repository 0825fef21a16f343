"""pde_zoo.optimizers.Adam gives the same numbers as keras.optimizers.Adam."""

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo.optimizers import Adam


def test_same_trajectory_as_keras_adam():
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
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not all(np.array_equal(a, b) for a, b in zip(outputs[0], weights)), "training moved the weights"


def test_config_round_trip_and_no_amsgrad():
    opt = Adam(learning_rate=0.01, beta_1=0.8)
    clone = Adam.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="amsgrad"):
        Adam(amsgrad=True)
