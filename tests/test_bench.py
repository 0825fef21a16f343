"""scripts/bench.py: the train() rows time `training.fit_epochs`, the loop `pde-zoo train` runs."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench  # noqa: E402


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_train_path_epoch_is_a_whole_training_epoch(tmp_path):
    data = bench.train_path_data(SimpleNamespace(data_dir=None, train_images=300, test_images=1100))
    assert data.meta["train_images"] == 300 and data.meta["test_images"] == 1100
    model = bench.make_model("pde2-2")
    assert bench.time_train_epoch(model, data.warm, tmp_path / "warm") > 0
    for _ in range(2):  # each timed epoch starts a fresh run directory: nothing resumed, nothing skipped
        assert bench.time_train_epoch(model, data, tmp_path / "run") > 0
        rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy,test_loss,test_accuracy") and len(rows) == 2
        assert rows[1].split(",")[0] == "1" and float(rows[1].split(",")[6]) > 0  # the test set was evaluated
        assert (tmp_path / "run" / "backup").is_dir() and (tmp_path / "run" / "logs").is_dir()


@pytest.mark.slow
def test_bench_end_to_end_with_train_rows(tmp_path):
    out = tmp_path / "bench.json"
    readme = tmp_path / "README.md"
    readme.write_text("<!-- performance:start -->\n<!-- performance:end -->\n")
    command = [sys.executable, str(SCRIPTS / "bench.py"), "--depths", "2", "--models", "mlp", "ref", "pde2", "--steps", "3",
               "--repeats", "1", "--infer-repeats", "1", "--latency-calls", "2", "--no-memory", "--train-images", "300",
               "--test-images", "1100", "--threads", "1", "--stencil-floor", "--json", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    recorded = json.loads(out.read_text())
    assert recorded["meta"]["train_path"]["train_images"] == 300 and recorded["meta"]["determinism"]
    assert {k for k, r in recorded["results"].items() if "train_path_s_per_epoch" in r} == {"mlp-0", "pde2-2"}
    assert {k for k, r in recorded["results"].items() if "train_path_free_stencils_s_per_epoch" in r} == {"pde2-2"}
    subprocess.run([sys.executable, str(SCRIPTS / "bench.py"), "--render", "--json", str(out), "--readme", str(readme)],
                   check=True, capture_output=True, text=True)
    text = readme.read_text()
    assert "| pde2-2 |" in text and "train() / bare" in text and "compare ratios across runs" in text
    assert "stencil ops free: train() s / epoch" in text


def test_the_matched_pair_and_its_idiomatic_keras_control():
    """pdenet-16 (channels 32) and convresnet-16 (channels 14) have about as many parameters (<= 0.25M),
    and keras_pdenet-16 is pdenet's layout in plain Keras layers: the same stem, transitions and head,
    each block a depthwise 3x3 + 1x1 mixing with bias."""
    import pde_zoo

    assert bench.cases([16], models=["pdenet", "convresnet", "keras_pdenet"]) == [
        "pdenet-16", "convresnet-16", "pdenet-16.c32", "convresnet-16.c14", "keras_pdenet-16.c32"]
    assert "pdenet-16.c32" not in bench.cases([5], pair=False)
    pdenet, conv, keras_pdenet = (bench.make_model(k) for k in ("pdenet-16.c32", "convresnet-16.c14", "keras_pdenet-16.c32"))
    assert pdenet.count_params() == pde_zoo.build("pdenet", 16, channels=32).count_params() == 208_490
    assert conv.count_params() == 206_020
    # per block: Keras 9C (depthwise) + C² + C (1x1 with bias) against the PDE block's C² + 5C (α, β, σ, ρ, b and Γ);
    # stage_layout(16) = (6, 5, 5) blocks at widths 32, 64, 128
    extra = sum(n * ((c * c + 10 * c) - (c * c + 5 * c)) for n, c in ((6, 32), (5, 64), (5, 128)))
    assert keras_pdenet.count_params() == pdenet.count_params() + extra
    assert [layer.name for layer in keras_pdenet.layers if "transition" in layer.name or "stem" in layer.name] == [
        layer.name for layer in pdenet.layers if "transition" in layer.name or "stem" in layer.name]


def test_free_stencils_keeps_every_weight_in_the_step_but_applies_no_stencil():
    """The --stencil-floor copy: the thesis stack passes its input through unchanged, yet every block weight is
    still read and gets a gradient (zero), so the step keeps the weights' plumbing and only the stencil ops go."""
    import numpy as np
    import tensorflow as tf

    import pde_zoo
    from pde_zoo.layers.stencil_stack import StencilStack

    model = pde_zoo.build("pde2", 3)
    assert bench.free_stencils(model) == 1
    assert bench.free_stencils(pde_zoo.build("mlp", 0)) == 0 and bench.free_stencils(pde_zoo.build("pdenet", 2)) == 0
    stack = next(layer for layer in model._flatten_layers() if isinstance(layer, StencilStack))
    x = tf.constant(np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32"))
    weights = [w.value for block in stack.blocks for w in block.trainable_weights]
    with tf.GradientTape() as tape:
        y = stack(x, training=True)
        loss = tf.reduce_sum(y * y)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    grads = tape.gradient(loss, weights)
    assert len(weights) == 15 and all(g is not None and not np.any(g.numpy()) for g in grads)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(x, np.arange(4)))  # the free copy trains (the head learns)
