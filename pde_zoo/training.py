"""Training, evaluation and export with the thesis recipe; every run writes a run directory:

    model.keras      the Keras model (architecture + weights)
    saved_model/     SavedModel for TF-Serving / GPU inference, signature `serve`
                     (also `serving_default`): float32 (N, 28, 28, 1) in [0, 1] -> (N, 10) probabilities
    card.json        recipe, epochs actually run, seed, params, test accuracy, train seconds, data sha256
    history.csv      per epoch: train loss/accuracy, test loss/accuracy, seconds
    logs/            TensorBoard;  backup/  BackupAndRestore state while the run is unfinished
"""

import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from pde_zoo import data as data_lib
from pde_zoo import distributed
from pde_zoo._version import __version__
from pde_zoo.history import SOLVER_FIELDS, read_history, write_history
from pde_zoo.io_utils import atomic_save, atomic_write_json
from pde_zoo.loading import load
from pde_zoo.models.thesis import THESIS_RECIPE, compile_model
from pde_zoo.registry import build, get_spec, run_name, validate_depth
from pde_zoo.threads import set_threads


def set_determinism(seed):
    """Seed Python, NumPy and TF/Keras, and ask TF for deterministic ops (same seed, same result)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class SolverStats(keras.callbacks.Callback):
    """After every epoch, the function evaluations of the model's ODE blocks on a fixed probe
    batch, added to the epoch's logs (before `HistoryCSV` writes them):

    - `nfe_forward`: NFE of the forward solves (an eager forward pass, summed over blocks and
      segments; `ODEBlock.last_stats`);
    - `nfe_backward`: NFE of the adjoint backward solves of one eager gradient of the loss
      (`pde_zoo.ode.record_backward_stats`); empty when the blocks use autodiff instead.

    They are measured at the epoch's weights (the adaptive solver's cost changes with them).
    """

    def __init__(self, images, labels):
        super().__init__()
        self.images, self.labels = images, labels

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from pde_zoo.layers import ODEBlock
        from pde_zoo.ode import record_backward_stats

        blocks = [layer for layer in self.model.layers if isinstance(layer, ODEBlock)]
        if logs is None or not blocks:
            return
        with record_backward_stats() as backward:
            with tf.GradientTape() as tape:
                probs = self.model(self.images, training=True)
                loss = keras.losses.sparse_categorical_crossentropy(self.labels, probs)
            tape.gradient(loss, self.model.trainable_weights)
        logs["nfe_forward"] = sum(block.last_stats["nfe"] for block in blocks)
        if backward:  # none when the blocks differentiate through the solver (adjoint=False)
            logs["nfe_backward"] = sum(record["nfe"] for record in backward)


class HistoryCSV(keras.callbacks.Callback):
    """Writes history.csv atomically after every epoch; on resume keeps only the earlier epochs.
    Columns: `pde_zoo.history.HISTORY_FIELDS`, plus `SOLVER_FIELDS` for models with ODE blocks
    (`SolverStats`)."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:
            self.rows = [r for r in read_history(self.path) if int(r["epoch"]) <= epoch]
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "test_loss": logs.get("val_loss"),
            "test_accuracy": logs.get("val_accuracy"),
            "seconds": round(time.perf_counter() - self._start, 3),
            **{k: logs[k] for k in SOLVER_FIELDS if k in logs},
        }
        self.rows = [r for r in self.rows if int(r["epoch"]) != row["epoch"]] + [row]
        write_history(self.path, self.rows)


