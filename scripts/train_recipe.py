#!/usr/bin/env python
"""Train registry models with their own recipes (beyond the thesis recipe), on any Keras
backend: the TensorFlow CPU path here, or KERAS_BACKEND=jax on a GPU machine without
TensorFlow. Each run is its own process (`--jobs` at a time) and writes OUT/<run>/ with
model.keras, card.json, history.csv (and saved_model/ on TensorFlow; JAX runs get theirs from
`scripts/import_runs.py` where TF is). Resumable: every epoch checkpoints OUT/<run>/work/; a
killed run rerun with the same command continues from its last finished epoch, a finished
run is skipped.

Data: an .npz of MNIST arrays (`--pack-data FILE` writes it from the verified IDX files with
pde_zoo.data; the sha256 of the four files is stored in it). The last 5,000 training images
are a validation split (scored every epoch, never fitted); the test set is scored once, at the
end.

Recipes (`RECIPES`, recorded in each card): Adam with a linear warm-up then cosine decay to 0
over the planned epochs, random shifts of up to `shift` pixels (zero padding), batch 128. The
planned epoch count is min(max_epochs, what fits in --budget seconds after timing the first
epoch without its compilation: a JIT backend spends most of a short first epoch compiling), so
the schedule always completes; the card records planned and run epochs, and the epochs after
which a killed run was resumed.

  python scripts/train_recipe.py --pack-data .devdata/mnist.npz
  python scripts/train_recipe.py --jobs 2 --budget 2400 --out saved_models pdenet-16:channels=32 pde2ode-5
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import shutil
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


def parse_run(spec):
    """"NAME-DEPTH[:key=value,...]" -> (name, depth, options, run); values are JSON
    (true, 32, "relu") or plain strings; `run` names the output directory: NAME-DEPTH, plus
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


def solver_stats(model, images, labels):
    """Forward and adjoint-backward NFE of the model's ODE blocks on a probe batch ({} without
    ODE blocks): one eager forward pass and one gradient (`pde_zoo.ode.record_backward_stats`)."""
    import keras

    from pde_zoo.layers import ODEBlock
    from pde_zoo.ode import record_backward_stats

    blocks = [layer for layer in model.layers if isinstance(layer, ODEBlock)]
    if not blocks:
        return {}
    loss_fn = lambda weights: keras.ops.mean(  # noqa: E731
        keras.losses.sparse_categorical_crossentropy(labels, model.stateless_call(weights, model.non_trainable_variables, images)[0])
    )
    with record_backward_stats() as backward:
        if keras.backend.backend() == "jax":
            import jax

            jax.block_until_ready(jax.grad(loss_fn)([v.value for v in model.trainable_variables]))
        else:
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, model(images, training=True)))
            tape.gradient(loss, model.trainable_weights)
    model(images)  # eager forward: ODEBlock.last_stats
    stats = {"nfe_forward": sum(block.last_stats["nfe"] for block in blocks)}
    if backward:
        stats["nfe_backward"] = sum(record["nfe"] for record in backward)
    return stats


def batch_timer():
    """A Keras callback recording the wall seconds of every training and evaluation batch in
    its `train` and `test` lists."""
    import keras

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train, self.test, self._start = [], [], 0.0

        def _begin(self, batch, logs=None):
            self._start = time.perf_counter()

        on_train_batch_begin = on_test_batch_begin = _begin

        def on_train_batch_end(self, batch, logs=None):
            self.train.append(time.perf_counter() - self._start)

        def on_test_batch_end(self, batch, logs=None):
            self.test.append(time.perf_counter() - self._start)

    return BatchTimer()


def steady_epoch_seconds(epoch_seconds, train_batches, test_batches):
    """An epoch's wall time without compilation: `epoch_seconds` less, for fit and for evaluate,
    the first batch's excess over the median of the others (the first call of a traced or
    jitted step compiles it; later batches run the compiled step)."""
    import numpy as np

    excess = sum(max(0.0, b[0] - float(np.median(b[1:]))) for b in (train_batches, test_batches) if len(b) > 1)
    return max(epoch_seconds - excess, 1e-3)


