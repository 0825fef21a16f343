"""Training on real MNIST subsets: accuracy far above chance, the run directory, resume, determinism, CLI."""

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo import training


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "pde2-3"
    card = training.train("pde2", 3, epochs=2, train_examples=4000, test_examples=1000, out=out, verbose=0)
    return out, card


def test_short_mnist_training_is_far_above_chance(short_run):
    out, card = short_run
    assert card["test_accuracy"] > 0.85  # chance is 0.10
    assert card["epochs_run"] == 2 and card["complete"] and card["card_version"] == pde_zoo.cards.CARD_VERSION
    assert card["data"]["fit_examples"] == 4000 and card["data"]["test_examples"] == 1000 and card["data"]["validation_examples"] == 0
    assert card["params"] == pde_zoo.build("pde2", 3).count_params()
    assert card["recipe_name"] == "thesis"
    assert card["recipe"] == pde_zoo.recipes.RECIPES["thesis"].replace(epochs=2, train_examples=4000, test_examples=1000).to_dict()
    assert len(card["data"]["sha256"]) == 64 and card["recipe"]["seed"] == 0 and card["train_seconds"] > 0
    assert card["command"] == "pde-zoo train pde2 --depth 3 --recipe thesis --set epochs=2 --set train_examples=4000 --set test_examples=1000"
    assert card["versions"]["commit"] != "" and card["device"]["kind"]


def test_run_directory_contents(short_run):
    out, card = short_run
    assert {p.name for p in out.iterdir()} >= {"model.keras", "saved_model", "card.json", "history.csv", "logs", "run.json"}
    assert not (out / "backup").exists(), "BackupAndRestore state is removed when the run finishes"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == pde_zoo.history.HISTORY_FIELDS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["test_accuracy"]) == pytest.approx(card["test_accuracy"], abs=1e-6)
    assert rows[-1]["val_accuracy"] == "" and float(rows[-1]["learning_rate"]) == pytest.approx(1e-3)
    assert json.loads((out / "card.json").read_text()) == card
    # eval on the exported SavedModel reproduces the card exactly
    loss, acc = pde_zoo.evaluate(pde_zoo.load(out / "saved_model"), limit=1000)
    assert acc == card["test_accuracy"]


def test_finished_run_is_skipped(short_run, capsys):
    out, card = short_run
    assert training.train("pde2", 3, epochs=2, train_examples=4000, test_examples=1000, out=out, verbose=0) == card
    assert "already trained" in capsys.readouterr().out


def test_a_finished_preset_is_skipped_too(tmp_path, capsys):
    """A preset directory has no run.json (scripts/import_runs.py drops it): its card decides."""
    import shutil

    shutil.copytree(pde_zoo.pretrained.resolve("mlp-0"), tmp_path / "mlp-0")
    card = training.train("mlp", 0, "thesis", out=tmp_path / "mlp-0", verbose=0)
    assert "already trained" in capsys.readouterr().out and card == pde_zoo.cards.read_card("mlp-0")


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill after the first epoch")