def load_split(split, data_dir=None, limit=None):
    """(images, labels, sha256) of a split, optionally only the first `limit` examples."""
    images, labels, digest = data_lib.load_arrays(split, data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels, digest


def train(
    name,
    depth=None,
    *,
    epochs=THESIS_RECIPE["epochs"],
    batch_size=THESIS_RECIPE["batch_size"],
    learning_rate=THESIS_RECIPE["learning_rate"],
    seed=0,
    out=None,
    data_dir=None,
    train_limit=None,
    test_limit=None,
    overwrite=False,
    verbose=1,
    lr_source="fixed",
    threads=None,
    callbacks=(),
    strategy="none",
    devices=None,
    **options,
):
    """Train registry model `name` at `depth` with the thesis recipe; write the run directory.

    Resumable: a killed run restarts from its last finished epoch (BackupAndRestore). A run
    directory whose card says it finished with the same recipe is returned as it is unless
    `overwrite`. Extra Keras `callbacks` run after the built-in ones. Returns the card (dict).

    `strategy` ("none", "mirrored" or "multihost") and `devices` spread the training over
    several devices or hosts (`pde_zoo.distributed`); the global batch stays `batch_size`.
    In a multihost group only process 0 writes `out` (and returns the card; the others
    return a short summary).
    """
    spec = get_spec(name)
    depth = validate_depth(spec.default_depth if depth is None else depth)
    for key, value in {"epochs": epochs, "batch_size": batch_size}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive. Received: learning_rate={learning_rate}")
    out = Path(out or Path("runs") / run_name(name, depth))
    recipe = {**THESIS_RECIPE, "learning_rate": float(learning_rate), "batch_size": batch_size, "epochs": epochs}
    card_path = out / "card.json"
    if card_path.is_file() and not overwrite:
        card = json.loads(card_path.read_text())
        if card.get("recipe") == recipe and card.get("seed") == seed and card.get("complete"):
            print(f"{out} is already trained ({card['epochs_run']} epochs, test accuracy {card['test_accuracy']:.4f}); pass overwrite=True / --overwrite to retrain.")
            return card
    if overwrite:
        for stale in ("history.csv", "card.json"):
            (out / stale).unlink(missing_ok=True)
        shutil.rmtree(out / "backup", ignore_errors=True)

    set_threads(threads)
    run = distributed.setup(strategy, devices)  # before TF / JAX run any op
    set_determinism(seed)
    x_train, y_train, digest = load_split("train", data_dir, train_limit)
    x_test, y_test, _ = load_split("test", data_dir, test_limit)
    train_ds = run.train_dataset(x_train, y_train, batch_size, seed)
    test_ds = run.eval_dataset(x_test, y_test)

    with run.scope():
        model = compile_model(build(name, depth, **options), learning_rate)
    fit_epochs(model, run, train_ds, test_ds, out, epochs=epochs, probe=probe_batch(x_train, y_train), callbacks=callbacks, verbose=verbose)
    model = run.local_model(model, lambda: compile_model(build(name, depth, **options), learning_rate))
    if not run.is_chief:
        return {"model": run_name(name, depth), "process_id": run.process_id, "distribution": run.describe()}
    history = read_history(out / "history.csv")
    test_loss, test_acc = evaluate(model, data_dir, test_limit)
    atomic_save(out / "model.keras", model.save)
    export_saved_model(model, out / "saved_model")
    best = max(history, key=lambda r: float(r["test_accuracy"])) if history else None
    card = {
        "model": run_name(name, depth),
        "name": name,
        "depth": depth,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "recipe": recipe,
        "lr_source": lr_source,
        "distribution": run.describe(),
        "epochs_run": len(history),
        "complete": len(history) == epochs and not model.stop_training,
        "stopped_on_nan": bool(model.stop_training and np.isnan(float(history[-1]["loss"]))) if history else False,
        "seed": seed,
        "params": int(model.count_params()),
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "best_test_accuracy": float(best["test_accuracy"]) if best else None,
        "best_epoch": int(best["epoch"]) if best else None,
        "train_seconds": round(sum(float(r["seconds"]) for r in history), 1),
        **{k: int(history[-1][k]) for k in SOLVER_FIELDS if history and history[-1].get(k)},  # last epoch's NFE
        "data": {"sha256": digest, "train_examples": int(len(x_train)), "test_examples": int(len(x_test)), "subset": train_limit is not None or test_limit is not None},
        "versions": {"pde_zoo": __version__, "tensorflow": _tf_version(), "keras": keras.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "tf_threads": threads or "default", "platform": platform.platform()},
        "command": " ".join(sys.argv),
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    atomic_write_json(card_path, card)
    shutil.rmtree(out / "backup", ignore_errors=True)  # kept until the results are written
    return card


def probe_batch(images, labels, size=32):
    """The fixed batch `SolverStats` measures the NFE on: the first `size` training examples."""
    return images[:size].astype("float32") / 255, labels[:size]


def fit_epochs(model, run, train_ds, test_ds, out, *, epochs, probe, callbacks=(), verbose=1):
    """`model.fit` as `train` runs it, on a compiled model: `epochs` epochs over `train_ds`
    (shuffled by `run.train_dataset`), the test set `test_ds` evaluated after every epoch, and
    the run's callbacks in this order: `SolverStats` on `probe`, `HistoryCSV` and TensorBoard
    (the chief only), TerminateOnNaN, the data epoch and BackupAndRestore (`run.callbacks`),
    then `callbacks`. Writes history.csv, logs/ and backup/ under `out`.

    `run` is the `pde_zoo.distributed.Distribution` the datasets and model were made with.
    scripts/bench.py times whole epochs of this loop beside its bare `fit` rows.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [
        SolverStats(*probe),
        *([HistoryCSV(out / "history.csv"), keras.callbacks.TensorBoard(str(out / "logs"))] if run.is_chief else []),
        keras.callbacks.TerminateOnNaN(),
        *run.callbacks(out / "backup"),
        *callbacks,
    ]
    # train_ds shuffles itself (seeded); fit's own shuffle does not apply to a dataset.
    with run.guard():
        model.fit(train_ds, validation_data=test_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    return model


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def export_saved_model(model, path):
    """Export `model` as a SavedModel (endpoint `serve`) at `path`, atomically.

    Inference graphs hold standard TF ops only (the zoo's C++ stencil op runs in training
    steps alone), so TF-Serving and GPU machines load it with nothing but TensorFlow.
    """

    def export(tmp):
        model.export(str(tmp), format="tf_saved_model", verbose=False)

    atomic_save(path, export)


def evaluate(model, data_dir=None, limit=None, batch_size=1024):
    """Test-set (loss, accuracy) of a model, compiled or not (a SavedModel wrapper too)."""
    x_test, y_test, _ = load_split("test", data_dir, limit)
    probs = model.predict(data_lib.make_dataset(x_test, y_test, batch_size).map(lambda x, y: x), verbose=0)
    probs = np.asarray(probs)
    loss = float(np.mean(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-7, 1.0))))
    return loss, float(np.mean(probs.argmax(-1) == y_test))


def predict(model_or_spec, images):
    """Class probabilities (N, num_classes) for float32 images in [0, 1] of the model's input shape.

    `model_or_spec` is a keras.Model or anything `pde_zoo.load` accepts. Bad images (wrong
    shape or dtype, values outside [0, 1], NaN or Inf) raise one ValueError naming the problem
    and the fix (see `pde_zoo.data.validate_images`). An empty batch (N = 0) gives an empty
    float32 array of shape (0, num_classes).
    """
    model = model_or_spec if isinstance(model_or_spec, keras.Model) else load(model_or_spec, compile=False)
    images = data_lib.validate_images(images, tuple(model.input_shape[1:]))
    if not len(images):  # keras's predict fails on an empty batch
        return np.zeros((0, *model.output_shape[1:]), "float32")
    return np.asarray(model.predict(images, verbose=0))
