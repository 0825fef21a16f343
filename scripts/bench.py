#!/usr/bin/env python
"""Speed benchmark of the zoo on MNIST-shaped data (also `pde-zoo bench`).

One process, side by side, alternating repeats, medians:
- training throughput (images/s, seconds per 60k-image epoch) at batch 128 of pde1, pde2,
  resnet, pdenet, convresnet (zoo; the last two at their default width) and mlp, and of a
  reference c_ResNet written the idiomatic Keras way
  (`keras.layers.Conv2D` + `Add` + `ReLU`, kept here), at depths 5 and 50: a bare `fit` over
  cached batches, the steady-state step rate;
- the matched pair at depth 16 (`PAIR`): pdenet-16 (channels 32) against convresnet-16 (channels
  14, as many parameters) and against pdenet written the idiomatic Keras way (`keras_pdenet`:
  the same stem and transitions, each block relu(x + Conv2D 1x1(DepthwiseConv2D 3x3(x)))), the
  ratio column relative to the latter; `--no-pair` leaves them out;
- the `train()` path for the models `pde-zoo train` trains (`--train-path`, default the thesis
  sweep: mlp, pde1, pde2, resnet): whole epochs of `pde_zoo.training.fit_epochs`, the loop of
  `training.train` (MNIST shuffled by tf.data each epoch, the test set evaluated after every
  epoch, the run's callbacks: history.csv, TensorBoard, NaN check, BackupAndRestore), one
  epoch after each bare-fit repeat of the same model, on its own copy of the model, compiled as
  `train` compiles it (`training.steps_per_execution()` steps per call; the bare rows run one), its
  ratio to the mlp's train() epoch beside it; with `--stencil-floor` also a copy of each thesis-stack
  model whose stencil ops are free (`free_stencils`), the floor the rest of its step sets;
- inference: throughput at batch 1024 and batch-1 latency (p50/p95) of the in-process model
  and of its exported SavedModel;
- peak resident memory of each model (a child process per model: build, 20 train steps,
  one batch-1024 inference).
Prints a table (the CPU model and its vector extensions in its header) with ratios to the reference
Conv2D c_ResNet at the same depth, writes JSON,
and with --readme regenerates the performance block of docs/performance.md. The shared machines' speed
drifts (the same run ~1.7x slower another day): compare absolute seconds only within one run,
ratios across runs.
"""

import argparse
import json
import os
import platform
import shutil
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import pde_zoo  # noqa: E402
from pde_zoo import data as data_lib  # noqa: E402
from pde_zoo import distributed, training  # noqa: E402
from pde_zoo.registry import parse_run_name, run_name  # noqa: E402
from pde_zoo.threads import add_threads_argument  # noqa: E402
from pde_zoo.inference import export_saved_model  # noqa: E402

BATCH, INFER_BATCH, EPOCH_IMAGES = 128, 1024, 60000
TRAIN_PATH_MODELS = ("mlp", "pde1", "pde2", "resnet")  # the thesis sweep: what `pde-zoo train` / train_all.sh train
DRIFT_NOTE = (
    "Absolute seconds hold for this run only: the shared machine's speed drifts (the same benchmark ran ~1.7x "
    "slower another day, its ratios unchanged), so compare ratios across runs, seconds only within one run."
)


def reference_resnet(depth):
    """The idiomatic Keras c_ResNet control: x -> relu(x + Conv2D(1, 3, same)(x)), then the thesis head."""
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for t in range(depth):
        x = keras.layers.ReLU(name=f"relu_{t}")(keras.layers.Add(name=f"add_{t}")([x, keras.layers.Conv2D(1, 3, padding="same", name=f"conv_{t}")(x)]))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name=run_name("keras_conv2d_resnet", depth))


# The matched pair of the multi-channel models (scripts/train_pdenet.sh accuracy: <= 0.25M parameters each)
# and the idiomatic Keras form of pdenet, side by side at depth 16: key -> (name, depth, builder options).
# The keys name the width, apart from the depth loop's rows at the default width.
PAIR = {
    "pdenet-16.c32": ("pdenet", 16, {"channels": 32}),
    "convresnet-16.c14": ("convresnet", 16, {"channels": 14}),
    "keras_pdenet-16.c32": ("keras_pdenet", 16, {"channels": 32}),
}
PAIR_REF = "keras_pdenet-16.c32"


