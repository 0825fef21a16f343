"""`analyze`: the physics report of one model, written to a directory."""

from pathlib import Path

import numpy as np

from pde_zoo import physics
from pde_zoo.analysis.continuous import continuous_numbers, ode_blocks_of, pde_fields_of
from pde_zoo.analysis.markdown import continuous_markdown, report_markdown
from pde_zoo.analysis.numerics import jsonable, model_numbers
from pde_zoo.analysis.plots import write_continuous_figures, write_figures
from pde_zoo.io_utils import atomic_write_json, atomic_write_text
from pde_zoo.loading import load_with_card


def analyze(model_or_spec, out_dir=None, image_index=0, data_dir=None):
    """Write the physics report of a model: report.md, report.json and PNG figures.

    Discrete models (residual blocks in `StencilStack` layers): per block its stencil, PDE fit and
    von Neumann amplification, the propagator and the gated path sum (`numerics`). Continuous PDE
    models (pde1ode, pde2ode: a `PDEField` inside an `ODEBlock`): per time segment the
    coefficients, the symbol |R(h λ(p))| of one solver step over the steps the solver took on
    MNIST test image `image_index`, and stability (`continuous`). Every layer read must implement
    the physics protocol (`pde_zoo.layers.physics_protocol`).

    Args:
        model_or_spec: keras Model, pretrained name ("pde1-50", "pde2ode-5"), .keras file or
            run directory; or one block / `StencilStack` layer (analysed as a stack of its own).
        out_dir: report directory; default reports/<name>.
        image_index: MNIST test image for the gated path sum, or whose solve gives a continuous
            model's step sizes (a synthetic image, said in the report, if MNIST is unavailable).
        data_dir: MNIST IDX directory (see `pde_zoo.data`).

    Returns:
        The report as a dict (what report.json holds), with "out_dir"; a continuous model's has
        "kind": "continuous" and "segments" instead of "layers".

    Raises:
        ValueError: no residual blocks and no PDE fields (mlp, a SavedModel; odenet, whose
            `ConvField` is not a PDE); a bare vector field (analyse the model holding it).
        TypeError: a layer outside the physics protocol: the message names the missing method.
    """
    import keras

    if isinstance(model_or_spec, keras.layers.Layer) and not isinstance(model_or_spec, keras.Model):
        return _analyze_layer(model_or_spec, out_dir, image_index, data_dir)
    model, name, card = load_with_card(model_or_spec)
    out = Path(out_dir) if out_dir is not None else Path("reports") / name
    if ode_blocks_of(model):
        return _analyze_continuous(model, name, card, out, image_index, data_dir)
    blocks = physics.blocks_of(model)
    if not blocks:
        raise ValueError(f"Model {name!r} has no residual blocks to analyse.")
    return _write_discrete(model, name, card, blocks, out, image_index, data_dir, int(model.count_params()))


def _analyze_layer(layer, out_dir, image_index, data_dir):
    from pde_zoo.layers import VectorField
    from pde_zoo.layers.physics_protocol import (
        PiecewiseFieldLayer,
        is_piecewise_field,
        require,
    )

    if isinstance(layer, VectorField):
        require(layer, PiecewiseFieldLayer, reader="pde-zoo analyze (a vector field)")
        if is_piecewise_field(layer):
            raise ValueError(
                f"analyze reads a continuous model's step sizes from its solve: pass the model holding {layer.name!r} in "
                "an ODEBlock (e.g. pde_zoo.build('pde2ode', depth=5)), not the field alone."
            )
    blocks = physics.blocks_of(layer)
    out = Path(out_dir) if out_dir is not None else Path("reports") / layer.name
    params = sum(int(np.prod(w.shape)) for w in layer.weights)
    return _write_discrete(None, layer.name, None, blocks, out, image_index, data_dir, params)


def _write_discrete(model, name, card, blocks, out, image_index, data_dir, params):
    numbers = model_numbers(model, blocks, image_index, data_dir)
    widths = numbers["widths"]
    report = {
        "model": name,
        "block_type": type(blocks[0]).__name__,
        "depth": len(blocks),
        "channels": widths[0] if len(widths) == 1 else widths,
        "params": params,
        "test_accuracy": (card or {}).get("test_accuracy"),
        "layers": numbers["rows"],
        "stability": numbers["stability"],
        "pde_residual": numbers["pde_residual"],
        "propagator": numbers["propagator"],
        "gated": {k: v for k, v in numbers["gated"].items() if k != "weights"},
        "figures": write_figures(numbers, blocks, out),
        "out_dir": str(out),
    }
    return _write(report, report_markdown(report), out)


def _analyze_continuous(model, name, card, out, image_index, data_dir):
    pairs = pde_fields_of(model)  # ValueError naming the missing protocol methods for odenet's ConvField
    numbers = continuous_numbers(model, pairs, image_index, data_dir)
    fields = [f for _, f in pairs]
    widths = sorted({int(f.channels) for f in fields})
    report = {
        "model": name,
        "kind": "continuous",
        "block_type": type(fields[0]).__name__,
        "depth": len(numbers["segments"]),
        "channels": widths[0] if len(widths) == 1 else widths,
        "params": int(model.count_params()),
        "test_accuracy": (card or {}).get("test_accuracy"),
        "solve": numbers["solve"],
        "segments": numbers["segments"],
        "stability": numbers["stability"],
        "figures": write_continuous_figures(numbers, pairs, out),
        "out_dir": str(out),
    }
    return _write(report, continuous_markdown(report), out)


def _write(report, markdown, out):
    """Write report.md and report.json (the report made JSON-safe) under `out`; returns the latter."""
    atomic_write_text(out / "report.md", markdown)
    report = jsonable(report)
    atomic_write_json(out / "report.json", report)
    return report
