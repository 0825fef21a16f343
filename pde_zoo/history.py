"""history.csv, the per-epoch record of a run directory: read by figures, results and resumed
runs, written by `training.HistoryCSV` (and the JAX trainer) through `write_history`."""

import csv
from pathlib import Path

from pde_zoo.io_utils import atomic_write_text

HISTORY_FIELDS = ["epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds"]
SOLVER_FIELDS = ["nfe_forward", "nfe_backward"]  # history.csv columns of models with ODE blocks


def read_history(path):
    """The rows of a history.csv as dicts of strings, in file order; [] when there is no file."""
    if not Path(path).is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_history(path, rows, fields=None):
    """Write `rows` (dicts) to `path` atomically, one line per row; a missing value is empty.

    `fields` defaults to `HISTORY_FIELDS` plus the `SOLVER_FIELDS` the last row has.
    """
    if fields is None:
        fields = HISTORY_FIELDS + [k for k in SOLVER_FIELDS if rows and k in rows[-1]]
    lines = [",".join(fields)] + [",".join(str(r.get(k, "")) for k in fields) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