@pytest.mark.slow  # four training runs
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path):
    kwargs = dict(epochs=2, train_examples=1000, test_examples=300, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.train("pde1", 2, out=tmp_path / "a", callbacks=[_Interrupt()], **kwargs)
    assert (tmp_path / "a" / "backup").exists() and not (tmp_path / "a" / "card.json").exists()
    resumed = training.train("pde1", 2, out=tmp_path / "a", **kwargs)
    assert resumed["epochs_run"] == 2 and resumed["resumed_after_epochs"] == [1]
    with open(tmp_path / "a" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    straight = training.train("pde1", 2, out=tmp_path / "b", **kwargs)
    straight_again = training.train("pde1", 2, out=tmp_path / "c", **kwargs)
    assert straight["test_accuracy"] == straight_again["test_accuracy"] and straight["test_loss"] == straight_again["test_loss"], "same seed, same result"
    assert abs(resumed["test_accuracy"] - straight["test_accuracy"]) < 0.05


def test_steps_per_execution_trains_the_same_weights(tmp_path, monkeypatch):
    """train() runs several steps per call of the step function (`STEPS_PER_EXECUTION`): the same steps in the
    same order, so the history and weights equal one step per call bit for bit (8 steps per epoch: chunks of
    3, 3 and a partial 2, across 2 epochs; pde2 runs its C++ stencil ops)."""
    kwargs = dict(epochs=2, train_examples=1000, test_examples=200, verbose=0)
    runs = {}
    for steps in (1, 3):
        monkeypatch.setattr(training, "STEPS_PER_EXECUTION", steps)
        card = training.train("pde2", 2, out=tmp_path / str(steps), **kwargs)
        model = keras.saving.load_model(tmp_path / str(steps) / "model.keras")
        assert model.steps_per_execution == steps and model.optimizer.iterations.numpy() == 16
        with open(tmp_path / str(steps) / "history.csv") as f:
            history = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
        runs[steps] = card, model.get_weights(), history
    (card_1, weights_1, history_1), (card_3, weights_3, history_3) = runs[1], runs[3]
    assert card_1["test_loss"] == card_3["test_loss"] and card_1["test_accuracy"] == card_3["test_accuracy"]
    assert all(np.array_equal(a, b) for a, b in zip(weights_1, weights_3, strict=True))
    assert history_1 == history_3 and len(history_1) == 2


def test_predict_validates_images(short_run):
    out, _ = short_run
    model = pde_zoo.load(out)
    probs = pde_zoo.predict(model, np.zeros((2, 28, 28, 1), np.float32))
    assert probs.shape == (2, 10)
    with pytest.raises(ValueError, match="uint8"):
        pde_zoo.predict(model, np.zeros((2, 28, 28, 1), np.uint8))


def test_bad_training_arguments(tmp_path):
    with pytest.raises(ValueError, match="'epochs' must be an integer >= 1"):
        training.train("pde2", 1, epochs=0, out=tmp_path)
    with pytest.raises(ValueError, match="'learning_rate' must be a positive number"):
        training.train("pde2", 1, learning_rate=-1.0, out=tmp_path)
    with pytest.raises(ValueError, match="Unknown model"):
        training.train("pde7", 1, out=tmp_path)
    with pytest.raises(ValueError, match="Unknown recipe 'fast'. Known recipes: convresnet, odenet, pde1ode, pde2ode, pdenet, thesis"):
        training.train("pde2", 1, "fast", out=tmp_path)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['chanels'\] for model 'pdenet'"):
        training.train("pdenet", 4, chanels=4, out=tmp_path)
    assert not any(tmp_path.iterdir()), "refused before anything was written"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pde_zoo.cli", *args], capture_output=True, text=True)


@pytest.mark.slow  # five CLI subprocesses (~45 s)
def test_cli_list_eval_and_errors(short_run, tmp_path):
    out, card = short_run
    listing = run_cli("list", "pde*")
    assert listing.returncode == 0 and listing.stdout.split()[0] == "pde1" and "resnet" not in listing.stdout
    evaluated = run_cli("eval", str(out / "model.keras"), "--limit", "1000")
    assert evaluated.returncode == 0, evaluated.stderr[-1000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["test_accuracy"] == card["test_accuracy"]
    exported = run_cli("export", str(out), str(tmp_path / "sm"))
    assert exported.returncode == 0 and (tmp_path / "sm" / "saved_model.pb").is_file()
    unknown = run_cli("train", "pde9", "--depth", "2")
    assert unknown.returncode == 2 and f"Unknown model 'pde9'. Known models: {', '.join(pde_zoo.list_models())}." in unknown.stderr
    negative = run_cli("train", "pde2", "--depth", "-3")
    assert negative.returncode == 2 and "depth must be a non-negative integer" in negative.stderr
