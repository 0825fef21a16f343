"""The numbers of the physics report (thesis eq 21-38), computed and nothing else: per-block
stencils, PDE fits and von Neumann amplification, the stack's propagator beside its Gaussian
limits, the gated path sum of a real image against the Keras forward pass, and the stability
comparison of several models. `pde_zoo.analysis.plots` draws them, `.markdown` writes them up.
"""

import math

import numpy as np

from pde_zoo import physics
from pde_zoo.layers._stencil_math import expand_channel
from pde_zoo.layers.physics_protocol import is_coefficient_layer
from pde_zoo.loading import load_with_card

AMPLIFYING = 1.0 + 1e-9  # max|G| above this counts as an amplifying block (float noise allowed)
COEFFICIENT_LABELS = {"alpha": "α", "beta": "β", "sigma": "σ", "rho": "ρ", "gamma": "γ"}


def jsonable(obj):
    """NumPy and non-finite floats -> plain JSON (NaN/inf become None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj



def has_layer(model, name):
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True


def single_stack(model):
    """The model's one `StencilStack` (the thesis models' "blocks"), or None when it has none
    or several (stages) or is not a model."""
    from pde_zoo.layers import StencilStack

    stacks = [layer for layer in getattr(model, "layers", []) if isinstance(layer, StencilStack)]
    return stacks[0] if len(stacks) == 1 else None



def channel_stencils(block):
    """The per-channel stencils (3, 3, C) of a block: its own for a depthwise block, the
    diagonal K[:, :, c, c] (how channel c acts on itself) for a block that mixes channels."""
    if physics.mixes_channels(block):
        return np.einsum("rscc->rsc", physics.system_stencil(block))
    return expand_channel(physics.stencil(block), 2)



def layer_table(blocks):
    """Per block and channel: coefficients (PDE blocks), PDE fit and residual, max|G|, von Neumann.

    For a block that mixes channels the per-channel entries are those of its diagonal stencils
    K[:, :, c, c] and the block's "max_abs_G" is max_p ‖G(p)‖₂ of its matrix symbol.

    Returns:
        list of dicts, one per block: {"index", "name", "type", "mixes_channels", "max_abs_G"
        (over channels; the matrix norm for a mixing block), "channels": [{"channel", "fit",
        "residual", "max_abs_G", "coefficients"?, "von_neumann"?}]}.
    """
    rows = []
    for index, block in enumerate(blocks, start=1):
        mixing = physics.mixes_channels(block)
        k = channel_stencils(block)
        coefficients = {n: np.reshape(v, -1) for n, v in block.coefficients().items()} if is_coefficient_layer(block) else None
        channels = []
        for c in range(k.shape[-1]):
            fit, residual = physics.kernel_to_pde(k[..., c] - physics.IDENTITY)
            entry = {"channel": c, "fit": fit, "residual": residual, "max_abs_G": physics.max_amplification(k[..., c])}
            if coefficients is not None:
                values = {n: float(v[c]) for n, v in coefficients.items()}
                entry["coefficients"] = values
                entry["drift_scale"] = block.drift_scale
                entry["von_neumann"] = physics.von_neumann(**values, drift_scale=block.drift_scale)
            channels.append(entry)
        rows.append({
            "index": index, "name": block.name, "type": type(block).__name__, "mixes_channels": mixing,
            "max_abs_G": physics.max_amplification(block) if mixing else max(e["max_abs_G"] for e in channels),
            "channels": channels,
        })
    return rows



def gated_check(model, blocks_layer, image_index, data_dir):
    """Gated path sum of MNIST test image `image_index` at the centre pixel vs the Keras forward pass."""
    import keras

    from pde_zoo import data

    images, labels, _ = data.load_arrays("test", data_dir)
    image = images[image_index : image_index + 1].astype("float32") / 255.0
    psi0 = keras.ops.convert_to_numpy(keras.Model(model.input, blocks_layer.input)(image))
    out = keras.ops.convert_to_numpy(blocks_layer(psi0))[0]
    i, j = psi0.shape[1] // 2, psi0.shape[2] // 2
    gated = physics.gated_propagator(blocks_layer, psi0, i, j)
    keras_value = out[i, j]
    path_value = (gated.weights * gated.window).sum(axis=(0, 1)) + gated.bias
    return {
        "image_index": int(image_index), "label": int(labels[image_index]), "pixel": [i, j],
        "keras_value": np.ravel(keras_value), "path_sum_value": np.ravel(path_value),
        "max_abs_difference": float(np.max(np.abs(np.ravel(keras_value) - np.ravel(path_value)))),
        "open_gate_fraction": [float(m.mean()) for m in gated.masks],
        "weights": gated.weights,
    }



def model_numbers(model, blocks, image_index=0, data_dir=None):
    """Everything the report of `model` says about its residual `blocks`, before any figure
    or text: per-block rows (`layer_table`), the stability profile and its summary, the PDE
    residual, the channel widths, and for one single-channel stack at one resolution the
    propagator P with its Gaussian limits and the gated path sum of MNIST test image
    `image_index` (skipped, with the reason, otherwise or when MNIST is not available).

    Returns:
        dict with "rows", "profile", "widths", "stability", "pde_residual", "propagator",
        "gated", and "prop", "limit" (the propagator array and `physics.gaussian_limit`, None
        when skipped) for the figures.
    """
    from pde_zoo.data import DataNotFoundError

    rows = layer_table(blocks)
    profile = physics.amplification_profile(blocks)
    residuals = np.array([e["residual"] for r in rows for e in r["channels"]])
    per_channel = [channel_stencils(b) for b in blocks]
    residual_kernels = [k[..., c] - physics.IDENTITY for k in per_channel for c in range(k.shape[-1])]
    corners = sum(float((f[::2, ::2] ** 2).sum()) for f in residual_kernels)
    total = sum(float((f**2).sum()) for f in residual_kernels)
    numbers = {
        "rows": rows,
        "profile": profile,
        "widths": sorted({k.shape[-1] for k in per_channel}),
        "stability": {
            "max_abs_G": float(profile["layer_max"].max()),
            "n_amplifying": int((profile["layer_max"] > AMPLIFYING).sum()),
            "log10_bound": profile["log10_bound"],
            "log10_cumulative": profile["log10_cumulative"],
            "relative_max": profile["relative_max"],
            "max_relative_G": float(profile["relative_max"].max()),
            "n_excess": int((profile["relative_max"] > AMPLIFYING).sum()),
            "log10_relative_bound": profile["log10_relative_bound"],
        },
        "pde_residual": {"mean": float(residuals.mean()), "max": float(residuals.max()), "pooled": math.sqrt(corners / total) if total > 0 else 0.0},
        "prop": None,
        "limit": None,
    }
    # The propagator and path sums follow one channel through one stack at one resolution.
    stack = single_stack(model)
    if stack is not None and not any(r["mixes_channels"] for r in rows):
        stencils = [physics.channel_stencil(b, 0) for b in blocks]
        prop = physics.propagator(stencils)
        limit = physics.gaussian_limit(blocks, channel=0)
        measured = physics.stencil_moments(prop) if prop.sum() != 0 else None
        continuum = limit["continuum"] if np.all(np.diag(limit["continuum"]["cov"]) > 0) else None
        numbers["propagator"] = {"steps": len(blocks), "measured": measured, "discrete": limit["discrete"], "continuum": continuum}
        numbers["prop"], numbers["limit"] = prop, limit
        try:
            numbers["gated"] = gated_check(model, stack, image_index, data_dir)
        except DataNotFoundError as err:
            numbers["gated"] = {"skipped": f"MNIST not available ({err})"}
    else:
        reason = ("a layer, not a model: no input pipeline for the path sums" if model is None else
                  "the blocks span several stages (resolutions) or mix channels; the path sums follow one channel through one stack")
        numbers["propagator"], numbers["gated"] = {"skipped": reason}, {"skipped": reason}
    return numbers


def compare_stability(specs):
    """One row per model: is accuracy lost where blocks amplify?

    Args:
        specs: models (keras Model, pretrained name, .keras file or run directory); a model
            without blocks (mlp) gets a row with its accuracy and no stability numbers.

    Returns:
        list of dicts: model, block, depth, test_accuracy (card.json, else None), max_abs_G
        (largest per-block max_p |G|), log10_amplification (log10 Π_t max_p |G_t|),
        n_amplifying (blocks with max_p |G| > 1), max_relative_G (largest max_p |G| / |G(0)|,
        the growth beyond the uniform gain 1 + γ), log10_relative (its log10 product over
        depth), n_excess (blocks with max_p |G| / |G(0)| > 1).
    """
    table = []
    for spec in specs:
        model, name, card = load_with_card(spec)
        try:
            blocks = physics.blocks_of(model)
        except ValueError:  # no residual blocks (mlp, continuous models): a row with accuracy only
            blocks = []
        profile = physics.amplification_profile(blocks)
        table.append({
            "model": name,
            "block": type(blocks[0]).__name__ if blocks else None,
            "depth": len(blocks),
            "test_accuracy": (card or {}).get("test_accuracy"),
            "max_abs_G": float(profile["layer_max"].max()) if blocks else None,
            "log10_amplification": profile["log10_bound"],
            "n_amplifying": int((profile["layer_max"] > AMPLIFYING).sum()),
            "max_relative_G": float(profile["relative_max"].max()) if blocks else None,
            "log10_relative": profile["log10_relative_bound"],
            "n_excess": int((profile["relative_max"] > AMPLIFYING).sum()),
        })
    return table