def keras_pdenet(depth, channels):
    """pdenet written the idiomatic Keras way, the control of the pair: the same stem, transitions and
    head (`pde_zoo.models.pdenet.staged_network`'s layout), each block relu(x + Conv2D(C, 1)(DepthwiseConv2D(3)(x)))
    (a depthwise 3x3 with a free kernel, then a 1x1 channel mixing with bias: as many weights per block as
    a PDESystemBlock's stencil and mixing, plus the depthwise kernel's free taps)."""
    from pde_zoo.models.pdenet import NORM_GROUPS, stage_layout

    def conv_norm_relu(x, filters, strides, name):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = keras.layers.GroupNormalization(groups=math.gcd(filters, NORM_GROUPS), epsilon=1e-5, name=f"{name}_norm")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((28, 28, 1))
    x = conv_norm_relu(inputs, channels, 1, "stem")
    for k, blocks in enumerate(stage_layout(depth), start=1):
        width = channels * 2 ** (k - 1)
        if k > 1:
            x = conv_norm_relu(x, width, 2, f"transition_{k - 1}")
        for t in range(blocks):
            update = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"s{k}_b{t}_stencil")(x)
            update = keras.layers.Conv2D(width, 1, name=f"s{k}_b{t}_mixing")(update)
            x = keras.layers.ReLU(name=f"s{k}_b{t}_relu")(keras.layers.Add(name=f"s{k}_b{t}_add")([x, update]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name=run_name("keras_pdenet", depth))


def make_model(key, steps_per_execution=1):
    """The model of row `key`, compiled as `compile_model` does (`steps_per_execution` steps per step-function
    call: 1 for the bare rows, whose clock reads every batch; `train`'s for the train() rows)."""
    name, depth, options = PAIR[key] if key in PAIR else (*parse_run_name(key), {})
    if name == "ref":
        model = reference_resnet(depth)
    elif name == "keras_pdenet":
        model = keras_pdenet(depth, **options)
    else:
        model = pde_zoo.build(name, depth, **options)
    return pde_zoo.compile_model(model, steps_per_execution=steps_per_execution)


def free_stencils(model):
    """`model` with the fused ops of every thesis stack (`StencilStack` of PDE / c_ResNet blocks) replaced by a free
    one, y = x + 0 * (sum of taps + sum of offsets): the stack's weights are still read, built into taps,
    differentiated and updated, and the head still computes the stack's input gradient, but no stencil is applied.
    Timed beside the real model (`--stencil-floor`), it is the floor the rest of the step sets: the epoch the model
    would have with stencil ops that cost nothing. Returns the number of stacks replaced."""
    from pde_zoo.layers.stencil_stack import StencilStack

    stacks = [layer for layer in model._flatten_layers() if isinstance(layer, StencilStack) and layer.uses_fast_path and layer.blocks]
    for stack in stacks:
        def call(inputs, training=None, stack=stack):
            taps, offsets = stack.stencils()
            total = keras.ops.sum(taps) + (0.0 if offsets is None else keras.ops.sum(offsets))
            return inputs + 0.0 * total

        stack.call = call
    return len(stacks)


def cases(depths, models=None, pair=True):
    """The run's keys in order: mlp-0, then per depth the reference and the zoo's block models,
    then the matched pair at depth 16 (`PAIR`; with `pair`) (only the names in `models`, when given)."""
    keys = [run_name("mlp", 0)]
    for d in depths:
        keys += [run_name(n, d) for n in ("ref", "pde1", "pde2", "resnet", "pdenet", "convresnet")]
    keys = [k for k in keys if models is None or parse_run_name(k)[0] in models]
    return keys + [k for k, (n, _, _) in PAIR.items() if pair and (models is None or n in models)]


def train_dataset(steps):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, steps * BATCH)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().prefetch(tf.data.AUTOTUNE)


