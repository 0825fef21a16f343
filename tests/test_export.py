"""Every public route that writes a SavedModel gives one that plain TensorFlow serves.

Routes: `model.export`, `tf.saved_model.save`, `keras.export.ExportArchive`, `pde-zoo export`
and `training.train`; every registry model, after it has run training steps (so the training
graph, which may use the C++ stencil op, has been traced). A fresh process that imports
TensorFlow alone (no pde_zoo, no op library) loads each one and must reproduce the model's
outputs to 1e-5.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from pde_zoo import cli, training

# Exporting an adaptive solver traces its loops and their adjoint gradients on every route (~1 min a model
# on 2 cores at depth 1, ~2 at depth 2, where odenet has two ODE blocks and pde1ode / pde2ode integrate two
# coefficient pieces over [0, 2]): these run with the slow tests (CI runs them), at depth 1 (every route
# still traced and served; deeper models are the same code repeated).
SLOW = {"odenet", "pde1ode", "pde2ode"}
SMALL_DEPTH = {"mlp": 0, **dict.fromkeys(SLOW, 1)}  # every other model: depth 2
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in pde_zoo.list_models()]

SERVE_WITH_PLAIN_TF = """
import json, sys
import numpy as np, tensorflow as tf
def pde_zoo_imported():
    return any(m == "pde_zoo" or m.startswith("pde_zoo.") for m in sys.modules)
assert not pde_zoo_imported()
x = np.load(sys.argv[1])
results = {}
for path in json.loads(sys.argv[2]):
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](tf.constant(x))
    (y,) = outputs.values()
    results[path] = y.numpy().tolist()
assert not pde_zoo_imported(), "the SavedModel pulled in pde_zoo"
print(json.dumps(results))
"""


def _routes(model, root):
    """Write `model` by every route; returns {route: SavedModel directory}."""
    paths = {route: root / route for route in ("export", "tf_saved_model_save", "export_archive", "cli")}
    model.export(str(paths["export"]), format="tf_saved_model", verbose=False)
    tf.saved_model.save(model, str(paths["tf_saved_model_save"]))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.call, input_signature=[keras.InputSpec(shape=(None, 28, 28, 1), dtype="float32")])
    archive.write_out(str(paths["export_archive"]), verbose=False)
    model.save(root / "model.keras")
    assert cli.main(["export", str(root / "model.keras"), str(paths["cli"])]) == 0
    return paths


@pytest.mark.slow  # per model: a training run and five SavedModel routes served in a fresh process (~10-30 s each)
@pytest.mark.parametrize("name", MODELS)
def test_every_route_serves_on_plain_tensorflow(name, tmp_path):
    depth = SMALL_DEPTH.get(name, 2)
    rng = np.random.default_rng(0)
    images = rng.random((32, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, 32)
    model = pde_zoo.compile_model(pde_zoo.build(name, depth=depth))
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)  # traces the training graph first
    paths = _routes(model, tmp_path)
    card = training.train(
        name, depth, "thesis", epochs=1, batch_size=16, out=tmp_path / "run", train_examples=32, test_examples=16, verbose=0
    )
    paths["train"] = tmp_path / "run" / "saved_model"
    assert card["complete"]

    for route, path in paths.items():
        assert b"PdeZoo" not in (path / "saved_model.pb").read_bytes(), f"{route}: custom op in the graph"
    x = images[:5]
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_PLAIN_TF, str(tmp_path / "x.npy"), json.dumps([str(p) for p in paths.values()])],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    expected = model.predict(x, verbose=0)
    trained = pde_zoo.load(tmp_path / "run" / "model.keras").predict(x, verbose=0)
    for route, path in paths.items():
        np.testing.assert_allclose(served[str(path)], trained if route == "train" else expected, atol=1e-5, err_msg=route)
