"""scripts/train_recipe.py end to end on a tiny MNIST subset: the card records the recipe as run
(with --set overrides), the validation split, the test score, a killed run resumes from its
last epoch and says so, and a finished run is skipped; the epoch planner's compile correction."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pde_zoo import data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_recipe.py"
_spec = importlib.util.spec_from_file_location("train_recipe", SCRIPT)
train_recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_recipe)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    x, y, digest = data.load_arrays("train")
    xt, yt, _ = data.load_arrays("test")
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    np.savez_compressed(path, x_train=x[:1500], y_train=y[:1500], x_test=xt[:300], y_test=yt[:300], sha256=np.array(digest))
    return path


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_run_with_overrides_writes_its_card_and_is_skipped_when_finished(tiny_npz, tmp_path):
    args = ("--data", tiny_npz, "--out", tmp_path, "--max-epochs", 2, "--set", "shift=1", "--set", "peak_learning_rate=0.01")
    result = run(*args, "pdenet-2:channels=4")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "pdenet-2__channels-4"
    card = json.loads((run_dir / "card.json").read_text())
    assert card["recipe"]["shift"] == 1 and card["recipe"]["peak_learning_rate"] == 0.01
    assert card["recipe"]["max_epochs"] == 2 and card["epochs_run"] == card["recipe"]["planned_epochs"] <= 2
    assert card["options"] == {"channels": 4} and card["data"]["subset"] and card["resumed_after_epochs"] == []
    assert card["recipe"]["fit_examples"] == 1350  # the last 10% (at most 5,000) held out for validation
    assert card["test_accuracy"] > 0.2  # chance is 0.1, after two short epochs on 1,350 images
    assert (run_dir / "model.keras").is_file() and (run_dir / "saved_model").is_dir() and not (run_dir / "work").exists()
    again = run(*args, "pdenet-2:channels=4")
    assert again.returncode == 0 and "is finished; skipped" in again.stdout


def test_bad_overrides_are_refused_before_anything_runs(tmp_path):
    for item in ("optimizer=sgd", "shift=one", "shift"):
        result = run("--out", tmp_path, "--set", item, "pdenet-2")
        assert result.returncode != 0 and "--set takes KEY=NUMBER" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_killed_run_resumes_after_its_last_epoch_and_the_card_says_so(tiny_npz, tmp_path):
    args = [sys.executable, str(SCRIPT), "--one", "pdenet-2:channels=4", "--data", str(tiny_npz), "--out", str(tmp_path),
            "--budget", "100000", "--max-epochs", "4"]
    state = tmp_path / "pdenet-2__channels-4" / "work" / "state.json"
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not state.is_file() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.kill()
    child.wait()
    done = len(json.loads(state.read_text())["history"])
    assert 1 <= done < 4, "the run was not killed mid-way"
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed after epoch {done} of 4" in result.stdout
    card = json.loads((tmp_path / "pdenet-2__channels-4" / "card.json").read_text())
    assert card["resumed_after_epochs"] == [done] and card["epochs_run"] == card["recipe"]["planned_epochs"] == 4
    rows = (tmp_path / "pdenet-2__channels-4" / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4  # header + one row per epoch, none lost or repeated


def test_the_planner_removes_first_batch_compilation_from_the_epoch_time():
    # fit: first batch 20 s against a median of 1 s -> 19 s of compilation; evaluate: 4.5 s
    assert train_recipe.steady_epoch_seconds(60.0, [20.0, 1.0, 1.2, 0.8], [5.0, 0.5, 0.5]) == pytest.approx(60 - 19 - 4.5)
    # no excess (first batch no slower), or a single batch: nothing is removed
    assert train_recipe.steady_epoch_seconds(10.0, [0.5, 1.0, 1.0], [2.0]) == 10.0
    assert train_recipe.steady_epoch_seconds(10.0, [], []) == 10.0
