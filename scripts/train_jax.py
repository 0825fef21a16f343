#!/usr/bin/env python
"""Train registry models on the Keras JAX backend (a GPU machine without TensorFlow), each in its
own process, within a wall-clock budget; writes one `<run>.tar` per model (model.keras,
card.json, history.csv) that `scripts/import_runs.py` turns into a `saved_models/` entry
(SavedModel exported there, with TensorFlow, and the test accuracy re-measured).

Data: an .npz of MNIST arrays (`python scripts/train_jax.py --pack-data FILE` writes it from the
verified IDX files with pde_zoo.data; the sha256 of the four files is stored in it). The last
5,000 training images are held out as a validation split (reported every epoch, never used to
fit); the test set is scored once, at the end.

Recipes (`RECIPES`, recorded in each card): Adam with a linear warm-up then cosine decay to 0
over the planned epochs, random shifts of up to `shift` pixels (zero padding), batch 128. The
planned epoch count is min(max_epochs, what fits in the budget after timing the first epoch),
so the schedule always completes; the card records planned and run epochs.

  python scripts/train_jax.py --pack-data .devdata/mnist.npz
  KERAS_BACKEND=jax python scripts/train_jax.py --data .devdata/mnist.npz --out OUT --budget 420 \
      odenet-1 pde2ode-5
"""

import argparse
import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

RECIPES = {
    "odenet": {"optimizer": "adam", "peak_learning_rate": 3e-3, "warmup_epochs": 1, "schedule": "cosine", "batch_size": 128, "shift": 2, "max_epochs": 15},
    "pde1ode": {"optimizer": "adam", "peak_learning_rate": 1e-3, "warmup_epochs": 0, "schedule": "cosine", "batch_size": 128, "shift": 0, "max_epochs": 30},
    "pde2ode": {"optimizer": "adam", "peak_learning_rate": 1e-3, "warmup_epochs": 0, "schedule": "cosine", "batch_size": 128, "shift": 0, "max_epochs": 30},
    "pdenet": {"optimizer": "adam", "peak_learning_rate": 3e-3, "warmup_epochs": 1, "schedule": "cosine", "batch_size": 128, "shift": 2, "max_epochs": 15},
    "convresnet": {"optimizer": "adam", "peak_learning_rate": 3e-3, "warmup_epochs": 1, "schedule": "cosine", "batch_size": 128, "shift": 2, "max_epochs": 15},
}
VALIDATION = 5000


def pack_data(path):
    """Write the verified MNIST arrays (pde_zoo.data, TFDS order) and their sha256 to `path`."""
    import numpy as np

    from pde_zoo import data

    x, y, digest = data.load_arrays("train")
    xt, yt, _ = data.load_arrays("test")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=x, y_train=y, x_test=xt, y_test=yt, sha256=np.array(digest))
    print(f"wrote {path}: {len(x)} train, {len(xt)} test, data sha256 {digest}")


