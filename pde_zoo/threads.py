"""TensorFlow's thread settings, and the `--threads` option of the CLI and the scripts that set them."""

import os


def set_threads(threads):
    """Let TensorFlow run `threads` ops at once, each on one thread; None or 0 keeps TF's defaults.

    Sets inter-op parallelism to `threads` and intra-op parallelism to 1: the zoo's ops are
    small, and the stencil op splits its own work over the inter-op threads
    (`pde_zoo.layers._tf_stencil`). The *Performance* tables (docs/performance.md) compare this setting
    with TF's defaults (`scripts/bench.py --threads 0`).
    `pde-zoo train` uses all cores this way; `scripts/train_all.sh` trains two models at once
    with one thread each.
    Must be called before TensorFlow runs any op.
    """
    import tensorflow as tf

    if threads:
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: TF's defaults). Received: threads={threads}")
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def add_threads_argument(parser):
    """`--threads N` on an argparse parser: N TensorFlow ops at once, one thread each
    (`set_threads`); shared by the `pde-zoo` CLI and the scripts."""
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(),
        help="TensorFlow ops run at once, one thread each (default: all cores; 0: TF's own defaults)",
    )
