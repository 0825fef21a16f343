"""Registry and builder: every registered model builds, trains a step and stays finite."""

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo.layers import StencilStack
from pde_zoo.registry import register_model


# The continuous models (an adaptive or many-step solve per batch) are heavy: CI runs them; tests/test_continuous.py
# trains them in the default run.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in ("odenet", "pde1ode", "pde2ode") else n for n in pde_zoo.list_models()]
)
def test_every_model_builds_trains_and_is_finite(name):
    spec = pde_zoo.get_spec(name)
    depth = {"mlp": 0, "odenet": 1}.get(name, 3)
    model = pde_zoo.compile_model(pde_zoo.build(name, depth=depth))
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 16)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    probs = model.predict(x, verbose=0)
    assert probs.shape == (16, 10) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert all(changed), "every weight (blocks included) must receive a gradient and move"


def test_thesis_architecture():
    model = pde_zoo.build("pde2", depth=50)
    assert model.name == "pde2-50"
    stack = model.get_layer("blocks")
    assert isinstance(stack, StencilStack) and len(stack.blocks) == 50
    assert all(type(b).__name__ == "PDE2Block" for b in stack.blocks)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [128, 64, 10]
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert model.count_params() == 50 * 5 + 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


def test_options():
    model = pde_zoo.build("pde1", depth=2, channels=3, num_classes=4, head_units=(16,), input_shape=(12, 10, 1))
    assert model.output_shape == (None, 4)
    assert model.get_layer("lift").filters == 3
    assert model.get_layer("blocks").blocks[0].coefficients()["alpha"].shape == (3,)
    assert pde_zoo.build("resnet", depth=0).count_params() == pde_zoo.build("mlp").count_params()


def test_list_models_pattern():
    assert {"mlp", "pde1", "pde2", "resnet", "pde1ode", "pde2ode", "odenet"} <= set(pde_zoo.list_models())
    assert pde_zoo.list_models("pde?") == ["pde1", "pde2"]
    assert pde_zoo.list_models("*ode*") == ["odenet", "pde1ode", "pde2ode"]
    assert pde_zoo.list_models("nothing*") == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "pde3"}, "Unknown model 'pde3'. Known models: convresnet, mlp, odenet, pde1, pde1ode, pde2"),
        ({"name": "pde2ode", "depth": 0}, "depth must be >= 1"),
        ({"name": "pde2", "depth": -1}, "non-negative integer"),
        ({"name": "pde2", "depth": 2.5}, "non-negative integer"),
        ({"name": "pde2", "depth": True}, "non-negative integer"),
        ({"name": "mlp", "depth": 5}, "depth 0 is its only valid depth"),
        ({"name": "pde2", "depth": 2, "chanels": 2}, "Unknown option"),
        ({"name": "pde2", "depth": 2, "channels": 0}, "channels must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pde_zoo.build(**kwargs)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model("pde2")(lambda depth: None)
    assert pde_zoo.get_spec("pde2").builder.__name__ == "builder"
