"""Model cards: the one schema every run writes and every reader reads (`card.json`).

A card holds what is needed to run its model again (`pde-zoo train --from-card`), and what
came of it. Keys (version `CARD_VERSION`):

    card_version       this schema's version
    model              "<name>-<depth>", the Keras model's name
    name, depth        the registry model and its depth
    options            every builder option given (`pde_zoo.build(name, depth, **options)`)
    recipe_name        the named recipe it started from ("custom" for a dict)
    recipe             the fully resolved `pde_zoo.recipes.Recipe`, `epochs` as run
    data               source (as `pde_zoo.sources.load_source` takes it), sha256,
                       fit/validation/test examples, input_shape, num_classes
    plan               the budget planner's decision (budget, seconds per epoch, epochs), or null
    overrides          what a rerun changed: {"from_card", "set", "option"}, or null
    epochs_run, complete, stopped_on_nan, resumed_after_epochs
    params, test_accuracy, test_loss, val_accuracy, val_loss (null without a validation
    split), best_epoch / best_test_accuracy (the test set monitored every epoch: thesis recipe),
    train_seconds, nfe_forward, nfe_backward (models with ODE blocks, else null)
    versions           pde_zoo, commit (the git commit of a checkout, else "unknown"), keras,
                       backend, framework versions, python
    device, distribution, command (what to type to run it again), finished_utc

Cards of the earlier schemas were converted once by `scripts/convert_cards.py`; readers refuse
anything but this version with a message saying what to do.
"""

import json
import shlex
import subprocess
from pathlib import Path

CARD_VERSION = 2
CONVERT_COMMAND = "python scripts/convert_cards.py DIR"


class CardError(ValueError):
    """A card that is missing, unreadable, or of another schema version."""


def card_path(spec):
    """The card.json of a pretrained name, a run directory, a .keras file beside one, or a
    card.json path itself."""
    path = Path(str(spec))
    if path.is_dir():
        return path / "card.json"
    if path.suffix in (".json", ".keras"):
        return path if path.suffix == ".json" else path.parent / "card.json"
    from pde_zoo.pretrained import resolve

    return resolve(str(spec)) / "card.json"


def read_card(spec):
    """The card (dict) of `spec` (see `card_path`); CardError naming the file when it is missing,
    is not JSON, or is not of version `CARD_VERSION`."""
    path = card_path(spec)
    if not path.is_file():
        raise CardError(f"{path}: no card there. Pass a pretrained name (pde-zoo list --pretrained), a run directory or a card.json.")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CardError(f"{path} is not a valid card (not JSON: {err}); restore it from the repository or retrain the model.") from err
    if not isinstance(card, dict):
        raise CardError(f"{path} is not a valid card (a JSON object is expected).")
    version = card.get("card_version")
    if version is None or (isinstance(version, int) and version < CARD_VERSION):
        raise CardError(f"{path} is a card of an older schema (card_version {version}); convert it once with `{CONVERT_COMMAND}`.")
    if version != CARD_VERSION:
        raise CardError(f"{path} has card_version {version!r}, newer than this pde_zoo reads ({CARD_VERSION}); upgrade pde_zoo.")
    return card


def git_commit(start=None):
    """The git commit of the checkout holding `start` (default this package), else "unknown";
    "-dirty" is appended when tracked files differ from it."""
    where = str(Path(start or __file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if commit.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train_command(card):
    """The `pde-zoo train` command that runs what `card` records (its recipe as differences from
    the named recipe, its options and data source)."""
    from pde_zoo.recipes import RECIPES, Recipe, differences

    words = ["pde-zoo", "train", card["name"], "--depth", str(card["depth"])]
    recipe_name = card["recipe_name"] if card["recipe_name"] in RECIPES else "thesis"
    words += ["--recipe", recipe_name]
    for key, value in differences(Recipe.from_dict(card["recipe"]), recipe_name).items():
        words += ["--set", f"{key}={json.dumps(value)}"]
    for key, value in card["options"].items():
        words += ["--option", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    if card["data"]["source"] != "mnist":
        words += ["--data", card["data"]["source"]]
    return shlex.join(words)
