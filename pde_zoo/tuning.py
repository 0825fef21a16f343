"""Learning-rate search with KerasTuner (`pde-zoo tune NAME --depth D`).

The search space is the Adam learning rate, log-uniform on [1e-4, 1e-1] (the only
hyperparameter of the thesis recipe that is not structural). Trials train on the first
`train_limit` training images and are scored on a held-out slice of the *training* set
(the last `val_limit` images), never on the test set. The best value is written to
`tuning/<name>-<depth>.json` under the models directory, where `train_all.sh --lr tuned` reads it.
"""

import json
import time
from pathlib import Path

import keras_tuner as kt

from pde_zoo import data as data_lib
from pde_zoo.io_utils import atomic_write_json
from pde_zoo.models import compile_model
from pde_zoo.registry import build, get_spec, validate_depth

LR_RANGE = (1e-4, 1e-1)


class LearningRateHyperModel(kt.HyperModel):
    """A registry model at a fixed depth; `build(hp)` samples the Adam learning rate."""

    def __init__(self, name, depth):
        super().__init__(name=f"{name}-{depth}")
        self.model_name, self.depth = name, depth

    def build(self, hp):
        learning_rate = hp.Float("learning_rate", *LR_RANGE, sampling="log")
        return compile_model(build(self.model_name, self.depth), learning_rate)


def tuned_path(name, depth, models_dir="saved_models"):
    return Path(models_dir) / "tuning" / f"{name}-{depth}.json"


def tune(name, depth, *, max_epochs=4, factor=3, batch_size=128, train_limit=10000, val_limit=5000, seed=0, directory="runs/tuner", overwrite=False, models_dir="saved_models", data_dir=None, verbose=0):
    """Hyperband search of the learning rate; returns and writes the result dict.

    Args:
        max_epochs, factor: Hyperband budget (epochs of the longest trial, reduction factor).
        train_limit, val_limit: images of the training set used to fit / to score trials.
        directory: the tuner's working directory (one project per model, `<name>-<depth>`).
        overwrite: start the search afresh; if False an existing project is resumed.
    """
    get_spec(name)
    validate_depth(depth)
    images, labels, digest = data_lib.load_arrays("train", data_dir)
    if train_limit + val_limit > len(images):
        raise ValueError(f"train_limit + val_limit must be <= {len(images)} training images. Received: {train_limit} + {val_limit}")
    train_ds = data_lib.make_dataset(images[:train_limit], labels[:train_limit], batch_size, shuffle=True, seed=seed)
    val_ds = data_lib.make_dataset(images[-val_limit:], labels[-val_limit:], 1024)
    tuner = kt.Hyperband(
        LearningRateHyperModel(name, depth), objective="val_accuracy", max_epochs=max_epochs, factor=factor,
        seed=seed, directory=directory, project_name=f"{name}-{depth}", overwrite=overwrite,
    )
    start = time.perf_counter()
    tuner.search(train_ds, validation_data=val_ds, verbose=verbose)
    best = tuner.oracle.get_best_trials(1)[0]
    result = {
        "model": f"{name}-{depth}",
        "learning_rate": float(best.hyperparameters.get("learning_rate")),
        "best_val_accuracy": float(best.score),
        "trials": len(tuner.oracle.trials),
        "search": {"tuner": "Hyperband", "max_epochs": max_epochs, "factor": factor, "lr_range": list(LR_RANGE), "sampling": "log", "train_images": train_limit, "val_images": val_limit, "val_from": "last images of the training set", "seed": seed},
        "search_seconds": round(time.perf_counter() - start, 1),
        "data_sha256": digest,
    }
    atomic_write_json(tuned_path(name, depth, models_dir), result)
    return result


def tuned_learning_rate(name, depth, models_dir="saved_models"):
    """The tuned learning rate of `name` at `depth`; ValueError saying what to run if there is none."""
    path = tuned_path(name, depth, models_dir)
    if not path.is_file():
        raise ValueError(f"No tuned learning rate for {name}-{depth} ({path} is missing); run `pde-zoo tune {name} --depth {depth}` first.")
    return json.loads(path.read_text())["learning_rate"]
