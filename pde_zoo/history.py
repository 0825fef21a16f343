"""history.csv, the per-epoch record of a run directory: read by figures, results and resumed
runs, written by `training.EpochRecord` through `write_history`.

One schema for every run (`HISTORY_FIELDS`); a value not measured is empty: `val_*` without a
validation split, `test_*` when the test set is not scored every epoch (only the thesis recipe,
which has no validation split, scores it), the NFE columns for models without ODE blocks.
`learning_rate` is the rate of the epoch's last optimizer step."""

import csv
from pathlib import Path

from pde_zoo.io_utils import atomic_write_text

SOLVER_FIELDS = ["nfe_forward", "nfe_backward"]  # NFE of the ODE blocks on a probe batch
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "learning_rate", "seconds", *SOLVER_FIELDS]


def read_history(path):
    """The rows of a history.csv as dicts of strings, in file order; [] when there is no file."""
    if not Path(path).is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_history(path, rows):
    """Write `rows` (dicts) to `path` atomically in the columns `HISTORY_FIELDS`, one line per
    row; a missing value is empty. ValueError for a key outside the schema."""
    fields = HISTORY_FIELDS
    extra = sorted({k for r in rows for k in r} - set(fields))
    if extra:
        raise ValueError(f"history.csv has the columns {fields}; not {extra}.")
    lines = [",".join(fields)] + [",".join("" if r.get(k) is None else str(r[k]) for k in fields) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
