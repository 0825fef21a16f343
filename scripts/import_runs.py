#!/usr/bin/env python
"""Turn runs of `scripts/train_recipe.py` (a run directory, or a tar of one, e.g. from a GPU
machine without TensorFlow) into `saved_models/<name>-<depth>/` entries, with TensorFlow:

- load `model.keras` with pde_zoo (TF backend), re-measure the test accuracy on the test images
  the run used (all 10,000 for a full run): a difference above 0.1% from the card's figure is
  an error (the backends and the reload must agree); record it in the card (`test_accuracy_tf`);
- export the SavedModel (`training.export_saved_model`: plain TF ops only) when the run has none;
- copy into `<models-dir>/<card's model name>` atomically (a model directory is complete or
  absent); the card's `options` record a non-default build (e.g. channels=32).

Then run `pde-zoo results --readme README.md` to regenerate results.csv, the README tables and
the pretrained manifest.

  python scripts/import_runs.py runs/own/pdenet-16__channels-32 odenet-1.tar [--models-dir saved_models]
"""

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path


def import_run(source, models_dir):
    from pde_zoo import load, training

    models_dir = Path(models_dir)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".import-") as tmp:
        if Path(source).is_dir():
            run = Path(tmp) / "run"
            shutil.copytree(source, run, ignore=shutil.ignore_patterns("work"))
        else:
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            (run,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        card = json.loads((run / "card.json").read_text())
        model = load(run / "model.keras", compile=False)
        _, accuracy = training.evaluate(model, limit=card["data"]["test_examples"])
        if abs(accuracy - card["test_accuracy"]) > 1e-3:
            raise RuntimeError(f"{source}: test accuracy {accuracy:.4f} after reloading on TF != {card['test_accuracy']:.4f} in the card")
        card["test_accuracy_tf"] = accuracy
        if not (run / "saved_model").is_dir():
            training.export_saved_model(model, run / "saved_model")
        (run / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        target = models_dir / card["model"]
        if target.exists():
            shutil.rmtree(target)
        os.replace(run, target)
    print(f"{target}: test accuracy {card['test_accuracy']:.4f} (card) / {accuracy:.4f} (TF reload), SavedModel present")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or .tar archives of them")
    parser.add_argument("--models-dir", default="saved_models")
    args = parser.parse_args()
    for run in args.runs:
        import_run(run, args.models_dir)


if __name__ == "__main__":
    sys.exit(main())