def shifted(images, shift, rng):
    """Each image moved by a random (dy, dx) in [-shift, shift]², zeros shifted in."""
    import numpy as np

    if not shift:
        return images
    n, h, w, c = images.shape
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    oy, ox = rng.integers(0, 2 * shift + 1, n), rng.integers(0, 2 * shift + 1, n)
    rows = (oy[:, None] + np.arange(h))[:, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


def ode_stats(model, batch):
    """Forward NFE of the model's ODE blocks on `batch` (eager call) and the latest adjoint
    backward NFE recorded in training (pde_zoo.ode.last_backward_stats), or {} without ODE blocks."""
    from pde_zoo.layers import ODEBlock
    from pde_zoo.ode import last_backward_stats

    blocks = [layer for layer in model.layers if isinstance(layer, ODEBlock)]
    if not blocks:
        return {}
    forward = 0
    x = batch
    for layer in model.layers[1:]:
        x = layer(x)
        if isinstance(layer, ODEBlock):
            forward += layer.last_stats["nfe"]
    backward = last_backward_stats()
    return {"nfe_forward": forward, "nfe_backward": backward["nfe"] if backward else None}


def parse_run(spec):
    """"NAME-DEPTH[:key=value,...]" -> (name, depth, options, tag); values are JSON
    (true, 32, "relu") or plain strings; the tag names the archive: NAME-DEPTH, plus
    "__key-value_..." when there are options."""
    run, _, rest = spec.partition(":")
    name, depth = run.rsplit("-", 1)
    options = {}
    for item in filter(None, rest.split(",")):
        key, value = item.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    tag = run + ("__" + "_".join(f"{k}-{str(v).lower()}" for k, v in options.items()) if options else "")
    return name, int(depth), options, tag


def train_one(spec, data_path, out, budget, seed, max_epochs=None):
    """Train the run `spec` (see `parse_run`) in this process; write OUT/<tag>.tar."""
    import keras
    import numpy as np

    import pde_zoo

    start_wall = time.time()
    name, depth, options, run = parse_run(spec)
    recipe = dict(RECIPES[name])
    if max_epochs:
        recipe["max_epochs"] = max_epochs
    keras.utils.set_random_seed(seed)
    d = np.load(data_path)
    x_all = d["x_train"].astype("float32") / 255.0
    y_all = d["y_train"].astype("int32")
    x_fit, y_fit = x_all[:-VALIDATION], y_all[:-VALIDATION]
    x_val, y_val = x_all[-VALIDATION:], y_all[-VALIDATION:]
    x_test, y_test = d["x_test"].astype("float32") / 255.0, d["y_test"].astype("int32")

    model = pde_zoo.build(name, depth=depth, **options)
    steps_per_epoch = math.ceil(len(x_fit) / recipe["batch_size"])
    planned = recipe["max_epochs"]
    peak, warm = recipe["peak_learning_rate"], recipe["warmup_epochs"] * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(  # linear warm-up to the peak, then cosine to 0
        initial_learning_rate=0.0 if warm else peak, decay_steps=max(1, planned * steps_per_epoch - warm),
        warmup_target=peak if warm else None, warmup_steps=warm,
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    history = []
    epoch = 0
    while epoch < planned:
        t0 = time.time()
        fit = model.fit(shifted(x_fit, recipe["shift"], rng), y_fit, batch_size=recipe["batch_size"], epochs=1, shuffle=True, verbose=0)
        seconds = time.time() - t0
        val_loss, val_acc = model.evaluate(x_val, y_val, batch_size=1000, verbose=0)
        row = {"epoch": epoch + 1, "loss": fit.history["loss"][0], "accuracy": fit.history["accuracy"][0],
               "val_loss": val_loss, "val_accuracy": val_acc, "seconds": round(seconds, 2), **ode_stats(model, x_val[:128])}
        history.append(row)
        print(f"{run} epoch {epoch + 1}/{planned} {json.dumps(row)}", flush=True)
        epoch += 1
        if epoch == 1:  # plan the schedule so that it completes within the budget
            per_epoch = time.time() - t0  # the first epoch includes compilation: a safe overestimate
            fits = 1 + int((budget - (time.time() - start_wall)) / (per_epoch * 1.1))
            planned = max(1, min(recipe["max_epochs"], fits))
            schedule.decay_steps = max(1, planned * steps_per_epoch - warm)
            model.train_function = None  # retrace with the new schedule length
            print(f"{run}: {per_epoch:.1f} s first epoch -> {planned} planned epochs", flush=True)
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    import jax

    card = {
        "model": f"{name}-{depth}", "name": name, "depth": depth, "options": options,
        "recipe": {**recipe, "planned_epochs": planned, "validation": f"last {VALIDATION} training images (not fitted)",
                   "fit_examples": len(x_fit), "loss": "sparse_categorical_crossentropy"},
        "lr_source": "recipe",
        "epochs_run": len(history), "complete": len(history) == planned, "stopped_on_nan": False, "seed": seed,
        "params": int(model.count_params()), "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "val_accuracy": float(history[-1]["val_accuracy"]), "train_seconds": round(sum(r["seconds"] for r in history), 1),
        "data": {"sha256": str(d["sha256"]), "train_examples": len(x_fit), "test_examples": len(x_test), "subset": False},
        "versions": {"pde_zoo": pde_zoo.__version__, "keras": keras.__version__, "jax": jax.__version__, "backend": "jax", "python": platform.python_version()},
        "machine": {"device": str(jax.devices()[0].device_kind), "platform": platform.platform()},
        "command": " ".join(sys.argv), "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    card.update({k: history[-1][k] for k in ("nfe_forward", "nfe_backward") if k in history[-1]})
    work = Path(out) / f".{run}"
    work.mkdir(parents=True, exist_ok=True)
    model.save(work / "model.keras")
    (work / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    fields = list(history[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields)
    writer.writeheader()
    writer.writerows(history)
    (work / "history.csv").write_text(buffer.getvalue())
    tmp = Path(out) / f".{run}.tar.tmp"
    with tarfile.open(tmp, "w") as tar:
        for f in ("model.keras", "card.json", "history.csv"):
            tar.add(work / f, arcname=f"{run}/{f}")
    os.replace(tmp, Path(out) / f"{run}.tar")
    print(f"{run}: test accuracy {test_acc:.4f} after {len(history)} epochs", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="NAME-DEPTH[:key=value,...], e.g. odenet-1 or pdenet-50:stable=false")
    parser.add_argument("--data", default=".devdata/mnist.npz")
    parser.add_argument("--out", default=os.environ.get("OUT", "runs/jax"))
    parser.add_argument("--budget", type=float, default=420, help="wall-clock seconds for each run (in parallel)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipe's max_epochs (smoke tests)")
    parser.add_argument("--pack-data", metavar="FILE", help="write the MNIST .npz and exit")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: train this run
    args = parser.parse_args()
    if args.pack_data:
        return pack_data(args.pack_data)
    if args.one:
        return train_one(args.one, args.data, args.out, args.budget, args.seed, args.max_epochs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    children = []
    for run in args.runs:
        command = [sys.executable, __file__, "--one", run, "--data", args.data, "--out", args.out, "--budget", str(args.budget), "--seed", str(args.seed)]
        if args.max_epochs:
            command += ["--max-epochs", str(args.max_epochs)]
        children.append((run, subprocess.Popen(command, env=env)))
    failed = [run for run, child in children if child.wait() != 0]
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
