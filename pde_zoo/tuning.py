"""Learning-rate search with KerasTuner (`pde-zoo tune NAME --depth D`), on one machine or many.

The search space is the Adam learning rate, log-uniform on [1e-4, 1e-1] (the only
hyperparameter of the thesis recipe that is not structural). Trials train on the first
`train_limit` training images and are scored on a held-out slice of the *training* set
(the last `val_limit` images), never on the test set. The best value is written to
`tuning/<name>-<depth>.json` under the models directory, where `train_all.sh --lr tuned` reads it.

Every trial starts from the same initial weights (the search seed) and reads the same batches,
so a trial's score depends on its hyperparameters alone, not on which process ran it or what
that process ran before.

Distributed search is KerasTuner's own: one chief process holds the oracle (a gRPC server)
and any number of workers ask it for trials, run them and report back, all sharing the tuner
directory (a shared filesystem across machines). Each process reads KerasTuner's variables:

    KERASTUNER_TUNER_ID      "chief" for the oracle, any other unique id ("tuner0", ...) for a worker
    KERASTUNER_ORACLE_IP     the chief's address (the chief binds it)
    KERASTUNER_ORACLE_PORT   the chief's port

`scripts/launch_tuner.sh` starts a chief and N local workers. The chief writes the result
file once the oracle has run every trial; workers print the trials they ran. A worker that
dies mid-trial is restarted with the same KERASTUNER_TUNER_ID and the oracle hands it the
same trial again (KerasTuner keeps one ongoing trial per tuner id), so no trial is lost or
run twice to completion.
"""

import json
import os
import time
from pathlib import Path

import keras
import keras_tuner as kt

from pde_zoo import data as data_lib
from pde_zoo.io_utils import atomic_write_json
from pde_zoo.optimizers import compile_model
from pde_zoo.recipes import RECIPES
from pde_zoo.registry import build, get_spec, run_name, validate_depth

LR_RANGE = (1e-4, 1e-1)
IDLE_WAIT_S = 1.0  # a worker the oracle has no trial for asks again after this long


class LearningRateHyperModel(kt.HyperModel):
    """A registry model at a fixed depth; `build(hp)` samples the Adam learning rate.

    Every build starts from the same initial weights (`seed`).
    """

    def __init__(self, name, depth, seed=0):
        super().__init__(name=run_name(name, depth))
        self.model_name, self.depth, self.seed = name, depth, seed

    def build(self, hp):
        learning_rate = hp.Float("learning_rate", *LR_RANGE, sampling="log")
        keras.utils.set_random_seed(self.seed)
        return compile_model(build(self.model_name, self.depth), learning_rate)


class _Hyperband(kt.Hyperband):
    """KerasTuner's Hyperband with fresh datasets per trial (the same batches whoever runs it),
    a line per finished trial, and a pause when the oracle has no trial to give yet."""

    def __init__(self, hypermodel, *, make_data, **kwargs):
        super().__init__(hypermodel, **kwargs)
        self._make_data = make_data
        self._asked_in_vain = False
        self.trials_run = []

    def run_trial(self, trial, *args, **kwargs):
        train_ds, val_ds = self._make_data()
        return super().run_trial(trial, train_ds, *args, validation_data=val_ds, **kwargs)

    def pre_create_trial(self):
        # KerasTuner's search loop asks again at once when the oracle answers IDLE (waiting for
        # other workers' trials to finish); without a pause a worker spins on gRPC calls.
        if self._asked_in_vain:
            time.sleep(IDLE_WAIT_S)
        self._asked_in_vain = True

    def on_trial_begin(self, trial):
        self._asked_in_vain = False
        print(f"trial {trial.trial_id} started by {self.tuner_id}: {_values(trial)}", flush=True)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.trials_run.append(trial.trial_id)
        print(f"trial {trial.trial_id} finished by {self.tuner_id}", flush=True)


def _values(trial):
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


def role():
    """"chief", "worker" (KerasTuner's distributed mode, from KERASTUNER_TUNER_ID) or "single"."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def tuned_path(name, depth, models_dir="saved_models"):
    return Path(models_dir) / "tuning" / f"{run_name(name, depth)}.json"


def tune(name, depth, *, max_epochs=4, factor=3, batch_size=RECIPES["thesis"].batch_size, train_limit=10000, val_limit=5000, seed=0, directory="runs/tuner", overwrite=False, models_dir="saved_models", data_dir=None, verbose=0):
    """Hyperband search of the learning rate; returns (and, single or chief, writes) the result.

    Args:
        max_epochs, factor: Hyperband budget (epochs of the longest trial, reduction factor).
        train_limit, val_limit: images of the training set used to fit / to score trials.
        directory: the tuner's working directory (one project per model, `<name>-<depth>`);
            shared by the chief and the workers in a distributed search.
        overwrite: start the search afresh; if False an existing project is resumed. A worker
            never deletes the project (only a single process or the chief does).

    Returns:
        single process or chief: the result dict written to `tuned_path(...)`;
        worker: {"role": "worker", "tuner_id": ..., "trials_run": [trial ids]}.
    """
    from pde_zoo.training import set_determinism

    get_spec(name)
    validate_depth(depth)
    images, labels, digest = data_lib.load_arrays("train", data_dir)
    if train_limit + val_limit > len(images):
        raise ValueError(f"train_limit + val_limit must be <= {len(images)} training images. Received: {train_limit} + {val_limit}")
    set_determinism(seed)
    this_role = role()

    def make_data():
        return (data_lib.make_dataset(images[:train_limit], labels[:train_limit], batch_size, shuffle=True, seed=seed),
                data_lib.make_dataset(images[-val_limit:], labels[-val_limit:], 1024))

    tuner = _Hyperband(
        LearningRateHyperModel(name, depth, seed), make_data=make_data, objective="val_accuracy", max_epochs=max_epochs,
        factor=factor, seed=seed, directory=directory, project_name=run_name(name, depth), overwrite=overwrite and this_role != "worker",
    )
    start = time.perf_counter()
    tuner.search(verbose=verbose)
    if this_role == "worker":
        return {"role": "worker", "tuner_id": tuner.tuner_id, "trials_run": tuner.trials_run}
    best = tuner.oracle.get_best_trials(1)[0]
    result = {
        "model": run_name(name, depth),
        "learning_rate": float(best.hyperparameters.get("learning_rate")),
        "best_val_accuracy": float(best.score),
        "best_trial": best.trial_id,
        "trials": len(tuner.oracle.trials),
        "search": {"tuner": "Hyperband", "max_epochs": max_epochs, "factor": factor, "lr_range": list(LR_RANGE), "sampling": "log", "train_images": train_limit, "val_images": val_limit, "val_from": "last images of the training set", "seed": seed, "distributed": this_role == "chief"},
        "search_seconds": round(time.perf_counter() - start, 1),
        "data_sha256": digest,
    }
    atomic_write_json(tuned_path(name, depth, models_dir), result)
    return result


def tuned_learning_rate(name, depth, models_dir="saved_models"):
    """The tuned learning rate of `name` at `depth`; ValueError saying what to run if there is none."""
    path = tuned_path(name, depth, models_dir)
    if not path.is_file():
        raise ValueError(f"No tuned learning rate for {run_name(name, depth)} ({path} is missing); run `pde-zoo tune {name} --depth {depth}` first.")
    return json.loads(path.read_text())["learning_rate"]
