"""Recipes as data and the one loop around them: the schema, the schedule against its formula,
random shifts against NumPy, the budget planner (cut runs end at learning rate 0; a rerun uses
the written plan), `--from-card` reruns, data by name through the loop, and bad input."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo import cli, recipes, training
from pde_zoo.history import read_history
from pde_zoo.optimizers import learning_rate_schedule
from pde_zoo.recipes import RECIPES, Recipe


def test_named_recipes_and_defaults():
    assert pde_zoo.list_recipes() == ["convresnet", "odenet", "pde1ode", "pde2ode", "pdenet", "thesis"]
    thesis = RECIPES["thesis"]
    assert (thesis.optimizer, thesis.learning_rate, thesis.schedule, thesis.batch_size, thesis.epochs) == ("adam", 1e-3, "constant", 128, 50)
    assert (thesis.shift, thesis.validation, thesis.train_examples, thesis.seed) == (0, 0, None, 0)
    for model in pde_zoo.list_models():  # every registry model has a default recipe
        assert recipes.default_recipe_name(model) == (model if model in RECIPES else "thesis")
    assert recipes.resolve("pdenet")[1] == RECIPES["pdenet"] and RECIPES["pdenet"].validation == 5000
    for recipe in RECIPES.values():
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe  # serialisable, round trip


def test_recipe_validation_names_the_key():
    with pytest.raises(ValueError, match="Unknown recipe key"):
        Recipe.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="'schedule' must be one of"):
        Recipe(schedule="step")
    with pytest.raises(ValueError, match="'batch_size' must be an integer >= 1"):
        RECIPES["thesis"].replace(batch_size=0)
    with pytest.raises(ValueError, match="warmup_epochs needs schedule 'cosine'"):
        Recipe(warmup_epochs=1)
    with pytest.raises(ValueError, match="schedule_epochs must be >= epochs"):
        RECIPES["pdenet"].replace(schedule_epochs=3)
    assert recipes.parse_sets(["epochs=3", "learning_rate=2e-3"]) == {"epochs": 3, "learning_rate": 0.002}
    with pytest.raises(ValueError, match="KEY one of optimizer|KEY one of learning_rate"):
        recipes.parse_sets(["epoch=3"])
    with pytest.raises(ValueError, match="needs a number"):
        recipes.parse_sets(["epochs=many"])


@pytest.mark.parametrize("warmup, epochs", [(0, 5), (2, 5), (1, 1), (4, 5)])
def test_cosine_schedule_against_its_formula(warmup, epochs):
    steps_per_epoch, peak = 7, 3e-3
    recipe = RECIPES["pdenet"].replace(epochs=epochs, warmup_epochs=warmup, learning_rate=peak)
    schedule = learning_rate_schedule(recipe, steps_per_epoch)
    total = epochs * steps_per_epoch
    warm = min(warmup * steps_per_epoch, total // 2)  # a warm-up takes at most half the schedule
    for k in range(total):
        expected = peak * k / warm if k < warm else peak * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm - 1)))
        assert float(schedule(k)) == pytest.approx(expected, rel=1e-5, abs=1e-9), k
    assert float(schedule(total - 1)) == 0.0  # the last step of a run that completes its schedule
    assert learning_rate_schedule(RECIPES["thesis"], steps_per_epoch) == 1e-3


def test_random_shift_against_numpy(rng):
    import tensorflow as tf

    images = rng.random((16, 9, 7, 2)).astype("float32")
    seed = tf.constant([3, 11], tf.int64)
    shifted = pde_zoo.data.random_shift(tf.constant(images), 2, seed).numpy()
    offsets = tf.random.stateless_uniform([16, 2], seed=seed, minval=0, maxval=5, dtype=tf.int32).numpy() - 2
    for image, out, (dy, dx) in zip(images, shifted, offsets):
        expected = np.zeros_like(image)  # out[i, j] = image[i + dy, j + dx], zero outside
        for i in range(9):
            for j in range(7):
                if 0 <= i + dy < 9 and 0 <= j + dx < 7:
                    expected[i, j] = image[i + dy, j + dx]
        np.testing.assert_array_equal(out, expected)
    assert len({tuple(o) for o in offsets}) > 5 and offsets.min() == -2 and offsets.max() == 2
    np.testing.assert_array_equal(pde_zoo.data.random_shift(tf.constant(images), 0, seed).numpy(), images)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill after the first epoch")


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_budget_cut_run_ends_at_zero_and_a_rerun_keeps_the_plan(tmp_path):
    kwargs = dict(epochs=6, train_examples=512, validation=256, test_examples=256, shift=1, verbose=0)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # a budget far too small plans one epoch; killed after it
        training.train("pde2", 1, "pdenet", out=out, budget=1e-6, callbacks=[_Interrupt()], **kwargs)
    assert json.loads((out / "run.json").read_text())["plan"]["epochs"] == 1
    card = training.train("pde2", 1, "pdenet", out=out, budget=1e6, **kwargs)  # the rerun reads the plan, not the clock
    assert card["plan"]["epochs"] == 1 and card["plan"]["budget_seconds"] == 1e-6 and card["plan"]["recipe_epochs"] == 6
    assert card["recipe"]["epochs"] == card["epochs_run"] == 1 and card["complete"] and card["resumed_after_epochs"] == [1]
    (row,) = read_history(out / "history.csv")
    assert float(row["learning_rate"]) == 0.0  # the cut run's schedule completes (warm-up capped at half of it)
    assert row["val_accuracy"] and not row["test_accuracy"]  # validation every epoch; test once, at the end
    assert card["val_accuracy"] == pytest.approx(float(row["val_accuracy"])) and card["data"]["validation_examples"] == 256
    with pytest.raises(ValueError, match="holds another run"):  # another recipe in the same directory
        training.train("pde2", 1, "pdenet", out=out, **{**kwargs, "learning_rate": 1e-2})


def test_budget_planner_times_steps_as_fit_runs_them():
    """The planner's seconds per epoch count the training steps and not the fixed cost of a `fit` call: a
    stand-in model whose `fit` of n steps takes 0.2 s + 0.01 s per step (and 1 ms per evaluation step)
    plans 100 steps at ~1.0 s, not the ~2.1 s that 18 steps timed whole would give."""
    import time

    import tensorflow as tf

    class Timed:
        steps_per_execution = 4  # below PROBE_STEPS: k = 6

        def fit(self, dataset, epochs, verbose):
            time.sleep(0.2 + 0.01 * int(dataset.cardinality()))

        def test_on_batch(self, images, labels):
            time.sleep(0.001)

    pairs = tf.data.Dataset.from_tensor_slices((tf.zeros([20, 2]), tf.zeros([20])))
    plan = training.plan_epochs(Timed, pairs, pairs, steps_per_epoch=100, eval_steps=10, budget=60.0, max_epochs=1000)
    assert plan["seconds_per_epoch"] == pytest.approx(100 * 0.01 + 10 * 0.001, rel=0.15)
    assert plan["epochs"] == int(60.0 / (plan["seconds_per_epoch"] * training.PLAN_MARGIN))


def _cli_train(*args):
    return subprocess.run([sys.executable, "-m", "pde_zoo.cli", "train", *args, "--threads", "1"], capture_output=True, text=True)


@pytest.mark.slow  # two CLI training runs (~40 s)
def test_two_runs_from_one_card_give_the_same_history(tmp_path):
    for run in ("a", "b"):
        result = _cli_train("--from-card", "pde1-5", "--set", "train_examples=2000", "--set", "epochs=1", "--out", str(tmp_path / run))
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = (read_history(tmp_path / run / "history.csv") for run in ("a", "b"))
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        assert float(a[0][key]) == pytest.approx(float(b[0][key]), abs=1e-4)
    card, source = pde_zoo.cards.read_card(tmp_path / "a"), pde_zoo.cards.read_card("pde1-5")
    assert card["overrides"] == {"from_card": "pde1-5", "set": {"train_examples": 2000, "epochs": 1}, "option": {}}
    assert card["recipe"] == {**source["recipe"], "train_examples": 2000, "epochs": 1}
    assert (card["name"], card["depth"], card["options"], card["data"]["sha256"]) == (source["name"], source["depth"], source["options"], source["data"]["sha256"])


@pytest.mark.slow  # an own recipe (cosine, shifts, validation split) from a shipped card, twice
def test_pdenet_card_reruns_deterministically(tmp_path):
    subset = ("--set", "train_examples=2000", "--set", "validation=500", "--set", "test_examples=1000", "--set", "epochs=1")
    for run in ("a", "b"):
        result = _cli_train("--from-card", "pdenet-16", *subset, "--out", str(tmp_path / run))
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = (read_history(tmp_path / run / "history.csv") for run in ("a", "b"))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert float(a[0][key]) == pytest.approx(float(b[0][key]), abs=1e-4)
    assert pde_zoo.cards.read_card(tmp_path / "a")["options"] == {"channels": 32}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pde2", "--recipe", "fast"], "Unknown recipe 'fast'. Known recipes: convresnet, odenet"),
        (["pde2", "--set", "epoch=3"], "--set takes KEY=NUMBER with KEY one of"),
        (["pde2", "--set", "epochs=three"], "--set epochs needs a number"),
        (["pdenet", "--option", "chanels=4"], "Unknown --option ['chanels'] for model 'pdenet'. Valid options: "),
        (["pde2", "--option", "channels"], "--option takes KEY=VALUE"),
        (["--from-card", "nosuchmodel-3"], "Unknown model 'nosuchmodel-3'"),
        (["--from-card", "pde2-5", "--depth", "3"], "--from-card runs what the card says"),
        ([], "needs a model name"),
    ],
)
def test_bad_train_input_is_refused_before_anything_runs(argv, message, tmp_path, capsys):
    assert cli.main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "content, message",
    [(None, "no card there"), ("{not json", "not a valid card (not JSON"), ('{"card_version": 99}', "newer than this pde_zoo reads"),
     ('{"model": "pde2-5"}', "older schema"), ("[1, 2]", "a JSON object is expected")],
)
def test_from_card_of_a_bad_card(content, message, tmp_path, capsys):
    card = tmp_path / "card.json"
    if content is not None:
        card.write_text(content)
    assert cli.main(["train", "--from-card", str(card), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


SERVE = """
import json, sys
import numpy as np, tensorflow as tf
x = np.load(sys.argv[1])
out = {p: list(tf.saved_model.load(p).signatures["serving_default"](tf.constant(x)).values())[0].numpy().tolist() for p in json.loads(sys.argv[2])}
assert not any(m.startswith("pde_zoo") for m in sys.modules)
print(json.dumps(out))
"""

COLOUR_MODELS = {"pde2": 2, "pdenet": 2, "convresnet": 2, "odenet": 1}


@pytest.fixture(scope="module")
def colour_runs(tmp_path_factory):
    """32x32x3 images of 100 classes in an .npz, one short run per model through the loop."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(5)
    arrays = {"x_train": rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(96) % 100,
              "x_test": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), "y_test": np.arange(20) * 3 % 100}
    arrays["y_train"][-1] = 99
    np.savez(root / "colour.npz", **arrays)
    cards = {}
    for name, depth in COLOUR_MODELS.items():
        options = {"channels": 4} if name in ("pdenet", "convresnet") else {}
        cards[name] = training.train(name, depth, "thesis", data=str(root / "colour.npz"), out=root / name, epochs=1, batch_size=32, verbose=0, **options)
    return root, cards


