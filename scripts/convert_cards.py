#!/usr/bin/env python
"""Convert model cards and histories of the earlier schemas to the one schema (`pde_zoo.cards`,
`pde_zoo.history`), once, in place; every card.json under the given directories.

Two earlier shapes existed: cards of the thesis loop (`recipe` with `learning_rate`, `epochs`;
history with the test set every epoch) and cards of the retired `scripts/train_recipe.py`
(`recipe` with `peak_learning_rate`, `max_epochs`, `planned_epochs`; history with a
validation split). What ran is recorded as it ran:

- the recipe's `epochs` are the epochs run; a train_recipe.py run whose budget planner cut it
  short of `max_epochs` trained on the cosine laid over `max_epochs` (the planner's change of
  the schedule never took effect), so its recipe gets `schedule_epochs = max_epochs`;
- the history's `learning_rate` column is the rate of each epoch's last step, recomputed from
  the schedule that actually ran (train_recipe.py's `decay_steps = planned·S − W`, Keras's
  `CosineDecay`);
- the original command and card fields that have no place in the schema are kept under
  `converted_from`; the commit of an old card is "unknown" (it was not recorded).

  python scripts/convert_cards.py saved_models reports
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

from pde_zoo import cards
from pde_zoo.history import read_history, write_history
from pde_zoo.io_utils import atomic_write_json
from pde_zoo.recipes import RECIPES, Recipe

MNIST_TRAIN = 60000


def _thesis_recipe(card):
    old = card["recipe"]
    return "thesis", Recipe(learning_rate=old["learning_rate"], epochs=card["epochs_run"], batch_size=old["batch_size"], seed=card["seed"],
                            train_examples=old.get("train_examples") if card["data"].get("subset") else None)


def _own_recipe(card):
    old = card["recipe"]
    validation = int(re.match(r"last (\d+) training images", old["validation"])[1])
    cut = card["epochs_run"] < old["max_epochs"] and old["planned_epochs"] < old["max_epochs"]
    recipe = Recipe(optimizer=old["optimizer"], learning_rate=old["peak_learning_rate"], schedule=old["schedule"], warmup_epochs=old["warmup_epochs"],
                    epochs=card["epochs_run"], schedule_epochs=old["max_epochs"] if cut else None, batch_size=old["batch_size"], shift=old["shift"],
                    validation=validation, seed=card["seed"])
    return (card["name"] if card["name"] in RECIPES else "custom"), recipe


def _old_schedule(card):
    """The learning rate per step that a train_recipe.py run actually trained with."""
    import keras

    old = card["recipe"]
    steps = math.ceil(old["fit_examples"] / old["batch_size"])
    warm, peak = old["warmup_epochs"] * steps, old["peak_learning_rate"]
    schedule = keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0 if warm else peak, decay_steps=max(1, old["max_epochs"] * steps - warm),
                                                      warmup_target=peak if warm else None, warmup_steps=warm)
    return lambda epoch: float(schedule(epoch * steps - 1))


def convert(card_file):
    """Convert one card (and its history.csv) in place; returns False when it is already current."""
    card = json.loads(card_file.read_text())
    if card.get("card_version") == cards.CARD_VERSION:
        return False
    own = "peak_learning_rate" in card["recipe"]
    recipe_name, recipe = (_own_recipe if own else _thesis_recipe)(card)
    history_file = card_file.parent / "history.csv"
    rows = read_history(history_file)
    rate = _old_schedule(card) if own else (lambda epoch: recipe.learning_rate)
    for row in rows:
        row["learning_rate"] = rate(int(row["epoch"]))
    machine, data, versions = card.get("machine", {}), card["data"], card.get("versions", {})
    validation = recipe.validation
    new = {
        "card_version": cards.CARD_VERSION,
        "model": card["model"], "name": card["name"], "depth": card["depth"], "options": card["options"],
        "recipe_name": recipe_name, "recipe": recipe.to_dict(),
        "data": {"source": "mnist", "sha256": data["sha256"], "fit_examples": data["train_examples"], "validation_examples": validation,
                 "test_examples": data["test_examples"], "input_shape": [28, 28, 1], "num_classes": 10},
        "plan": ({"budget_seconds": None, "seconds_per_epoch": None, "epochs": old_planned, "recipe_epochs": card["recipe"]["max_epochs"]}
                 if own and (old_planned := card["recipe"]["planned_epochs"]) != card["recipe"]["max_epochs"] else None),
        "overrides": None,
        "epochs_run": card["epochs_run"], "complete": card["complete"], "stopped_on_nan": card["stopped_on_nan"],
        "resumed_after_epochs": card.get("resumed_after_epochs", []),
        "params": card["params"], "test_accuracy": card["test_accuracy"], "test_loss": card["test_loss"],
        "val_accuracy": card.get("val_accuracy"), "val_loss": float(rows[-1]["val_loss"]) if own and rows else None,
        "best_test_accuracy": card.get("best_test_accuracy"), "best_epoch": card.get("best_epoch"),
        "train_seconds": card["train_seconds"], "nfe_forward": card.get("nfe_forward"), "nfe_backward": card.get("nfe_backward"),
        "versions": {"pde_zoo": versions.get("pde_zoo", "unknown"), "commit": "unknown", "keras": versions.get("keras", "unknown"),
                     "backend": versions.get("backend", "tensorflow"),
                     **{k: versions[k] for k in ("tensorflow", "jax") if k in versions}, "python": versions.get("python", "unknown")},
        "device": {"kind": machine.get("device") or f"{machine.get('cpus', '?')}-core CPU", "platform": machine.get("platform", "unknown")},
        "distribution": card.get("distribution", {"strategy": "none", "replicas": 1, "processes": 1}),
        "finished_utc": card["finished_utc"],
        "converted_from": {k: card[k] for k in ("command", "lr_source", "test_accuracy_tf") if k in card} | {"recipe": card["recipe"]},
    }
    if new["data"]["fit_examples"] + validation > MNIST_TRAIN:
        raise ValueError(f"{card_file}: {new['data']['fit_examples']} fitted + {validation} validation images exceed MNIST's {MNIST_TRAIN}")
    new["command"] = cards.train_command(new)
    write_history(history_file, rows)
    atomic_write_json(card_file, new)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="directories searched for card.json")
    args = parser.parse_args()
    changed = 0
    for root in args.dirs:
        for card_file in sorted(Path(root).rglob("card.json")):
            if convert(card_file):
                changed += 1
                print(f"converted {card_file}")
    print(f"{changed} card(s) converted", file=sys.stderr)


if __name__ == "__main__":
    main()
