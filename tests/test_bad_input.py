"""Bad input gets one clear error (or a documented empty result): predict, load, register_model, blocks."""

from pathlib import Path

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo import registry
from pde_zoo.layers import PDE1Block, PDE2Block, PDEBlock

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED_KERAS = ROOT / "saved_models" / "pde2-5" / "model.keras"


@pytest.fixture(scope="module")
def small_model():
    return pde_zoo.build("pde2", depth=1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_rejects_nan_and_inf(small_model, bad):
    images = np.zeros((3, 28, 28, 1), np.float32)
    images[1, 4, 5, 0] = bad
    with pytest.raises(ValueError, match=r"images must be finite.*1 NaN or Inf pixel.*index \(1, 4, 5, 0\).*nan_to_num"):
        pde_zoo.predict(small_model, images)


def test_predict_empty_batch_gives_empty_probabilities(small_model):
    probs = pde_zoo.predict(small_model, np.zeros((0, 28, 28, 1), "float32"))
    assert probs.shape == (0, 10) and probs.dtype == np.float32


def test_load_truncated_keras_file(tmp_path):
    truncated = tmp_path / "model.keras"
    data = PRETRAINED_KERAS.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is not a valid \.keras archive \(truncated or corrupt\)"):
        pde_zoo.load(truncated)


def test_load_keras_file_with_a_corrupt_member(tmp_path):
    data = bytearray(PRETRAINED_KERAS.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights: the archive's directory is intact, a CRC is not
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is not a valid \.keras archive \(truncated or corrupt\)"):
        pde_zoo.load(corrupt)


def test_load_missing_keras_file(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.keras not found"):
        pde_zoo.load(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match=r"not found"):
        pde_zoo.loading.load_keras_file(tmp_path / "missing.keras")


class Unregistered(keras.layers.Layer):
    def call(self, inputs):
        return inputs


def test_load_keras_file_with_unregistered_custom_layer(tmp_path, monkeypatch):
    name = "pde_zoo_tests>Unregistered"
    layer_class = keras.saving.register_keras_serializable(package="pde_zoo_tests")(Unregistered)
    model = keras.Sequential([keras.Input((3,)), layer_class()])
    model.save(tmp_path / "custom.keras")
    monkeypatch.delitem(keras.saving.get_custom_objects(), name)  # as in a process that never imported it
    with pytest.raises(ValueError, match=r"custom class 'Unregistered', which is not registered.*import the module"):
        pde_zoo.load(tmp_path / "custom.keras")


def test_register_model_without_description_or_docstring(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry alone

    def nodoc(depth):
        return None

    registry.register_model("nodoc")(nodoc)
    assert registry.get_spec("nodoc").description == ""
    registry.register_model("blankdoc")(lambda depth: None)
    assert registry.get_spec("blankdoc").description == ""


@pytest.mark.parametrize("block_class, fixed", [(PDE1Block, 1.0), (PDE2Block, -0.125)])
def test_fixed_drift_scale(block_class, fixed):
    with pytest.raises(ValueError, match=rf"{block_class.__name__} fixes drift_scale.*PDEBlock\(drift_scale=\.\.\.\).*Received: drift_scale=0\.5"):
        block_class(drift_scale=0.5)
    block = block_class(drift_scale=fixed)  # the value old .keras configs hold
    assert block.drift_scale == fixed
    config = block_class().get_config()
    assert "drift_scale" not in config
    assert block_class.from_config(config).drift_scale == fixed
    assert PDEBlock(drift_scale=0.3).get_config()["drift_scale"] == 0.3


def test_committed_keras_file_with_drift_scale_in_config_loads(monkeypatch):
    monkeypatch.delenv("PDE_ZOO_MODELS", raising=False)
    model = pde_zoo.load("pde2-5")
    blocks = model.get_layer("blocks").blocks
    assert len(blocks) == 5 and all(type(b) is PDE2Block and b.drift_scale == -0.125 for b in blocks)
