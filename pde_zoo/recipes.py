"""Training recipes as data: what `pde_zoo.train` runs, recorded whole in every model card.

A recipe is a small, serialisable record (`Recipe`); named recipes live in `RECIPES` and every
registry model has a default one (`default_recipe(name)`). `pde-zoo train --recipe R --set
KEY=VALUE` picks one and overrides numbers; a card's `recipe` is the fully resolved record, so
`pde-zoo train --from-card` runs it again.

Keys (all of them are in every card):

    optimizer        "adam" (`pde_zoo.optimizers.Adam`, Keras's Adam with fused updates)
    learning_rate    the peak learning rate (the constant one for schedule "constant")
    schedule         "constant", or "cosine": linear warm-up from 0 over `warmup_epochs` (at
                     most half the schedule, so a short run still decays), then cosine decay
                     to exactly 0 at the last step of `schedule_epochs`
    warmup_epochs    epochs of linear warm-up (cosine only)
    epochs           epochs trained
    schedule_epochs  length of the cosine in epochs; null (the default) means `epochs`, so the
                     schedule completes. Set only to record a run cut short of its schedule.
    batch_size       examples per step
    shift            random translation of each training image by up to `shift` pixels in
                     each axis, zeros shifted in (`pde_zoo.data.random_shift`); 0 = none
    validation       the last `validation` training images, held out (never fitted) and
                     scored every epoch; 0 = none, and then the test set is scored every epoch
                     instead (the thesis's monitoring; nothing is ever selected on it)
    train_examples   fit on the first N of the remaining training images; null = all
    test_examples    score the first N test images; null = all
    seed             weights, data order and augmentation (with op determinism on)
    loss             "sparse_categorical_crossentropy"

The thesis recipe is the thesis's experiment (chapter IV): Adam 1e-3, batch 128, 50 epochs,
every training image fitted, no augmentation.
"""

import dataclasses
import json
import math

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training recipe (see the module docstring for every key)."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_epochs: int = 0
    epochs: int = 50
    schedule_epochs: int = None
    batch_size: int = 128
    shift: int = 0
    validation: int = 0
    train_examples: int = None
    test_examples: int = None
    seed: int = 0
    loss: str = "sparse_categorical_crossentropy"

    def __post_init__(self):
        def integer(key, minimum, optional=False):
            value = getattr(self, key)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"Recipe key {key!r} must be an integer >= {minimum}{' or null' if optional else ''}. Received: {key}={value!r}")

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe key 'optimizer' must be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Recipe key 'schedule' must be one of {SCHEDULES}. Received: schedule={self.schedule!r}")
        if self.loss != Recipe.loss:
            raise ValueError(f"Recipe key 'loss' must be {Recipe.loss!r}. Received: loss={self.loss!r}")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) or not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"Recipe key 'learning_rate' must be a positive number. Received: learning_rate={self.learning_rate!r}")
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        for key, minimum in (("epochs", 1), ("batch_size", 1), ("warmup_epochs", 0), ("shift", 0), ("validation", 0), ("seed", 0)):
            integer(key, minimum)
        for key in ("schedule_epochs", "train_examples", "test_examples"):
            integer(key, 1, optional=True)
        if self.schedule == "constant" and self.warmup_epochs:
            raise ValueError(f"warmup_epochs needs schedule 'cosine'. Received: schedule='constant', warmup_epochs={self.warmup_epochs}")
        if self.schedule_epochs is not None and self.schedule_epochs < self.epochs:
            raise ValueError(f"schedule_epochs must be >= epochs (a schedule is never shorter than the run). Received: schedule_epochs={self.schedule_epochs}, epochs={self.epochs}")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The recipe of a dict (a card's `recipe`); ValueError naming unknown or bad keys."""
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise ValueError(f"Unknown recipe key(s) {unknown}. Valid keys: {', '.join(KEYS)}.")
        return cls(**values)

    def replace(self, **overrides):
        """A copy with `overrides` applied (validated like a new recipe)."""
        return Recipe.from_dict({**self.to_dict(), **overrides})


KEYS = tuple(field.name for field in dataclasses.fields(Recipe))
NUMERIC_KEYS = tuple(k for k in KEYS if k not in ("optimizer", "schedule", "loss"))  # what --set may change

_OWN = dict(optimizer="adam", schedule="cosine", batch_size=128, validation=5000)
RECIPES = {
    "thesis": Recipe(),
    # Chen et al.'s ODE-Net setting, shortened: Adam 3e-3 with a one-epoch warm-up, shifts <= 2 px.
    "odenet": Recipe(**_OWN, learning_rate=3e-3, warmup_epochs=1, epochs=15, shift=2),
    "pdenet": Recipe(**_OWN, learning_rate=3e-3, warmup_epochs=1, epochs=15, shift=2),
    "convresnet": Recipe(**_OWN, learning_rate=3e-3, warmup_epochs=1, epochs=15, shift=2),
    "pde1ode": Recipe(**_OWN, learning_rate=1e-3, epochs=30),
    "pde2ode": Recipe(**_OWN, learning_rate=1e-3, epochs=30),
}


def list_recipes():
    return sorted(RECIPES)


def get_recipe(name):
    """The named recipe; ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Known recipes: {', '.join(list_recipes())}.")
    return RECIPES[name]


def default_recipe_name(model):
    """The recipe a registry model trains with unless told otherwise: the one named after it,
    else the thesis recipe."""
    return model if model in RECIPES else "thesis"


def parse_sets(items):
    """["shift=1", "learning_rate=2e-3"] -> {"shift": 1, "learning_rate": 0.002}: `--set` values.

    Only numeric keys (`NUMERIC_KEYS`) may be set, to numbers; ValueError listing the valid
    keys otherwise, before anything runs.
    """
    overrides = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not sep or key not in NUMERIC_KEYS:
            raise ValueError(f"--set takes KEY=NUMBER with KEY one of {', '.join(NUMERIC_KEYS)}. Received: {item!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"--set {key} needs a number. Received: {item!r}")
        overrides[key] = value
    return overrides


def resolve(model, recipe=None, overrides=None):
    """(recipe name, Recipe) for `model`: `recipe` (a name, a Recipe, a dict) or the model's
    default, with `overrides` applied."""
    if recipe is None:
        recipe = default_recipe_name(model)
    if isinstance(recipe, str):
        name, base = recipe, get_recipe(recipe)
    elif isinstance(recipe, Recipe):
        name, base = "custom", recipe
    else:
        name, base = "custom", Recipe.from_dict(recipe)
    return name, base.replace(**(overrides or {}))


def differences(recipe, name):
    """{key: value} where `recipe` differs from the named recipe (what `--set` must say)."""
    base = RECIPES.get(name, Recipe()).to_dict()
    return {k: v for k, v in recipe.to_dict().items() if base[k] != v}