@pytest.mark.slow  # four short trainings on 32x32x3 data (~60 s, shared)
@pytest.mark.parametrize("name", list(COLOUR_MODELS))
def test_colour_hundred_class_data_through_the_loop(name, colour_runs):
    root, cards = colour_runs
    card = cards[name]
    assert card["data"]["input_shape"] == [32, 32, 3] and card["data"]["num_classes"] == 100
    assert card["options"]["input_shape"] == [32, 32, 3] and card["options"]["num_classes"] == 100
    model = pde_zoo.load(root / name)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 100)
    built = pde_zoo.build(card["name"], card["depth"], **card["options"])
    assert built.count_params() == model.count_params()
    x = np.random.default_rng(0).random((3, 32, 32, 3)).astype("float32")
    assert pde_zoo.predict(model, x).shape == (3, 100)
    with pytest.raises(ValueError, match=r"shape \(N, 32, 32, 3\)"):
        pde_zoo.predict(model, np.zeros((3, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="takes images of shape"):
        pde_zoo.evaluate(model)  # MNIST is not this model's data
    assert card["data"]["source"].startswith("npz:") and card["command"].endswith(f"--data {card['data']['source']}")


@pytest.mark.slow  # serves the four models above in a fresh process
def test_colour_models_serve_in_plain_tensorflow(colour_runs, tmp_path):
    root, _ = colour_runs
    x = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    paths = [str(root / name / "saved_model") for name in COLOUR_MODELS]
    result = subprocess.run([sys.executable, "-c", SERVE, str(tmp_path / "x.npy"), json.dumps(paths)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    for name, path in zip(COLOUR_MODELS, paths):
        np.testing.assert_allclose(served[path], pde_zoo.load(root / name).predict(x, verbose=0), atol=1e-5, err_msg=name)


@pytest.mark.slow  # a real process killed with SIGKILL mid-run, then the same command again
def test_sigkilled_run_resumes_with_nothing_finished_lost(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "pde_zoo.cli", "train", "pde2", "--depth", "1", "--recipe", "pdenet", "--set", "epochs=4",
               "--set", "train_examples=1024", "--set", "validation=512", "--set", "test_examples=256", "--threads", "1", "--out", str(out)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    while not metadata.is_file() and child.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "card.json").exists(), "killed before the end"
    finished = json.loads(metadata.read_text())["epoch"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    card = pde_zoo.cards.read_card(out)
    assert card["complete"] and card["epochs_run"] == 4 and card["resumed_after_epochs"] == [finished]
    assert [int(r["epoch"]) for r in read_history(out / "history.csv")] == [1, 2, 3, 4]


def test_compare_runs_chooses_on_validation_within_noise():
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "scripts"))
    import compare_runs

    assert compare_runs.noise(0.995, 5000) == pytest.approx(2 * math.sqrt(2 * 0.995 * 0.005 / 5000))
    old = {"val_accuracy": 0.9956, "data": {"validation_examples": 5000}}
    margin = compare_runs.noise(0.9956, 5000)  # ~0.27%
    assert compare_runs.decide(old, {**old, "val_accuracy": 0.9956 - 0.9 * margin})[0] == "keep the re-made run"
    assert compare_runs.decide(old, {**old, "val_accuracy": 0.9956 - 1.1 * margin})[0] == "keep the preset"
    assert compare_runs.decide(old, {**old, "val_accuracy": 0.999})[0] == "keep the re-made run"
