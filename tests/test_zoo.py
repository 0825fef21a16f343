"""Every pretrained preset is what its card says it is (timm's test_model_load_pretrained).

For each name of `pde_zoo.list_pretrained()`:

- (fast) `pde_zoo.build(cfg["model"], depth=cfg["depth"], **cfg["options"])` builds the
  architecture `pde_zoo.load(name)` loads (layers, weight shapes, input/output shapes, parameter
  count, and the card's `params`); the card's recipe re-validates and its command re-runs it.
- (slow) the loaded model reproduces the card's test accuracy on the test images the card used;
- (slow) the shipped SavedModel, served by plain TensorFlow in a fresh process (no pde_zoo
  import), gives the probabilities of the loaded Keras model.

Each model is loaded once per module; the SavedModels of every preset are served by a single
subprocess per test session.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import pde_zoo
from pde_zoo import pretrained
from pde_zoo.recipes import Recipe
from pde_zoo.sources import load_source

NAMES = pde_zoo.list_pretrained()
SERVE_IMAGES = 64
SERVE_TIMEOUT_S = 3600  # 20-odd SavedModels, some with adaptive ODE solvers, on a busy 2-core CPU
ACCURACY_TOLERANCE = 1e-3

# As tests/test_export.py's: a fresh process that imports TensorFlow alone serves SavedModels.
# argv[1]: JSON {preset: [SavedModel directory, .npy of float32 images]}; prints JSON
# {preset: probabilities} on its last line.
SERVE_WITH_PLAIN_TF = """
import json, sys
import numpy as np, tensorflow as tf
def pde_zoo_imported():
    return any(m == "pde_zoo" or m.startswith("pde_zoo.") for m in sys.modules)
assert not pde_zoo_imported()
results = {}
for name, (path, images) in json.loads(sys.argv[1]).items():
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (key,) = serve.structured_input_signature[1]
    outputs = serve(**{key: tf.constant(np.load(images))})
    (y,) = outputs.values()
    results[name] = y.numpy().tolist()
assert not pde_zoo_imported(), "a SavedModel pulled in pde_zoo"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def loaded_models():
    """{preset: keras.Model}, each loaded (compile=False) on first use and kept for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = pde_zoo.load(name, compile=False)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def sources():
    """{data source: pde_zoo.sources.Source}, each loaded on first use and kept for the module."""
    cache = {}

    def get(source):
        if source not in cache:
            cache[source] = load_source(source)
        return cache[source]

    return get


def _architecture(model):
    """[(layer class name, [weight shapes])] of the model's layers, in order."""
    return [(type(layer).__name__, [tuple(w.shape) for w in layer.weights]) for layer in model.layers]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_build_matches_load(name, loaded_models):
    cfg = pde_zoo.pretrained_config(name)
    built = pde_zoo.build(cfg["model"], depth=cfg["depth"], **cfg["options"])
    loaded = loaded_models(name)

    assert built.count_params() == loaded.count_params()
    assert _architecture(built) == _architecture(loaded)
    assert tuple(built.input_shape) == tuple(loaded.input_shape)
    assert tuple(built.output_shape) == tuple(loaded.output_shape)
    assert cfg["metrics"]["params"] == loaded.count_params()
    assert list(loaded.input_shape[1:]) == list(cfg["data"]["input_shape"])
    assert loaded.output_shape[-1] == cfg["data"]["num_classes"]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_card_recipe_and_command(name):
    cfg = pde_zoo.pretrained_config(name)
    assert Recipe.from_dict(cfg["recipe"]).to_dict() == cfg["recipe"]
    command = cfg["card"]["command"]
    assert command.startswith("pde-zoo train "), command
    assert f"--depth {cfg['depth']}" in command, command


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_stored_test_accuracy_is_reproduced(name, loaded_models):
    cfg = pde_zoo.pretrained_config(name)
    loss, acc = pde_zoo.evaluate(loaded_models(name), cfg["data"]["source"], limit=cfg["data"]["test_examples"])
    # 1e-3 is 10 images of 10,000: the card's accuracy was measured during training (another
    # batch size, another process, possibly another backend or thread count), and float32 sums in
    # a different order can flip the argmax of an image whose top two probabilities nearly tie. A
    # wrong model, wrong weights or wrong preprocessing misses by far more.
    assert abs(acc - cfg["metrics"]["test_accuracy"]) <= ACCURACY_TOLERANCE, (
        f"{name}: accuracy {acc:.4f} (loss {loss:.4f}) on {cfg['data']['test_examples']} test images of "
        f"{cfg['data']['source']}; the card says {cfg['metrics']['test_accuracy']:.4f} (loss {cfg['metrics']['test_loss']})"
    )


def _serve_images(cfg, sources):
    """The first SERVE_IMAGES test images of the preset's data source, float32 in [0, 1]."""
    return sources(cfg["data"]["source"]).x_test[:SERVE_IMAGES].astype("float32") / 255.0


@pytest.fixture(scope="module")
def served(tmp_path_factory, sources):
    """{preset: probabilities} of every preset's SavedModel on its first SERVE_IMAGES test
    images, from one subprocess that imports TensorFlow alone."""
    root = tmp_path_factory.mktemp("served")
    jobs, written = {}, {}
    for name in NAMES:
        cfg = pde_zoo.pretrained_config(name)
        source = cfg["data"]["source"]
        if source not in written:
            written[source] = root / f"images-{len(written)}.npy"
            np.save(written[source], _serve_images(cfg, sources))
        jobs[name] = [str(pretrained.resolve(name) / pretrained.SAVED_MODEL_DIR), str(written[source])]
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_PLAIN_TF, json.dumps(jobs)], capture_output=True, text=True, timeout=SERVE_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_saved_model_serves_on_plain_tensorflow(name, served, loaded_models, sources):
    cfg = pde_zoo.pretrained_config(name)
    images = _serve_images(cfg, sources)
    # One batch of all the images, as the subprocess serves them: the adaptive dopri5 solver of
    # the ODE models (odenet, pde2ode) takes one step size for the whole batch (the error norm is
    # an RMS over the batch, pde_zoo/ode/_controller.py), so its outputs depend on the batch they are
    # computed in (odenet-1: up to 1e-4 between predict's default batches of 32 and one of 64).
    expected = loaded_models(name).predict(images, batch_size=len(images), verbose=0)
    assert name in served, f"{name}: the subprocess returned no probabilities"
    np.testing.assert_allclose(np.asarray(served[name]), expected, atol=1e-5, err_msg=name)
