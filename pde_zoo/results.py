"""Results tables generated from the model cards (never typed): saved_models/results.csv and
the generated tables of the README and docs, with the thesis numbers (docs/conventions.md)
beside ours."""

import csv
import io
import json
from pathlib import Path

from pde_zoo.cards import read_card
from pde_zoo.io_utils import atomic_write_text

RESULT_FIELDS = [
    "name", "model", "depth", "params", "epochs", "test_acc", "best_test_acc", "val_acc", "train_seconds", "seed", "lr",
    "recipe", "nfe_forward", "nfe_backward", "device",
]

# Thesis test accuracy after 50 epochs (Table 4.1; Table 4.2 where it differs, for c_ResNet).
THESIS = {
    ("pde1", 5): "97.4%", ("pde1", 15): "96.5%", ("pde1", 27): "95.8%", ("pde1", 50): "89.2%",
    ("pde2", 27): "97.0%", ("pde2", 50): "96.9%",
    ("resnet", 5): "97.5%", ("resnet", 15): "97.3%", ("resnet", 27): "97.0% / 96.7%", ("resnet", 50): "96.2% / 97.3%",
}


def collect(models_dir):
    """One row per finished run directory (with card.json) under `models_dir`, sorted by model,
    depth, preset name: `name` is the preset (the directory, e.g. pde2-50.tuned-lr), `recipe`
    the card's recipe name (`pde_zoo.recipes`)."""
    rows = []
    for card_path in sorted(Path(models_dir).glob("*/card.json")):
        card = read_card(card_path)
        best, val = card["best_test_accuracy"], card["val_accuracy"]
        rows.append(
            {
                "name": card_path.parent.name,
                "model": card["name"],
                "depth": card["depth"],
                "params": card["params"],
                "epochs": card["epochs_run"],
                "test_acc": round(card["test_accuracy"], 4),
                "best_test_acc": None if best is None else round(best, 4),
                "val_acc": None if val is None else round(val, 4),
                "train_seconds": card["train_seconds"],
                "seed": card["recipe"]["seed"],
                "lr": card["recipe"]["learning_rate"],
                "recipe": card["recipe_name"],
                "nfe_forward": card["nfe_forward"],
                "nfe_backward": card["nfe_backward"],
                "device": card["device"]["kind"],
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["depth"], r["name"]))


def write_results_csv(models_dir):
    """Write `models_dir`/results.csv from the cards; returns the rows."""
    rows = collect(models_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(models_dir) / "results.csv", buffer.getvalue())
    return rows