class _StepClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def time_fit(model, *data, **fit_kwargs):
    """One `fit` epoch over `data` (a dataset, or arrays x, y with `batch_size=`), in order
    (`shuffle=False` unless given): (steady-state seconds per step, wall seconds of the whole call).

    Steady state runs from the end of the first step to the end of the last: the rate at which
    a 469-step epoch runs. The rest of a `fit` call (iterator set-up and teardown, epoch-end
    work) is paid once per epoch and varies from call to call by more than a 40-step timing
    could absorb, so it is recorded apart (`fit_overhead_s`), not extrapolated.
    """
    clock = _StepClock()
    start = time.perf_counter()
    model.fit(*data, epochs=1, verbose=0, callbacks=[clock], **{"shuffle": False, **fit_kwargs})
    wall = time.perf_counter() - start
    return (clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1), wall


class _EpochClock(keras.callbacks.Callback):
    """Last in the callback list: seconds from the epoch's start to the end of every callback's
    epoch-end work (the test evaluation, history.csv, TensorBoard, the backup checkpoint)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def train_path_data(args):
    """What `training.train` feeds `fit_epochs`, for the train() rows: the first
    --train-images / --test-images MNIST examples as `Distribution` datasets (shuffled
    training batches of 128, test batches), the NFE probe batch, and a small warm-up copy
    (two batches plus the partial one, so the timed epochs trace nothing new)."""

    def datasets(x, y, xt, yt):
        run = distributed.setup()  # one single-device `Distribution` per dataset pair, as train() has
        return SimpleNamespace(run=run, train=run.train_dataset(x, y, BATCH, 0), test=run.eval_dataset(xt, yt), probe=training.probe_batch(x, y))

    x, y, digest = data_lib.load_arrays("train", args.data_dir)
    xt, yt, _ = data_lib.load_arrays("test", args.data_dir)
    x, y, xt, yt = x[: args.train_images], y[: args.train_images], xt[: args.test_images], yt[: args.test_images]
    warm_x, warm_t = 2 * BATCH + len(x) % BATCH, distributed.EVAL_BATCH + len(xt) % distributed.EVAL_BATCH
    data = datasets(x, y, xt, yt)
    data.warm = datasets(x[:warm_x], y[:warm_x], xt[:warm_t], yt[:warm_t])
    data.meta = {"train_images": len(x), "test_images": len(xt), "data_sha256": digest, "steps_per_execution": training.steps_per_execution()}
    return data


def time_train_epoch(model, data, out):
    """Seconds of one whole epoch of `training.fit_epochs` (see `_EpochClock`) in a fresh run
    directory `out` (no backup to resume from)."""
    shutil.rmtree(out, ignore_errors=True)
    clock = _EpochClock()
    training.fit_epochs(model, data.run, data.train, data.test, out, epochs=1, monitor="test", schedule=pde_zoo.recipes.RECIPES["thesis"].learning_rate,
                        probe=data.probe, callbacks=[clock], verbose=0)
    return clock.seconds


def call_times(fn, x, calls):
    """Wall seconds of `calls` calls of fn(x), after one untimed warm-up call."""
    fn(x)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return times


def memory_child(key):
    """Runs in a child process: peak RSS (MiB) of building, training 20 steps and one inference
    (the resident memory of a training step: model, gradients, optimizer state, activations)."""
    model = make_model(key)
    model.fit(train_dataset(20), epochs=1, verbose=0, shuffle=False)
    model.predict_on_batch(np.zeros((INFER_BATCH, 28, 28, 1), np.float32))
    # VmHWM, not getrusage: ru_maxrss survives exec and would report the parent's peak.
    hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mib": hwm_kib / 1024}))


def run(args, path_data=None, run_dir=None):
    import tensorflow as tf

    keys = cases(args.depths, args.models, args.pair)
    ds = train_dataset(args.steps)
    models = {k: make_model(k) for k in keys}
    path_keys = [k for k in keys if path_data is not None and k not in PAIR and parse_run_name(k)[0] in args.train_path]
    path_models = {k: make_model(k, training.steps_per_execution()) for k in path_keys}  # their own copies, compiled as train() compiles
    floor_models = {}  # --stencil-floor: a third copy of each thesis-stack model, its stencil ops free
    for k in path_keys if args.stencil_floor else ():
        model = make_model(k, training.steps_per_execution())
        if free_stencils(model):
            floor_models[k] = model
    for k in keys:  # warm-up: tracing and first-step costs are not throughput
        time_fit(models[k], ds)
        if k in path_models:
            time_train_epoch(path_models[k], path_data.warm, run_dir / k)
        if k in floor_models:
            time_train_epoch(floor_models[k], path_data.warm, run_dir / f"{k}.free")
    train, overhead, path, floor = {k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in path_keys}, {k: [] for k in floor_models}
    for r in range(args.repeats):
        for k in keys if r % 2 == 0 else reversed(keys):
            step, wall = time_fit(models[k], ds)
            train[k].append(step)
            overhead[k].append(wall - step * args.steps)
            line = f"  repeat {r + 1}/{args.repeats} {k:10s} {step * 1e3:.2f} ms/step, fit {wall:.2f} s"
            if k in path_models:
                path[k].append(time_train_epoch(path_models[k], path_data, run_dir / k))
                line += f", train() epoch {path[k][-1]:.2f} s"
            if k in floor_models:
                floor[k].append(time_train_epoch(floor_models[k], path_data, run_dir / f"{k}.free"))
                line += f", stencil ops free {floor[k][-1]:.2f} s"
            print(line, flush=True)

    results = {}
    x1024 = np.random.default_rng(1).random((INFER_BATCH, 28, 28, 1), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for k in keys:
            step = statistics.median(train[k])
            model = models[k]
            in_process = tf.function(lambda x, m=model: m(x, training=False))
            export_saved_model(model, f"{tmp}/{k}")  # what `pde-zoo train` ships: standard TF ops only
            loaded = tf.saved_model.load(f"{tmp}/{k}")  # keep a reference: .serve needs its variables
            row = {
                "train_images_per_s": BATCH / step,
                "train_s_per_epoch": step * EPOCH_IMAGES / BATCH,
                "train_repeats_s_per_step": train[k],
                "fit_overhead_s": statistics.median(overhead[k]),
                "params": model.count_params(),
            }
            if k in path:
                row["train_path_s_per_epoch"] = statistics.median(path[k])
                row["train_path_repeats_s"] = path[k]
                # the same epoch at the bare steady-state step rate
                row["train_path_vs_bare"] = row["train_path_s_per_epoch"] / (step * path_data.meta["train_images"] / BATCH)
            if k in floor:
                row["train_path_free_stencils_s_per_epoch"] = statistics.median(floor[k])
                row["train_path_free_stencils_repeats_s"] = floor[k]
            for label, fn in [("model", in_process), ("savedmodel", loaded.serve)]:
                t_big = statistics.median(call_times(fn, tf.constant(x1024), args.infer_repeats))
                p50, p95 = np.percentile(call_times(fn, tf.constant(x1024[:1]), args.latency_calls), [50, 95]) * 1e3
                row[f"infer_{label}_images_per_s"] = INFER_BATCH / t_big
                row[f"latency_{label}_p50_ms"], row[f"latency_{label}_p95_ms"] = float(p50), float(p95)
            results[k] = row
    if args.memory:
        for k in keys:
            out = subprocess.run([sys.executable, __file__, "--memory-child", k, "--threads", str(args.threads)], capture_output=True, text=True)
            results[k]["peak_rss_mib"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"] if out.returncode == 0 else None
    for k in keys:
        ref = results.get(PAIR_REF if k in PAIR else run_name("ref", parse_run_name(k)[1]))
        results[k]["train_speedup_vs_ref"] = results[k]["train_images_per_s"] / ref["train_images_per_s"] if ref else None
        mlp = results.get(run_name("mlp", 0))
        results[k]["epoch_vs_mlp"] = results[k]["train_s_per_epoch"] / mlp["train_s_per_epoch"] if mlp else None
    return results


def markdown(results, meta):
    lines = [
        f"Measured by `{meta['command']}` on {meta.get('cpu', meta['machine'])} ({meta['cpus']} CPUs"
        + (f", {meta['vector_extensions']}" if "vector_extensions" in meta else "") + "), "
        f"TF {meta['tensorflow']}, Keras {meta['keras']}, TF threads: {meta['threads']}"
        + (f", stencil stack on {meta['stencil_path']}" if "stencil_path" in meta else "")
        + f"; medians of {meta['repeats']} alternating repeats of {meta['steps']} "
        "training steps at batch 128 (s / epoch = 469 steps at the steady-state step rate; the fixed cost of a `fit` call, paid once per epoch, is its own column); `ref` is the idiomatic Keras Conv2D + Add + ReLU c_ResNet (the control); "
        "the matched pair at depth 16 (pdenet channels 32, convresnet channels 14) is compared with `keras_pdenet-16`, pdenet written the idiomatic Keras way (DepthwiseConv2D + Conv2D 1x1 + Add + ReLU blocks, the same stem and transitions)"
        + (", TF op determinism on (as `pde-zoo train`)" if meta.get("determinism") else "")
        + ". " + DRIFT_NOTE,
        "",
        "| model | train img/s | s / 60k epoch | fit call overhead s | speed-up vs ref (same depth) | epoch / mlp epoch | infer img/s (model / SavedModel, batch 1024) | batch-1 latency p50/p95 ms (model) | (SavedModel) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    depths = sorted({parse_run_name(k)[1] for k in results if k not in PAIR} - {0})
    order = [k for k in cases(depths) if k in results]  # the run's order (JSON stores keys sorted)
    for k in order:
        r = results[k]
        speed = f"{r['train_speedup_vs_ref']:.2f}x" if r["train_speedup_vs_ref"] else "–"
        if k in PAIR and r["train_speedup_vs_ref"]:
            speed += f" (vs {PAIR_REF})"
        vs_mlp = f"{r['epoch_vs_mlp']:.1f}x" if r.get("epoch_vs_mlp") else "–"
        rss = f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "–"
        lines.append(
            f"| {k} | {r['train_images_per_s']:.0f} | {r['train_s_per_epoch']:.1f} | {r['fit_overhead_s']:.2f} | {speed} | {vs_mlp} | "
            f"{r['infer_model_images_per_s']:.0f} / {r['infer_savedmodel_images_per_s']:.0f} | "
            f"{r['latency_model_p50_ms']:.2f} / {r['latency_model_p95_ms']:.2f} | {r['latency_savedmodel_p50_ms']:.2f} / {r['latency_savedmodel_p95_ms']:.2f} | {rss} |"
        )
    path = [k for k in order if "train_path_s_per_epoch" in results[k]]
    floor = any("train_path_free_stencils_s_per_epoch" in results[k] for k in path)
    if path:
        p = meta["train_path"]
        lines += [
            "",
            f"The `train()` path (`pde-zoo train`): whole epochs of `pde_zoo.training.fit_epochs` over the first {p['train_images']:,} "
            f"MNIST training images (shuffled by tf.data each epoch, batch {BATCH}), the {p['test_images']:,} test images evaluated "
            "after every epoch, and the run's callbacks (NFE probe, history.csv, TensorBoard, NaN check, BackupAndRestore "
            f"checkpoint), {p.get('steps_per_execution', 1)} training steps per call of the step function (Keras's "
            "`steps_per_execution`, as `train` compiles; the bare rows above run one), timed from the epoch's start to the end "
            "of its last callback; one epoch after each bare-fit repeat of the same model (alternating), medians. `train() / bare` "
            "is that epoch over the same number of steps at the bare-fit steady-state rate above; `/ mlp` is the train() epoch "
            "over the mlp's."
            + (" `stencil ops free` (`--stencil-floor`) is a third copy of the model whose thesis stacks run a free op in place "
               "of the fused stencil ops (their weights still read, differentiated and updated; `free_stencils`), timed after "
               "the model's own train() epoch in each repeat: the floor that the rest of the step (the head, the weights' "
               "plumbing, the optimizer, the pipeline and callbacks) sets for that model's epoch." if floor else ""),
            "",
            "| model | bare fit s / epoch (steady state) | train() s / epoch | train() / bare | / mlp |"
            + (" stencil ops free: train() s / epoch | / mlp |" if floor else ""),
            "|---|---|---|---|---|" + ("---|---|" if floor else ""),
        ]
        mlp = results.get(run_name("mlp", 0), {}).get("train_path_s_per_epoch")

        def ratio(seconds):  # to the mlp's train() epoch
            return f"{seconds / mlp:.2f}x" if mlp else "–"

        for k in path:
            r = results[k]
            bare = r["train_path_s_per_epoch"] / r["train_path_vs_bare"]
            line = f"| {k} | {bare:.2f} | {r['train_path_s_per_epoch']:.2f} | {r['train_path_vs_bare']:.2f}x | {ratio(r['train_path_s_per_epoch'])} |"
            if floor:
                free = r.get("train_path_free_stencils_s_per_epoch")
                line += f" {free:.2f} | {ratio(free)} |" if free else " – | – |"
            lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--infer-repeats", type=int, default=10)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--no-pair", dest="pair", action="store_false", help="leave out the depth-16 matched pair (pdenet / convresnet / keras_pdenet)")
    parser.add_argument("--models", nargs="+", default=None, help="only these names (ref for the reference; default: all)")
    parser.add_argument("--train-path", nargs="*", default=list(TRAIN_PATH_MODELS),
                        help=f"names also timed through train()'s loop, whole epochs on MNIST (default: {' '.join(TRAIN_PATH_MODELS)}; none: no train() rows)")
    parser.add_argument("--stencil-floor", action="store_true",
                        help="train() rows of thesis-stack models (pde1, pde2, resnet) also timed with their fused stencil ops "
                             "replaced by a free op (`free_stencils`): the floor the rest of the step sets")
    parser.add_argument("--train-images", type=int, default=None, help="train() rows: the first N training images per epoch (default: all 60,000)")
    parser.add_argument("--test-images", type=int, default=None, help="train() rows: the first N test images evaluated per epoch (default: all 10,000)")
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files for the train() rows (default: as `pde-zoo data`)")
    add_threads_argument(parser)
    parser.add_argument("--json", default="benchmarks/bench-cpu.json")
    parser.add_argument("--readme", default=None, help="regenerate the performance block of this README")
    parser.add_argument("--block", default="performance", help="name of the README block to regenerate")
    parser.add_argument("--render", action="store_true", help="no measuring: re-render the table (and README block) from --json")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from pde_zoo.io_utils import atomic_write_json
    from pde_zoo.threads import set_threads

    if args.render:
        recorded = json.loads(Path(args.json).read_text())
        return _report(recorded["results"], recorded["meta"], args.readme, args.block)
    set_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child)
    path_data = None
    if any(k not in PAIR and parse_run_name(k)[0] in args.train_path for k in cases(args.depths, args.models, args.pair)):
        training.set_determinism(0)  # as train(): the same settings for every row of the run
        path_data = train_path_data(args)
    with tempfile.TemporaryDirectory() as run_dir:
        results = run(args, path_data, Path(run_dir))
    import tensorflow as tf

    from pde_zoo.info import cpu

    cpu_model, extensions = cpu()
    meta = {
        "machine": platform.processor() or platform.machine(), "cpu": cpu_model, "vector_extensions": extensions,
        "cpus": os.cpu_count(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "threads": threads_label(args.threads), "stencil_path": stencil_path(), "repeats": args.repeats, "steps": args.steps, "batch": BATCH,
        "determinism": path_data is not None,
        **({"train_path": path_data.meta} if path_data is not None else {}),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python scripts/bench.py " + " ".join(sys.argv[1:]),
    }
    atomic_write_json(args.json, {"meta": meta, "results": results})
    _report(results, meta, args.readme, args.block)


def stencil_path():
    """Which implementation the fused stencil stack runs on here (`pde_zoo.layers._native`)."""
    from pde_zoo.layers._native import kernel, stencil_ops

    return f"the C++ op ({kernel()} kernel)" if stencil_ops() is not None else "standard TF ops (no C++ op: PDE_ZOO_NATIVE=0 or no compiler)"


def threads_label(threads):
    return f"{threads} inter-op x 1 intra-op" if threads else "TF default"


def _report(results, meta, readme, block):
    from pde_zoo.results import update_readme_block

    table = markdown(results, meta)
    print(table)
    if readme:
        update_readme_block(readme, block, table)


if __name__ == "__main__":
    main()
