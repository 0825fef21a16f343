"""The one training loop: `train` (and `pde-zoo train`) runs a registry model with a recipe
(`pde_zoo.recipes`) on a data source (`pde_zoo.sources`) and writes a run directory:

    model.keras      the Keras model (architecture + weights)
    saved_model/     SavedModel for TF-Serving / GPU inference, signature `serve`
                     (also `serving_default`): float32 (N, H, W, C) in [0, 1] -> (N, classes)
    card.json        what ran and what came of it (`pde_zoo.cards`), written last
    history.csv      one row per epoch (`pde_zoo.history.HISTORY_FIELDS`)
    run.json         the resolved run, written first: a rerun resumes exactly it
    logs/            TensorBoard;  backup/  BackupAndRestore state while the run is unfinished

Everything that trains goes through it: the CLI, `scripts/train_all.sh` and its shard claims,
`--strategy mirrored|multihost`, the tuner's final fit (`train_all.sh --lr tuned`) and
`pde-zoo train --from-card`.
"""

import json
import math
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from pde_zoo import cards, distributed, info
from pde_zoo import recipes as recipes_lib
from pde_zoo._version import __version__
from pde_zoo.history import read_history, write_history
from pde_zoo.io_utils import atomic_save, atomic_write_json
from pde_zoo.inference import evaluate_arrays, export_saved_model
from pde_zoo.optimizers import compile_model, learning_rate_schedule
from pde_zoo.registry import build, get_spec, run_name, validate_depth
from pde_zoo.sources import load_source
from pde_zoo.threads import set_threads

PLAN_MARGIN = 1.1  # the budget planner leaves 10% of the budget for what it did not time
# Training steps per call of the compiled step (Keras's `steps_per_execution`) on the TensorFlow backend.
# Each call of a TF step function pays per captured variable (~2 µs each; pde2-50 has 260) and for the
# Python around it (docs/performance.md, item 9, has the measured gain). The weights are bit-identical to
# one step per call (tests/test_training.py); per-batch callbacks (progress bar, TerminateOnNaN) see every
# 32nd batch.
STEPS_PER_EXECUTION = 32
PROBE_STEPS = 6  # the planner's evaluation steps (the first traces; the median of the rest counts), and its fewest training steps per timing