def markdown_table(rows, recipe_epochs=50):
    """The README results table: ours beside the thesis, epochs run flagged when short of the recipe."""
    lines = [
        "| model | depth | params | epochs | test acc (ours) | best test acc | thesis | train time (s, 2-core CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["recipe"] == "thesis" and r["name"] == f"{r['model']}-{r['depth']}"):
        epochs = str(r["epochs"]) if r["epochs"] >= recipe_epochs else f"**{r['epochs']}** (recipe {recipe_epochs})"
        thesis = THESIS.get((r["model"], r["depth"]), "–")
        lines.append(f"| {r['model']} | {r['depth']} | {r['params']:,} | {epochs} | {100 * r['test_acc']:.2f}% | {100 * r['best_test_acc']:.2f}% | {thesis} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def own_recipe_table(rows, models_dir):
    """The table of the models trained with their own recipe (the card's recipe: schedule,
    augmentation, validation split; epochs run / the schedule's length), NFE for
    continuous-depth models."""
    lines = [
        "| model | depth | options | params | epochs run / schedule | recipe | val acc | test acc | NFE fwd / bwd | train s | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["recipe"] != "thesis"):
        card = read_card(Path(models_dir) / r["name"])
        recipe = card["recipe"]
        text = f"{recipe['optimizer'].capitalize()} {recipe['learning_rate']:g} {recipe['schedule']}, shift {recipe['shift']}, batch {recipe['batch_size']}"
        counts = [r["nfe_forward"], r["nfe_backward"]]  # backward: the adjoint's evaluations (none for backprop)
        nfe = "–" if counts == [None, None] else " / ".join("–" if n is None else str(n) for n in counts)
        lines.append(
            f"| {r['model']} | {r['depth']} | {', '.join(f'{k}={v}' for k, v in card['options'].items()) or '–'} | {r['params']:,} | "
            f"{r['epochs']} / {recipe['schedule_epochs'] or recipe['epochs']} | {text} | "
            f"{100 * r['val_acc']:.2f}% | {100 * r['test_acc']:.2f}% | {nfe} | {r['train_seconds']:.0f} | {r['device']} |"
        )
    return "\n".join(lines) + "\n"


def update_readme_block(readme, key, text):
    """Replace the generated block `key` of `readme`, between the lines
    `<!-- KEY:start ... -->` and `<!-- KEY:end -->`, with `text`."""
    text_in = Path(readme).read_text()
    start, end = f"<!-- {key}:start", f"<!-- {key}:end -->"
    if start not in text_in or end not in text_in:
        raise ValueError(f"{readme} has no generated block {key!r}; add the lines '{start} -->' and '{end}'.")
    head, rest = text_in.split(start, 1)
    marker, rest = rest.split("\n", 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, head + start + marker + "\n" + text + end + tail)


def presets_table(rows):
    """The README's model table: one row per pretrained preset with its headline numbers."""
    lines = ["| preset | model | depth | params | recipe | epochs | val acc | test acc |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["test_acc"], r["name"])):
        val = "–" if r["val_acc"] is None else f"{100 * r['val_acc']:.2f}%"
        lines.append(f"| `{r['name']}` | {r['model']} | {r['depth']} | {r['params']:,} | {r['recipe']} | {r['epochs']} | {val} | {100 * r['test_acc']:.2f}% |")
    return "\n".join(lines) + "\n"


def recipes_table():
    """The named recipes (`pde_zoo.recipes.RECIPES`), one row each, every key a column."""
    from pde_zoo.recipes import KEYS, RECIPES

    keys = [k for k in KEYS if k != "loss"]
    lines = ["| recipe | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, recipe in sorted(RECIPES.items()):
        values = recipe.to_dict()
        lines.append(f"| `{name}` | " + " | ".join("–" if values[k] is None else f"{values[k]:g}" if isinstance(values[k], float) else str(values[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def update_docs(paths, rows, models_dir):
    """Regenerate every generated block found in the files `paths` (README.md, docs pages):
    "presets" (`presets_table`), "recipes" (`recipes_table`), "results" (`markdown_table`), "results-own" (`own_recipe_table`)
    and "tuning" (`tuning_table`). ValueError for a file with none of them."""
    makers = {"presets": lambda: presets_table(rows), "recipes": recipes_table, "results": lambda: markdown_table(rows),
              "results-own": lambda: own_recipe_table(rows, models_dir), "tuning": lambda: tuning_table(models_dir)}
    for path in paths:
        text = Path(path).read_text()
        keys = [key for key in makers if f"<!-- {key}:start" in text]
        if not keys:
            raise ValueError(f"{path} has none of the generated blocks {', '.join(makers)} (lines '<!-- KEY:start -->' ... '<!-- KEY:end -->').")
        for key in keys:
            update_readme_block(path, key, makers[key]())


def tuning_table(models_dir):
    """Fixed lr 1e-3 against the KerasTuner lr: one row per `tuning/<model>.json` under `models_dir`,
    with the test accuracy of the presets `<model>` (fixed) and `<model>.tuned-lr` (tuned) where trained."""
    root = Path(models_dir)
    lines = [
        "| model | tuned lr (Hyperband) | trials | val acc in search | search s | test acc, lr 1e-3 | test acc, tuned lr | epochs (fixed / tuned) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted((root / "tuning").glob("*.json")):
        tuned = json.loads(path.read_text())
        presets = [root / (tuned["model"] + tag) for tag in ("", ".tuned-lr")]
        fixed, tuned_card = (read_card(p) if (p / "card.json").is_file() else None for p in presets)
        acc = lambda card: f"{100 * card['test_accuracy']:.2f}%" if card else "not trained"  # noqa: E731
        epochs = " / ".join(str(card["epochs_run"]) if card else "–" for card in (fixed, tuned_card))
        lines.append(
            f"| {tuned['model']} | {tuned['learning_rate']:.2e} | {tuned['trials']} | {100 * tuned['best_val_accuracy']:.2f}% | "
            f"{tuned['search_seconds']:.0f} | {acc(fixed)} | {acc(tuned_card)} | {epochs} |"
        )
    return "\n".join(lines) + "\n"
