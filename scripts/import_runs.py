#!/usr/bin/env python
"""Turn the run archives of `scripts/train_recipe.py` (trained on the JAX backend, e.g. on a GPU
machine without TensorFlow) into `saved_models/<run>/` entries, with TensorFlow:

- load `model.keras` with pde_zoo (TF backend), re-measure the test accuracy on the test images
  the run used (all 10,000 for a full run) and record it in the card beside the JAX figure (`test_accuracy_tf`); a difference
  above 0.1% is an error (the two backends must agree);
- export the SavedModel (`training.export_saved_model`: plain TF ops only);
- move the directory into place atomically (a model directory is complete or absent).

Then run `pde-zoo results` to regenerate results.csv, the README tables and the manifest.

  python scripts/import_runs.py /path/to/odenet-1.tar ... [--models-dir saved_models]
"""

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path


def import_run(archive, models_dir):
    from pde_zoo import load, training

    models_dir = Path(models_dir)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".import-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (run,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        card = json.loads((run / "card.json").read_text())
        model = load(run / "model.keras", compile=False)
        _, accuracy = training.evaluate(model, limit=card["data"]["test_examples"])
        if abs(accuracy - card["test_accuracy"]) > 1e-3:
            raise RuntimeError(f"{run.name}: test accuracy {accuracy:.4f} on TF != {card['test_accuracy']:.4f} on JAX")
        card["test_accuracy_tf"] = accuracy
        training.export_saved_model(model, run / "saved_model")
        (run / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        target = models_dir / run.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(run, target)
    print(f"{target}: test accuracy {card['test_accuracy']:.4f} (JAX) / {accuracy:.4f} (TF), SavedModel exported")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archives", nargs="+")
    parser.add_argument("--models-dir", default="saved_models")
    args = parser.parse_args()
    for archive in args.archives:
        import_run(archive, args.models_dir)


if __name__ == "__main__":
    sys.exit(main())
