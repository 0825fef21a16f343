"""`.keras` round trip in a fresh process, SavedModel export == model, `pde_zoo.load` specs and errors."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from conftest import randomize_weights
from pde_zoo.training import export_saved_model


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A pde1-3 model with non-trivial weights, saved as .keras, and a fixed input batch."""
    tmp = tmp_path_factory.mktemp("saving")
    model = pde_zoo.build("pde1", depth=3)
    rng = np.random.default_rng(7)
    for block in model.get_layer("blocks").blocks:
        randomize_weights(block, rng, 0.3)
    x = rng.random((4, 28, 28, 1)).astype("float32")
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", model.predict(x, verbose=0))
    model.save(tmp / "model.keras")
    return tmp, model, x


def test_keras_file_reloads_identically_in_fresh_process(trained_like):
    tmp, _, _ = trained_like
    code = (
        "import numpy as np, pde_zoo;"
        f"m = pde_zoo.load({str(tmp / 'model.keras')!r});"
        f"x = np.load({str(tmp / 'x.npy')!r}); y = np.load({str(tmp / 'y.npy')!r});"
        "assert type(m.get_layer('blocks').blocks[0]).__name__ == 'PDE1Block';"
        "np.testing.assert_array_equal(m.predict(x, verbose=0), y); print('same')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "same" in result.stdout


def test_saved_model_serving_equals_model_after_keras_reload(trained_like, tmp_path):
    tmp, model, x = trained_like
    reloaded = pde_zoo.load(tmp / "model.keras")
    export_saved_model(reloaded, tmp_path / "sm")
    served = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), model.predict(x, verbose=0), atol=1e-6)
    signature = served.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 28, 28, 1] and spec.dtype == tf.float32
    wrapped = pde_zoo.load(tmp_path / "sm")  # TFSMLayer inside a keras.Model
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    layer = keras.layers.TFSMLayer(str(tmp_path / "sm"), call_endpoint="serve")
    np.testing.assert_allclose(np.asarray(layer(x)), model.predict(x, verbose=0), atol=1e-6)


def test_load_run_directory(trained_like):
    tmp, model, x = trained_like
    np.testing.assert_array_equal(pde_zoo.load(tmp).predict(x, verbose=0), model.predict(x, verbose=0))


def test_corrupt_keras_file(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match=r"not a valid \.keras archive \(truncated or corrupt\)"):
        pde_zoo.load(bad)


def test_unknown_spec_lists_pretrained(tmp_path, monkeypatch):
    monkeypatch.setenv("PDE_ZOO_MODELS", str(tmp_path))
    (tmp_path / "pde2-5").mkdir()
    (tmp_path / "pde2-5" / "card.json").write_text("{}")
    (tmp_path / "pde2-5" / "model.keras").write_text("")
    with pytest.raises(ValueError, match=r"(?s)Unknown model 'pde9-1'.*\$PDE_ZOO_MODELS: [^\n]*: pde2-5\n.*Available pretrained models: .*pde2-5"):
        pde_zoo.load("pde9-1")


def test_wrong_path_kinds(tmp_path):
    (tmp_path / "weights.h5").write_text("")
    with pytest.raises(ValueError, match="not a .keras file"):
        pde_zoo.load(tmp_path / "weights.h5")
    with pytest.raises(ValueError, match="neither model.keras nor saved_model.pb"):
        pde_zoo.load(tmp_path)


def test_a_package_made_preset_loads_compiled_in_a_fresh_process():
    """pde_zoo imports lazily: loading must register the zoo's Adam, which a package-trained
    model is saved with (its optimizer config names pde_zoo>Adam)."""
    import subprocess
    import sys

    code = "import pde_zoo; m = pde_zoo.load('pde2ode-5'); print(type(m.optimizer).__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "pde_zoo.optimizers"


def test_import_pde_zoo_registers_the_custom_objects_for_keras(tmp_path):
    """A practitioner's `import pde_zoo` then `keras.saving.load_model` reads the zoo's files."""
    import subprocess
    import sys

    code = "import keras, pde_zoo, sys; keras.saving.load_model(sys.argv[1]); print('ok')"
    path = str(__import__("pde_zoo").pretrained.resolve("pdenet-16") / "model.keras")
    result = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
