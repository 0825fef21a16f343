#!/usr/bin/env python
"""Speed benchmark of the zoo on MNIST-shaped data (also `pde-zoo bench`).

One process, side by side, alternating repeats, medians:
- training throughput (images/s, seconds per 60k-image epoch) at batch 128 of pde1, pde2,
  resnet, pdenet, convresnet (zoo; the last two at their default width) and mlp, and of a
  reference c_ResNet written the idiomatic Keras way
  (`keras.layers.Conv2D` + `Add` + `ReLU`, kept here), at depths 5 and 50;
- inference: throughput at batch 1024 and batch-1 latency (p50/p95) of the in-process model
  and of its exported SavedModel;
- peak resident memory of each model (a child process per model: build, 20 train steps,
  one batch-1024 inference).
Prints a table with ratios to the reference Conv2D c_ResNet at the same depth, writes JSON,
and with --readme regenerates the README's performance block.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import pde_zoo  # noqa: E402
from pde_zoo.cli import add_threads_argument  # noqa: E402
from pde_zoo.training import export_saved_model  # noqa: E402

BATCH, INFER_BATCH, EPOCH_IMAGES = 128, 1024, 60000


def reference_resnet(depth):
    """The idiomatic Keras c_ResNet control: x -> relu(x + Conv2D(1, 3, same)(x)), then the thesis head."""
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for t in range(depth):
        x = keras.layers.ReLU(name=f"relu_{t}")(keras.layers.Add(name=f"add_{t}")([x, keras.layers.Conv2D(1, 3, padding="same", name=f"conv_{t}")(x)]))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name=f"keras_conv2d_resnet-{depth}")


def make_model(key):
    name, depth = key.rsplit("-", 1)
    model = reference_resnet(int(depth)) if name == "ref" else pde_zoo.build(name, int(depth))
    return pde_zoo.compile_model(model)


def cases(depths):
    keys = ["mlp-0"]
    for d in depths:
        keys += [f"ref-{d}", f"pde1-{d}", f"pde2-{d}", f"resnet-{d}", f"pdenet-{d}", f"convresnet-{d}"]
    return keys


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
    """One `fit` epoch over `data` (a dataset, or arrays x, y with `batch_size=`): (steady-state
    seconds per step, wall seconds of the whole call).

    Steady state runs from the end of the first step to the end of the last: the rate at which
    a 469-step epoch runs. The rest of a `fit` call (iterator set-up and teardown, epoch-end
    work) is paid once per epoch; here it is bimodal (~0.03 s or ~0.3 s), which would swamp a
    40-step timing, so it is recorded apart (`fit_overhead_s`), not extrapolated.
    """
    clock = _StepClock()
    start = time.perf_counter()
    model.fit(*data, epochs=1, verbose=0, callbacks=[clock], **fit_kwargs)
    wall = time.perf_counter() - start
    return (clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1), wall


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
    """Runs in a child process: peak RSS (MiB) of building, training 20 steps and one inference."""
    model = make_model(key)
    model.fit(train_dataset(20), epochs=1, verbose=0)
    model.predict_on_batch(np.zeros((INFER_BATCH, 28, 28, 1), np.float32))
    # VmHWM, not getrusage: ru_maxrss survives exec and would report the parent's peak.
    hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mib": hwm_kib / 1024}))


def run(args):
    import tensorflow as tf

    keys = cases(args.depths)
    ds = train_dataset(args.steps)
    models = {k: make_model(k) for k in keys}
    for k in keys:  # warm-up: tracing and first-step costs are not throughput
        time_fit(models[k], ds)
    train, overhead = {k: [] for k in keys}, {k: [] for k in keys}
    for r in range(args.repeats):
        for k in keys if r % 2 == 0 else reversed(keys):
            step, wall = time_fit(models[k], ds)
            train[k].append(step)
            overhead[k].append(wall - step * args.steps)
            print(f"  repeat {r + 1}/{args.repeats} {k:10s} {step * 1e3:.2f} ms/step, fit {wall:.2f} s", flush=True)

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
        depth = k.rsplit("-", 1)[1]
        ref = results.get(f"ref-{depth}")
        results[k]["train_speedup_vs_ref"] = results[k]["train_images_per_s"] / ref["train_images_per_s"] if ref else None
        results[k]["epoch_vs_mlp"] = results[k]["train_s_per_epoch"] / results["mlp-0"]["train_s_per_epoch"]
    return results


def markdown(results, meta):
    lines = [
        f"Measured by `{meta['command']}` on {meta['machine']} ({meta['cpus']} CPUs), "
        f"TF {meta['tensorflow']}, Keras {meta['keras']}, TF threads: {meta['threads']}"
        + (f", stencil stack on {meta['stencil_path']}" if "stencil_path" in meta else "")
        + f"; medians of {meta['repeats']} alternating repeats of {meta['steps']} "
        "training steps at batch 128 (s / epoch = 469 steps at the steady-state step rate; the fixed cost of a `fit` call, paid once per epoch, is its own column); `ref` is the idiomatic Keras Conv2D + Add + ReLU c_ResNet (the control).",
        "",
        "| model | train img/s | s / 60k epoch | fit call overhead s | speed-up vs ref (same depth) | epoch / mlp epoch | infer img/s (model / SavedModel, batch 1024) | batch-1 latency p50/p95 ms (model) | (SavedModel) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    depths = sorted({int(k.rsplit("-", 1)[1]) for k in results} - {0})
    for k in [k for k in cases(depths) if k in results]:  # the run's order (JSON stores keys sorted)
        r = results[k]
        speed = f"{r['train_speedup_vs_ref']:.2f}x" if r["train_speedup_vs_ref"] else "–"
        rss = f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "–"
        lines.append(
            f"| {k} | {r['train_images_per_s']:.0f} | {r['train_s_per_epoch']:.1f} | {r['fit_overhead_s']:.2f} | {speed} | {r['epoch_vs_mlp']:.1f}x | "
            f"{r['infer_model_images_per_s']:.0f} / {r['infer_savedmodel_images_per_s']:.0f} | "
            f"{r['latency_model_p50_ms']:.2f} / {r['latency_model_p95_ms']:.2f} | {r['latency_savedmodel_p50_ms']:.2f} / {r['latency_savedmodel_p95_ms']:.2f} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--infer-repeats", type=int, default=10)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    add_threads_argument(parser)
    parser.add_argument("--json", default="benchmarks/bench-cpu.json")
    parser.add_argument("--readme", default=None, help="regenerate the performance block of this README")
    parser.add_argument("--block", default="performance", help="name of the README block to regenerate")
    parser.add_argument("--render", action="store_true", help="no measuring: re-render the table (and README block) from --json")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from pde_zoo.training import set_threads

    from pde_zoo.io_utils import atomic_write_json

    if args.render:
        recorded = json.loads(Path(args.json).read_text())
        return _report(recorded["results"], recorded["meta"], args.readme, args.block)
    set_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child)
    results = run(args)
    import tensorflow as tf

    meta = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "threads": threads_label(args.threads), "stencil_path": stencil_path(), "repeats": args.repeats, "steps": args.steps, "batch": BATCH,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python scripts/bench.py " + " ".join(sys.argv[1:]),
    }
    atomic_write_json(args.json, {"meta": meta, "results": results})
    _report(results, meta, args.readme, args.block)


def stencil_path():
    """Which implementation the fused stencil stack runs on here (`pde_zoo.layers._native`)."""
    from pde_zoo.layers._native import stencil_ops

    return "the C++ op" if stencil_ops() is not None else "standard TF ops (no C++ op: PDE_ZOO_NATIVE=0 or no compiler)"


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