TUNABLE = ("peak_learning_rate", "warmup_epochs", "batch_size", "shift", "max_epochs")  # --set keys


def recipe_overrides(items):
    """["shift=1", "peak_learning_rate=0.002"] -> {"shift": 1, "peak_learning_rate": 0.002}."""
    overrides = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        try:
            number = json.loads(value)
        except json.JSONDecodeError:
            number = None
        if not sep or key not in TUNABLE or isinstance(number, bool) or not isinstance(number, (int, float)):
            raise SystemExit(f"--set takes KEY=NUMBER with KEY one of {', '.join(TUNABLE)}. Received: {item!r}")
        overrides[key] = number
    return overrides


def train_one(spec, data_path, out, budget, seed, overrides=None):
    """Train the run `spec` (see `parse_run`) in this process into OUT/<run>/ (resumable), with
    its model's recipe updated by `overrides` (recorded in the card)."""
    import keras
    import numpy as np

    import pde_zoo
    from pde_zoo.history import write_history
    from pde_zoo.io_utils import atomic_save, atomic_write_json
    from pde_zoo.registry import run_name

    start_wall = time.time()
    name, depth, options, run = parse_run(spec)
    run_dir, work = Path(out) / run, Path(out) / run / "work"
    if (run_dir / "card.json").is_file():
        print(f"{run_dir} is finished; skipped", flush=True)
        return
    recipe = {**RECIPES[name], **(overrides or {})}
    keras.utils.set_random_seed(seed)
    d = np.load(data_path)
    x_all = d["x_train"].astype("float32") / 255.0
    y_all = d["y_train"].astype("int32")
    held_out = min(VALIDATION, len(x_all) // 10)
    x_fit, y_fit = x_all[:-held_out], y_all[:-held_out]
    x_val, y_val = x_all[-held_out:], y_all[-held_out:]
    x_test, y_test = d["x_test"].astype("float32") / 255.0, d["y_test"].astype("int32")
    steps_per_epoch = math.ceil(len(x_fit) / recipe["batch_size"])
    warm = recipe["warmup_epochs"] * steps_per_epoch

    if (work / "state.json").is_file():  # resume: the model with its optimizer (and schedule)
        state = json.loads((work / "state.json").read_text())
        history, planned = state["history"], state["planned"]
        resumed_after = state.get("resumed_after", []) + [len(history)]
        model = pde_zoo.load(work / "model.keras")
        print(f"{run}: resumed after epoch {len(history)} of {planned}", flush=True)
    else:
        history, planned, resumed_after = [], recipe["max_epochs"], []
        model = pde_zoo.build(name, depth=depth, **options)
        peak = recipe["peak_learning_rate"]
        schedule = keras.optimizers.schedules.CosineDecay(  # linear warm-up to the peak, then cosine to 0
            initial_learning_rate=0.0 if warm else peak, decay_steps=max(1, planned * steps_per_epoch - warm),
            warmup_target=peak if warm else None, warmup_steps=warm,
        )
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    while len(history) < planned:
        epoch = len(history)
        rng = np.random.default_rng((seed, epoch))
        t0, timer = time.time(), batch_timer()
        fit = model.fit(shifted(x_fit, recipe["shift"], rng), y_fit, batch_size=recipe["batch_size"], epochs=1, shuffle=True, verbose=0, callbacks=[timer])
        seconds = time.time() - t0
        val_loss, val_acc = model.evaluate(x_val, y_val, batch_size=1000, verbose=0, callbacks=[timer])
        row = {"epoch": epoch + 1, "loss": fit.history["loss"][0], "accuracy": fit.history["accuracy"][0],
               "val_loss": val_loss, "val_accuracy": val_acc, "seconds": round(seconds, 2),
               **solver_stats(model, x_val[:32], y_val[:32])}
        history.append(row)
        print(f"{run} epoch {epoch + 1}/{planned} {json.dumps(row)}", flush=True)
        if epoch == 0 and not (work / "state.json").is_file():  # plan the schedule to complete within the budget
            first_epoch = time.time() - t0
            per_epoch = steady_epoch_seconds(first_epoch, timer.train, timer.test)
            planned = max(1, min(recipe["max_epochs"], 1 + int((budget - (time.time() - start_wall)) / (per_epoch * 1.1))))
            if planned != recipe["max_epochs"]:
                model.optimizer.learning_rate.decay_steps = max(1, planned * steps_per_epoch - warm)
                model.train_function = None  # retrace with the new schedule length
            print(f"{run}: first epoch {first_epoch:.1f} s, {per_epoch:.1f} s without compilation -> {planned} planned epochs", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        atomic_save(work / "model.keras", model.save)
        atomic_write_json(work / "state.json", {"history": history, "planned": planned, "resumed_after": resumed_after})
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        framework, device = {"jax": jax.__version__}, str(jax.devices()[0].device_kind)
    else:
        import tensorflow as tf

        framework, device = {"tensorflow": tf.__version__}, f"{os.cpu_count()}-core CPU"
    card = {
        "model": run_name(name, depth), "name": name, "depth": depth, "options": options,
        "recipe": {**recipe, "planned_epochs": planned, "validation": f"last {held_out} training images (not fitted)",
                   "fit_examples": len(x_fit), "loss": "sparse_categorical_crossentropy"},
        "lr_source": "recipe",
        "epochs_run": len(history), "complete": len(history) == planned, "resumed_after_epochs": resumed_after, "stopped_on_nan": False, "seed": seed,
        "params": int(model.count_params()), "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "val_accuracy": float(history[-1]["val_accuracy"]), "train_seconds": round(sum(r["seconds"] for r in history), 1),
        "data": {"sha256": str(d["sha256"]), "train_examples": len(x_fit), "test_examples": len(x_test), "subset": len(x_all) < 60000},
        "versions": {"pde_zoo": pde_zoo.__version__, "keras": keras.__version__, "backend": backend, **framework, "python": platform.python_version()},
        "machine": {"device": device, "platform": platform.platform()},
        "command": " ".join(sys.argv), "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    card.update({k: history[-1][k] for k in ("nfe_forward", "nfe_backward") if k in history[-1]})
    atomic_save(run_dir / "model.keras", model.save)
    write_history(run_dir / "history.csv", history, fields=list(history[-1]))
    if backend == "tensorflow":
        from pde_zoo.training import export_saved_model

        export_saved_model(model, run_dir / "saved_model")
    atomic_write_json(run_dir / "card.json", card)  # last: a card means a finished run
    shutil.rmtree(work, ignore_errors=True)
    print(f"{run}: test accuracy {test_acc:.4f} after {len(history)} epochs", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="NAME-DEPTH[:key=value,...], e.g. odenet-1 or pdenet-50:stable=false")
    parser.add_argument("--data", default=".devdata/mnist.npz")
    parser.add_argument("--out", default="saved_models", help="runs are written to OUT/<run>/")
    parser.add_argument("--budget", type=float, default=420, help="wall-clock seconds for each run")
    parser.add_argument("--jobs", type=int, default=0, help="runs at a time (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipe's max_epochs (smoke tests)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value for these runs, e.g. --set shift=1 (repeatable; recorded in the card)")
    parser.add_argument("--pack-data", metavar="FILE", help="write the MNIST .npz and exit")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: train this run
    args = parser.parse_args()
    if args.pack_data:
        return pack_data(args.pack_data)
    overrides = recipe_overrides(args.set)  # a bad --set fails before anything starts
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    if args.one:
        return train_one(args.one, args.data, args.out, args.budget, args.seed, overrides)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    queue, running, failed = list(args.runs), [], []
    while queue or running:
        while queue and (not args.jobs or len(running) < args.jobs):
            run = queue.pop(0)
            command = [sys.executable, __file__, "--one", run, "--data", args.data, "--out", args.out, "--budget", str(args.budget), "--seed", str(args.seed)]
            if args.max_epochs:
                command += ["--max-epochs", str(args.max_epochs)]
            for item in args.set or ():
                command += ["--set", item]
            running.append((run, subprocess.Popen(command, env=env)))
        time.sleep(1)
        for run, child in [(r, c) for r, c in running if c.poll() is not None]:
            running.remove((run, child))
            if child.returncode != 0:
                failed.append(run)
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
