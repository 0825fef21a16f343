"""`analyze`: the physics report of one model, written to a directory."""

from pathlib import Path

from pde_zoo import physics
from pde_zoo.analysis.markdown import report_markdown
from pde_zoo.analysis.numerics import jsonable, model_numbers
from pde_zoo.analysis.plots import write_figures
from pde_zoo.io_utils import atomic_write_json, atomic_write_text
from pde_zoo.loading import load_with_card


def analyze(model_or_spec, out_dir=None, image_index=0, data_dir=None):
    """Write the physics report of a model: report.md, report.json and PNG figures.

    Args:
        model_or_spec: keras Model (with a "blocks" layer, or one stack per stage), pretrained
            name ("pde1-50"), .keras file or run directory.
        out_dir: report directory; default reports/<name>.
        image_index: MNIST test image for the gated path sum (skipped if MNIST is unavailable).
        data_dir: MNIST IDX directory (see `pde_zoo.data`).

    Returns:
        The report as a dict (what report.json holds), with "out_dir".

    Raises:
        ValueError: no residual blocks (mlp, SavedModel).
    """
    model, name, card = load_with_card(model_or_spec)
    blocks = physics.blocks_of(model)
    if not blocks:
        raise ValueError(f"Model {name!r} has no residual blocks to analyse.")
    out = Path(out_dir) if out_dir is not None else Path("reports") / name
    numbers = model_numbers(model, blocks, image_index, data_dir)
    widths = numbers["widths"]
    report = {
        "model": name,
        "block_type": type(blocks[0]).__name__,
        "depth": len(blocks),
        "channels": widths[0] if len(widths) == 1 else widths,
        "params": int(model.count_params()),
        "test_accuracy": (card or {}).get("test_accuracy"),
        "layers": numbers["rows"],
        "stability": numbers["stability"],
        "pde_residual": numbers["pde_residual"],
        "propagator": numbers["propagator"],
        "gated": {k: v for k, v in numbers["gated"].items() if k != "weights"},
        "figures": write_figures(numbers, blocks, out),
        "out_dir": str(out),
    }
    atomic_write_text(out / "report.md", report_markdown(report))
    report = jsonable(report)
    atomic_write_json(out / "report.json", report)
    return report