def set_determinism(seed):
    """Seed Python, NumPy and TF/Keras, and ask TF for deterministic ops (same seed, same result)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def solver_stats(model, images, labels):
    """Forward and adjoint-backward NFE of the model's ODE blocks on a probe batch ({} without
    ODE blocks): one gradient of the loss (`pde_zoo.ode.record_backward_stats`; no backward
    NFE when the blocks differentiate through the solver), then one eager forward pass
    (`ODEBlock.last_stats`). Any Keras backend."""
    from pde_zoo.layers import ODEBlock
    from pde_zoo.ode import record_backward_stats

    blocks = [layer for layer in model.layers if isinstance(layer, ODEBlock)]
    if not blocks:
        return {}
    with record_backward_stats() as backward:
        if keras.backend.backend() == "jax":
            import jax

            def loss_fn(weights):
                probs = model.stateless_call(weights, model.non_trainable_variables, images)[0]
                return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probs))

            jax.block_until_ready(jax.grad(loss_fn)([v.value for v in model.trainable_variables]))
        else:
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, model(images, training=True)))
            tape.gradient(loss, model.trainable_weights)
    model(images)
    stats = {"nfe_forward": sum(block.last_stats["nfe"] for block in blocks)}
    if backward:
        stats["nfe_backward"] = sum(record["nfe"] for record in backward)
    return stats


class EpochRecord(keras.callbacks.Callback):
    """Writes history.csv atomically after every epoch (on resume keeping only the earlier
    epochs): losses and accuracies, `monitor` ("val" or "test": what `fit` scored every epoch),
    the learning rate of the epoch's last step, seconds, and for models with ODE blocks the
    solver's NFE on a fixed probe batch at the epoch's weights (`solver_stats`)."""

    def __init__(self, path, monitor, schedule, probe):
        super().__init__()
        self.path, self.monitor, self.schedule, self.probe = Path(path), monitor, schedule, probe
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:
            self.rows = [r for r in read_history(self.path) if int(r["epoch"]) <= epoch]
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = round(time.perf_counter() - self._start, 3)
        last_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
        rate = self.schedule if isinstance(self.schedule, float) else float(keras.ops.convert_to_numpy(self.schedule(last_step)))
        row = {
            "epoch": epoch + 1,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            f"{self.monitor}_loss": logs.get("val_loss"),
            f"{self.monitor}_accuracy": logs.get("val_accuracy"),
            "learning_rate": rate,
            "seconds": seconds,
            **solver_stats(self.model, *self.probe),
        }
        self.rows = [r for r in self.rows if int(r["epoch"]) != row["epoch"]] + [row]
        write_history(self.path, self.rows)


def steps_per_execution(run=None):
    """Training steps per call of the compiled step in `train`: `STEPS_PER_EXECUTION` on TensorFlow on one
    device; 1 under `--strategy mirrored` (Keras 3.15's multi-step loop fails under MirroredStrategy: "You must
    feed a value for placeholder tensor .../while/cond/Placeholder_1") and on JAX (its `jit` takes the state as
    one call's arguments already, and a multi-step `jit` may fuse differently across steps)."""
    one_device = run is None or run.kind == "none"
    return STEPS_PER_EXECUTION if keras.backend.backend() == "tensorflow" and one_device else 1


def probe_batch(images, labels, size=32):
    """The fixed batch the NFE of ODE blocks are measured on: the first `size` fitted examples."""
    return np.asarray(images[:size], "float32") / 255, labels[:size]


def fit_epochs(model, run, train_ds, monitor_ds, out, *, epochs, monitor, schedule, probe, callbacks=(), verbose=1):
    """`model.fit` as `train` runs it, on a compiled model: `epochs` epochs over `train_ds`
    (shuffled and augmented by `run.train_dataset`), `monitor_ds` scored after every epoch
    (`monitor`: "val" or "test"), and the run's callbacks in this order: `EpochRecord` and
    TensorBoard (the chief only), TerminateOnNaN, the data epoch and BackupAndRestore
    (`run.callbacks`), then `callbacks`. Writes history.csv, logs/ and backup/ under `out`.
    scripts/bench.py times whole epochs of this loop beside its bare `fit` rows.
    """
    from pde_zoo.layers._native import fused_evaluation  # (not at import: `python -m` runs _native)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fit_callbacks = [
        *([EpochRecord(out / "history.csv", monitor, schedule, probe), keras.callbacks.TensorBoard(str(out / "logs"))] if run.is_chief else []),
        keras.callbacks.TerminateOnNaN(),
        *run.callbacks(out / "backup"),
        *callbacks,
    ]
    # train_ds shuffles itself (seeded); fit's own shuffle does not apply to a dataset. The scores after
    # each epoch run the fused C++ forward kernels too (`fused_evaluation`: graphs never exported).
    with run.guard(), fused_evaluation():
        model.fit(train_ds, validation_data=monitor_ds, epochs=epochs, callbacks=fit_callbacks, verbose=verbose, shuffle=False)
    return model


def split(source, recipe):
    """(fit, validation, test) pairs of (images, labels) of `source` under `recipe`: the last
    `recipe.validation` training images held out, the first `train_examples` of the rest
    fitted, the first `test_examples` test images scored."""
    x, y = source.x_train, source.y_train
    if recipe.validation >= len(x):
        raise ValueError(f"validation ({recipe.validation}) must be smaller than the {len(x)} training images of {source.name}.")
    cut = len(x) - recipe.validation
    fit = (x[:cut][: recipe.train_examples], y[:cut][: recipe.train_examples])
    val = (x[cut:], y[cut:]) if recipe.validation else None
    test = (source.x_test[: recipe.test_examples], source.y_test[: recipe.test_examples])
    return fit, val, test


