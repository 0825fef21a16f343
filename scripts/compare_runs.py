#!/usr/bin/env python
"""Compare re-made runs with the presets they re-make, from their cards, and say which to keep.

For each pair (preset, run directory): validation and test accuracy, epochs, train seconds,
device and the commit that made each. The choice is made on validation accuracy only (never
the test set): the re-made model is kept when its validation accuracy is not worse than the
preset's by more than two binomial standard deviations of a difference of two accuracies on
the same n images, 2·sqrt(2·p(1 − p)/n) (within noise, the package-made model wins: it can be
re-run by one command); otherwise the preset stays. Writes the table as Markdown.

  python scripts/compare_runs.py --out reports/remake/README.md pdenet-16=runs/remake/pdenet-16 ...
"""

import argparse
import math
import sys
from pathlib import Path

from pde_zoo.cards import read_card
from pde_zoo.io_utils import atomic_write_text


def noise(accuracy, n):
    """Two binomial standard deviations of the difference of two accuracies near `accuracy` on n images."""
    return 2 * math.sqrt(2 * accuracy * (1 - accuracy) / n)


def decide(old, new):
    """("keep the re-made run" | "keep the preset", the margin) from validation accuracy alone."""
    n = new["data"]["validation_examples"]
    margin = noise(old["val_accuracy"], n)
    keep_new = new["val_accuracy"] >= old["val_accuracy"] - margin
    return ("keep the re-made run" if keep_new else "keep the preset"), margin


def _device(card):
    device = card["device"]
    return ", ".join(str(device[k]) for k in ("cpu", "vector_extensions") if k in device) or device["kind"]


def table(pairs):
    lines = [
        "| preset | made by | epochs | val acc | test acc | train s | device | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    decisions = []
    for preset, run in pairs:
        old, new = read_card(preset), read_card(run)
        name = Path(preset).name  # a preset name, or a directory holding the preset's card from before
        for label, card in (("preset (before)", old), (f"`pde-zoo train --from-card {name}`", new)):
            commit = card["versions"]["commit"][:10] if card["versions"]["commit"] != "unknown" else "unknown"
            schedule = f" (of a {card['recipe']['schedule_epochs']}-epoch schedule)" if card["recipe"]["schedule_epochs"] else ""
            lines.append(
                f"| {name} | {label} | {card['epochs_run']}{schedule} | {100 * card['val_accuracy']:.2f}% | {100 * card['test_accuracy']:.2f}% | "
                f"{card['train_seconds']:.0f} | {_device(card)} | {commit} |"
            )
        verdict, margin = decide(old, new)
        decisions.append(f"- **{name}**: validation {100 * new['val_accuracy']:.2f}% (re-made) against {100 * old['val_accuracy']:.2f}% "
                         f"(preset), noise ±{100 * margin:.2f}% → {verdict}.")
    return "\n".join(lines) + "\n\n" + "\n".join(decisions) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", metavar="PRESET=RUN_DIR", help="PRESET: a pretrained name, or a directory holding the card of the preset as it was")
    parser.add_argument("--out", default=None, help="write the Markdown here (default: print it)")
    args = parser.parse_args()
    pairs = []
    for item in args.pairs:
        name, sep, run = item.partition("=")
        if not sep:
            parser.error(f"expected PRESET=RUN_DIR. Received: {item!r}")
        pairs.append((name, Path(run)))
    text = table(pairs)
    if args.out:
        atomic_write_text(args.out, text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
