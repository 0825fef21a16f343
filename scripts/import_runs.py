#!/usr/bin/env python
"""Turn run directories of `pde-zoo train` (or tars of them, e.g. from a GPU machine where
training ran with KERAS_BACKEND=jax) into pretrained presets `saved_models/<name>/`, with TensorFlow:

- load `model.keras` with pde_zoo (TF backend), re-measure the test accuracy on the test images
  the run used (its card's data source and `test_examples`): a difference above 0.1% from the
  card's figure is an error (the backends and the reload must agree);
- export the SavedModel (`pde_zoo.inference.export_saved_model`: plain TF ops only) when the
  run has none;
- copy into `<models-dir>/<--name or the card's model name>` atomically (a model directory is
  complete or absent).

Then run `pde-zoo results --readme README.md docs/results.md docs/training.md` to regenerate results.csv, the tables and
the pretrained manifest.

  python scripts/import_runs.py runs/remake/pdenet-16 [--name pdenet-16] [--models-dir saved_models]
"""

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path


def import_run(source, models_dir, name=None):
    from pde_zoo import evaluate, load
    from pde_zoo.cards import read_card
    from pde_zoo.inference import export_saved_model

    models_dir = Path(models_dir)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".import-") as tmp:
        if Path(source).is_dir():
            run = Path(tmp) / "run"
            shutil.copytree(source, run, ignore=shutil.ignore_patterns("work"))
        else:
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            (run,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        card = read_card(run / "card.json")
        model = load(run / "model.keras", compile=False)
        _, accuracy = evaluate(model, card["data"]["source"], limit=card["data"]["test_examples"])
        if abs(accuracy - card["test_accuracy"]) > 1e-3:
            raise RuntimeError(f"{source}: test accuracy {accuracy:.4f} after reloading on TF != {card['test_accuracy']:.4f} in the card")
        if not (run / "saved_model").is_dir():
            export_saved_model(model, run / "saved_model")
        for scratch in ("backup", "logs"):  # resume state and TensorBoard: not part of a preset
            shutil.rmtree(run / scratch, ignore_errors=True)
        for scratch in ("run.json", ".claim"):
            (run / scratch).unlink(missing_ok=True)
        target = models_dir / (name or card["model"])
        if target.exists():
            shutil.rmtree(target)
        os.replace(run, target)
    print(f"{target}: test accuracy {card['test_accuracy']:.4f} (card) / {accuracy:.4f} (TF reload), SavedModel present")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or .tar archives of them")
    parser.add_argument("--models-dir", default="saved_models")
    parser.add_argument("--name", default=None, help="preset name (one run only; default the card's model, e.g. pdenet-16)")
    args = parser.parse_args()
    if args.name and len(args.runs) > 1:
        parser.error("--name names one run")
    for run in args.runs:
        import_run(run, args.models_dir, args.name)


if __name__ == "__main__":
    sys.exit(main())