def plan_epochs(make_model, train_ds, eval_ds, steps_per_epoch, eval_steps, budget, max_epochs):
    """The budget planner: how many epochs (at least 1, at most `max_epochs`) fit in `budget`
    seconds.

    Times training steps of a throwaway model from `make_model()` (so the run itself starts from
    its seed's weights with its schedule built for the planned epochs) as `fit` runs them, k =
    max(`PROBE_STEPS`, the model's steps per call) at a time: k untimed (tracing), then
    (wall of 3k steps - wall of k) / 2k, which leaves out the fixed cost of a `fit` call; and
    `PROBE_STEPS` evaluation steps, the first (tracing) left out. Returns the plan for the card.
    """
    probe = make_model()

    def median_step(dataset, step):
        times = []
        for images, labels in dataset.take(PROBE_STEPS):
            start = time.perf_counter()
            step(images, labels)
            times.append(time.perf_counter() - start)
        return float(np.median(times[1:] if len(times) > 1 else times))

    def fit_step(dataset):
        k = max(PROBE_STEPS, probe.steps_per_execution)
        repeated = dataset.repeat()

        def wall(steps):
            start = time.perf_counter()
            probe.fit(repeated.take(steps), epochs=1, verbose=0)
            return time.perf_counter() - start

        wall(k)
        short, long = wall(k), wall(3 * k)
        return (long - short) / (2 * k) if long > short else long / (3 * k)  # (the latter: timing noise won)

    train_step = fit_step(train_ds)
    eval_step = median_step(eval_ds, probe.test_on_batch) if eval_ds is not None else 0.0
    per_epoch = float(f"{max(train_step * steps_per_epoch + eval_step * eval_steps, 1e-6):.3g}")  # the card's value plans
    epochs = max(1, min(max_epochs, int(budget / (per_epoch * PLAN_MARGIN))))
    return {"budget_seconds": budget, "seconds_per_epoch": per_epoch, "epochs": epochs, "recipe_epochs": max_epochs}


def _resolve_run(name, depth, recipe, options, data, out, budget, overwrite):
    """The run to do in `out`: None for a new one, or the one started there (its run.json, else
    the card of a finished run), which must match what was asked (the planned epochs come from
    the file, never the clock)."""
    run_file = out / "run.json"
    asked = {"name": name, "depth": depth, "options": options, "data": data}
    if overwrite:
        for stale in ("history.csv", "card.json", "run.json"):
            (out / stale).unlink(missing_ok=True)
        shutil.rmtree(out / "backup", ignore_errors=True)
    if run_file.is_file():
        started = json.loads(run_file.read_text())
    elif (out / "card.json").is_file():  # a finished run whose run.json was dropped (a preset)
        card = cards.read_card(out / "card.json")
        started = {**{k: card[k] for k in ("name", "depth", "options", "recipe", "plan", "resumed_after_epochs")}, "data": card["data"]["source"]}
    else:
        return None
    recorded = recipes_lib.Recipe.from_dict(started["recipe"])
    same_recipe = recorded == recipe or (started.get("plan") and budget and recorded == recipe.replace(epochs=recorded.epochs))
    if {k: started[k] for k in asked} != asked or not same_recipe:
        raise ValueError(f"{out} holds another run ({started['name']}-{started['depth']}, recipe {started['recipe']}); pass --overwrite to replace it or choose another --out.")
    return started


