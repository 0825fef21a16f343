#!/usr/bin/env python
"""Where the time of a pde2-50 training epoch goes: the same model trained with parts switched
off, side by side in one process (alternating repeats, medians), on MNIST-shaped data.

  keras-adam     the recipe with keras.optimizers.Adam
  zoo-adam       the recipe with pde_zoo.optimizers.Adam (what `compile_model` uses)
  sgd            plain SGD: what Adam's per-variable updates of the 250 scalars cost
  frozen-blocks  blocks not trainable: the stencil forward pass only (no gradient enters the
                 stack: its input is the image and its weights are frozen)
  head-only      the mlp: Flatten + 3 Dense layers (the floor)

  python scripts/profile_pde.py [--threads 2] [--steps 30] [--repeats 4] [--json out.json]
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    from pde_zoo.threads import add_threads_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_threads_argument(parser)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--json", default=None)
    parser.add_argument("--readme", default=None, help="regenerate the README's `profile` block with this output")
    args = parser.parse_args()

    from pde_zoo.threads import set_threads

    set_threads(args.threads)
    import keras

    import bench
    import pde_zoo
    from pde_zoo.io_utils import atomic_write_json
    from pde_zoo.optimizers import Adam

    def variant(key):
        model = pde_zoo.build("mlp" if key == "head-only" else "pde2", 0 if key == "head-only" else args.depth)
        if key == "frozen-blocks":
            model.get_layer("blocks").trainable = False
        optimizer = {"keras-adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}.get(key, Adam)(1e-3)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    keys = ["keras-adam", "zoo-adam", "sgd", "frozen-blocks", "head-only"]
    ds = bench.train_dataset(args.steps)
    models = {k: variant(k) for k in keys}
    for k in keys:
        bench.time_fit(models[k], ds)
    times = {k: [] for k in keys}
    for r in range(args.repeats):
        for k in keys if r % 2 == 0 else reversed(keys):
            times[k].append(bench.time_fit(models[k], ds)[0] * bench.EPOCH_IMAGES / bench.BATCH)
    epoch = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"pde2-{args.depth}, TF threads: {bench.threads_label(args.threads)}: seconds per 60k-image epoch at the steady-state step rate (median of {args.repeats} alternating repeats of {args.steps} steps)"]
    lines += [f"  {k:14s} {epoch[k]:6.2f} s" for k in keys]
    lines.append(
        f"  => stencil forward {epoch['frozen-blocks'] - epoch['head-only']:.2f} s, stencil backward + 250 "
        f"weight updates (SGD) {epoch['sgd'] - epoch['frozen-blocks']:.2f} s, Adam over SGD {epoch['zoo-adam'] - epoch['sgd']:.2f} s "
        f"(keras Adam {epoch['keras-adam'] - epoch['sgd']:.2f} s), head {epoch['head-only']:.2f} s"
    )
    print("\n".join(lines))
    if args.readme:
        from pde_zoo.results import update_readme_block

        update_readme_block(args.readme, "profile", "```\n" + "\n".join(lines) + "\n```\n")
    if args.json:
        atomic_write_json(args.json, {"threads": args.threads, "depth": args.depth, "epoch_seconds": epoch, "repeats": times})


if __name__ == "__main__":
    main()
