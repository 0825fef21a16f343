#!/usr/bin/env python
"""Training throughput on the JAX backend, on the device JAX sees (the README's GPU figure).

Same method as bench.py: `fit` at batch 128 on MNIST-shaped random data, the steady-state step
rate, alternating repeats, medians; models built and compiled as there (the zoo's recipe;
`ref` is the idiomatic Keras Conv2D c_ResNet). On JAX the stack runs each block's `keras.ops`
code (one depthwise convolution per block); no TensorFlow is needed.

  KERAS_BACKEND=jax python scripts/bench_jax.py --json benchmarks/bench-jax-gpu.json
  python scripts/bench_jax.py --render --json benchmarks/bench-jax-gpu.json --readme docs/performance.md
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402


def run(args):
    rng = np.random.default_rng(0)
    x = rng.random((args.steps * bench.BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.steps * bench.BATCH)
    models, warmup = {}, {}
    for k in args.models:  # build, trace and compile: not throughput, but reported
        start = time.perf_counter()
        models[k] = bench.make_model(k)
        bench.time_fit(models[k], x, y, batch_size=bench.BATCH, shuffle=False)
        warmup[k] = time.perf_counter() - start
        print(f"  warm-up {k:10s} {warmup[k]:.1f} s", flush=True)
    steps = {k: [] for k in args.models}
    for r in range(args.repeats):
        for k in args.models if r % 2 == 0 else reversed(args.models):
            step, _ = bench.time_fit(models[k], x, y, batch_size=bench.BATCH, shuffle=False)
            steps[k].append(step)
            print(f"  repeat {r + 1}/{args.repeats} {k:10s} {step * 1e3:.2f} ms/step", flush=True)
    return {
        k: {
            "train_images_per_s": bench.BATCH / statistics.median(v),
            "train_s_per_epoch": statistics.median(v) * bench.EPOCH_IMAGES / bench.BATCH,
            "train_repeats_s_per_step": v,
            "warmup_s": warmup[k],
        }
        for k, v in steps.items()
    }


def markdown(results, meta):
    ref = next((k for k in results if k.startswith("ref-")), None)
    mlp = results.get("mlp-0")
    lines = [
        f"Measured by `{meta['command']}` on {meta['device']} (JAX {meta['jax']}, Keras {meta['keras']}, "
        f"backend {meta['backend']}); medians of {meta['repeats']} alternating repeats of {meta['steps']} training "
        f"steps at batch {meta['batch']} (s / epoch = 469 steps at the steady-state step rate); warm-up = build + "
        "trace + compile + one pass.",
        "",
        "| model | train img/s | s / 60k epoch | speed-up vs ref | epoch / mlp epoch | warm-up s |",
        "|---|---|---|---|---|---|",
    ]
    for k in sorted(results, key=lambda k: (k != "mlp-0", not k.startswith("ref-"), k)):  # mlp, ref, the rest
        r = results[k]
        vs_ref = f"{results[ref]['train_s_per_epoch'] / r['train_s_per_epoch']:.2f}x" if ref and k != "mlp-0" else "–"
        vs_mlp = f"{r['train_s_per_epoch'] / mlp['train_s_per_epoch']:.1f}x" if mlp else "–"
        lines.append(
            f"| {k} | {r['train_images_per_s']:.0f} | {r['train_s_per_epoch']:.2f} | {vs_ref} | {vs_mlp} | {r['warmup_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp-0", "ref-50", "pde2-50"])
    parser.add_argument("--steps", type=int, default=60, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="benchmarks/bench-jax-gpu.json")
    parser.add_argument("--readme", default=None, help="regenerate the README's `performance-gpu` block")
    parser.add_argument("--render", action="store_true", help="no measuring: re-render the table from --json")
    args = parser.parse_args(argv)
    from pde_zoo.io_utils import atomic_write_json
    from pde_zoo.results import update_readme_block

    if args.render:
        recorded = json.loads(Path(args.json).read_text())
        results, meta = recorded["results"], recorded["meta"]
    else:
        import jax

        results = run(args)
        device = jax.devices()[0]
        meta = {
            "device": f"{device.platform.upper()} {getattr(device, 'device_kind', '')}".strip(),
            "host": platform.machine(), "jax": jax.__version__, "keras": keras.__version__,
            "backend": keras.backend.backend(), "repeats": args.repeats, "steps": args.steps, "batch": bench.BATCH,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "python scripts/bench_jax.py " + " ".join(sys.argv[1:]),
        }
        atomic_write_json(args.json, {"meta": meta, "results": results})
    table = markdown(results, meta)
    print(table)
    if args.readme:
        update_readme_block(args.readme, "performance-gpu", table)


if __name__ == "__main__":
    main()