def train(
    name,
    depth=None,
    recipe=None,
    *,
    data=None,
    data_dir=None,
    out=None,
    overwrite=False,
    budget=None,
    verbose=1,
    threads=None,
    callbacks=(),
    strategy="none",
    devices=None,
    overrides=None,
    **kwargs,
):
    """Train registry model `name` at `depth` with `recipe` on `data`; write the run directory.

    Args:
        name, depth: a registry model (`pde_zoo.list_models()`); depth defaults to its own.
        recipe: a recipe name (`pde_zoo.recipes.list_recipes()`), a `Recipe` or a dict; default
            the model's own (`pde_zoo.recipes.default_recipe_name`).
        data: a data source (`pde_zoo.sources.load_source`: "mnist", an IDX directory, an .npz,
            a folder of class folders, a TFDS name); its input shape and class count reach
            the builder. `data_dir` overrides where MNIST's IDX files are.
        out: run directory (default runs/NAME-DEPTH).
        budget: seconds; the planner (`plan_epochs`) shortens the recipe's epochs to fit, the
            schedule is built for the planned epochs, and the decision is written into
            run.json and the card (a rerun uses the written number).
        strategy, devices: "none", "mirrored" or "multihost" (`pde_zoo.distributed`); the
            global batch stays the recipe's. Only process 0 writes `out`.
        overrides: {"from_card", "set", "option"}, recorded in the card (`pde-zoo train --from-card`).
        **kwargs: recipe keys (`epochs=3`, `learning_rate=2e-3`, ...) override the recipe; any
            other key is a builder option (`channels=32`, `stable=True`, ...).

    Resumable: a killed run restarts from its last finished epoch (BackupAndRestore), with the
    recipe in run.json. A finished run directory with the same run is returned as it is unless
    `overwrite`. Extra Keras `callbacks` run after the built-in ones. Returns the card (dict).
    """
    spec = get_spec(name)
    depth = validate_depth(spec.default_depth if depth is None else depth)
    recipe_keys = {k: v for k, v in kwargs.items() if k in recipes_lib.KEYS}
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if k not in recipes_lib.KEYS}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for model {name!r}. Valid options: {sorted(spec.options)}; recipe keys: {', '.join(recipes_lib.KEYS)}.")
    recipe_name, recipe = recipes_lib.resolve(name, recipe, recipe_keys)
    if budget is not None and (not budget > 0 or strategy != "none"):
        raise ValueError(f"budget must be a positive number of seconds, for a run on one process (strategy 'none'). Received: budget={budget!r}, strategy={strategy!r}")
    out = Path(out or Path("runs") / run_name(name, depth))
    commit = cards.git_commit()  # the code this process runs, read before anything changes it
    set_threads(threads)
    run = distributed.setup(strategy, devices)  # before TF / JAX run any op
    source = load_source(data, data_dir)
    for key, value in (("input_shape", tuple(source.input_shape)), ("num_classes", source.num_classes)):
        default = spec.options.get(key)
        if (tuple(default) if key == "input_shape" else default) != value:  # the data is not the builder's default
            options.setdefault(key, list(value) if key == "input_shape" else value)
    data_record = source.name
    started = _resolve_run(name, depth, recipe, options, data_record, out, budget, overwrite)
    card_file = out / "card.json"
    if started and card_file.is_file():
        card = cards.read_card(card_file)
        if card["complete"]:
            print(f"{out} is already trained ({card['epochs_run']} epochs, test accuracy {card['test_accuracy']:.4f}); pass overwrite=True / --overwrite to retrain.")
            return card
    plan = started["plan"] if started else None
    if started:
        recipe = recipes_lib.Recipe.from_dict(started["recipe"])
    resumed_after = list(started.get("resumed_after_epochs", [])) if started else []
    backup_meta = out / "backup" / "training_metadata.json"
    if started and backup_meta.is_file():
        resumed_after.append(int(json.loads(backup_meta.read_text())["epoch"]))

    set_determinism(recipe.seed)
    (x_fit, y_fit), val, (x_test, y_test) = split(source, recipe)
    train_ds = run.train_dataset(x_fit, y_fit, recipe.batch_size, recipe.seed, shift=recipe.shift)
    monitor, monitor_ds = ("val", run.eval_dataset(*val)) if val else ("test", run.eval_dataset(x_test, y_test))
    steps_per_epoch = int(train_ds.cardinality())

    def make_model(for_recipe):
        return compile_model(build(name, depth, **options), recipe=for_recipe, steps_per_epoch=steps_per_epoch,
                             steps_per_execution=steps_per_execution(run))

    if budget is not None and plan is None:
        plan = plan_epochs(lambda: make_model(recipe), train_ds, monitor_ds, steps_per_epoch, int(monitor_ds.cardinality()), budget,
                           recipe.epochs)
        recipe = recipe.replace(epochs=plan["epochs"])
        set_determinism(recipe.seed)  # the run starts from the seed's state, as without a plan
        print(f"{run_name(name, depth)}: {plan['seconds_per_epoch']:.1f} s per epoch planned -> {plan['epochs']} of {plan['recipe_epochs']} epochs in {budget:.0f} s", flush=True)
    if run.is_chief:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "run.json", {"name": name, "depth": depth, "options": options, "data": data_record, "recipe_name": recipe_name,
                                             "recipe": recipe.to_dict(), "plan": plan, "resumed_after_epochs": resumed_after})
    with run.scope():
        model = make_model(recipe)
    fit_epochs(model, run, train_ds, monitor_ds, out, epochs=recipe.epochs, monitor=monitor, schedule=learning_rate_schedule(recipe, steps_per_epoch),
               probe=probe_batch(x_fit, y_fit), callbacks=callbacks, verbose=verbose)
    model = run.local_model(model, lambda: make_model(recipe))
    if not run.is_chief:
        return {"model": run_name(name, depth), "process_id": run.process_id, "distribution": run.describe()}
    history = read_history(out / "history.csv")
    test_loss, test_acc = evaluate_arrays(model, x_test, y_test)
    atomic_save(out / "model.keras", model.save)
    if keras.backend.backend() == "tensorflow":
        export_saved_model(model, out / "saved_model")
    card = _card(name, depth, options, recipe_name, recipe, source, (len(x_fit), len(val[0]) if val else 0, len(x_test)), plan, overrides,
                 history, model, run, resumed_after, test_loss, test_acc, commit)
    atomic_write_json(card_file, card)
    shutil.rmtree(out / "backup", ignore_errors=True)  # kept until the results are written
    return card


def _card(name, depth, options, recipe_name, recipe, source, counts, plan, overrides, history, model, run, resumed_after, test_loss, test_acc, commit):
    """The card of a finished run (`pde_zoo.cards` documents every key)."""
    last = history[-1] if history else {}

    def number(row, key, kind=float):
        return kind(float(row[key])) if row.get(key) not in (None, "") else None

    monitored_test = [r for r in history if r.get("test_accuracy") not in (None, "")]
    best = max(monitored_test, key=lambda r: float(r["test_accuracy"])) if monitored_test else None
    backend = keras.backend.backend()
    framework = {backend: _framework_version(backend)}
    card = {
        "card_version": cards.CARD_VERSION,
        "model": run_name(name, depth),
        "name": name,
        "depth": depth,
        "options": options,
        "recipe_name": recipe_name,
        "recipe": recipe.to_dict(),
        "data": {"source": source.name, "sha256": source.sha256, "fit_examples": counts[0], "validation_examples": counts[1],
                 "test_examples": counts[2], "input_shape": list(source.input_shape), "num_classes": source.num_classes},
        "plan": plan,
        "overrides": overrides,
        "epochs_run": len(history),
        "complete": len(history) == recipe.epochs and not model.stop_training,
        "stopped_on_nan": bool(model.stop_training and last and not math.isfinite(float(last["loss"] or "nan"))),
        "resumed_after_epochs": resumed_after,
        "params": int(model.count_params()),
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "val_accuracy": number(last, "val_accuracy"),
        "val_loss": number(last, "val_loss"),
        "best_test_accuracy": number(best, "test_accuracy") if best else None,
        "best_epoch": int(best["epoch"]) if best else None,
        "train_seconds": round(sum(float(r["seconds"]) for r in history), 1),
        "nfe_forward": number(last, "nfe_forward", int),
        "nfe_backward": number(last, "nfe_backward", int),
        "versions": {"pde_zoo": __version__, "commit": commit, "keras": keras.__version__, "backend": backend, **framework,
                     "python": platform.python_version()},
        "device": _device(backend),
        "distribution": run.describe(),
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    card["command"] = cards.train_command(card)
    return card


def _framework_version(backend):
    module = __import__(backend)
    return getattr(module, "__version__", "unknown")


def _device(backend):
    """The device that trained: the accelerator's kind, else "<N>-core CPU" and the CPU model."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return {"kind": str(device.device_kind), "platform": platform.platform()}
    cpu, vector = info.cpu()
    return {"kind": f"{os.cpu_count()}-core CPU", "cpu": cpu, "vector_extensions": vector, "platform": platform.platform()}


def train_from_card(spec, *, sets=None, options=None, out=None, **kwargs):
    """Run again what the card of `spec` (pretrained name, run directory or card.json) records:
    its model, depth, options, recipe and data, with `sets` (recipe keys) and `options`
    (builder options) changed and recorded in the new card as overrides. Returns the card."""
    card = cards.read_card(spec)
    recipe = recipes_lib.Recipe.from_dict(card["recipe"]).replace(**(sets or {}))
    recipe_arg = card["recipe_name"] if card["recipe_name"] in recipes_lib.RECIPES else {}
    builder_options = {**card["options"], **(options or {})}
    overrides = {"from_card": str(spec), "set": dict(sets or {}), "option": dict(options or {})}
    name, depth = card["name"], card["depth"]
    return train(name, depth, recipe_arg, data=card["data"]["source"], out=out or Path("runs") / run_name(name, depth),
                 overrides=overrides, **recipe.to_dict(), **builder_options, **kwargs)
