"""`pde-zoo analyze`: the chapter-III physics report of a model (thesis eq 21-38).

For every block: its stencil K, the PDE it discretises (`physics.kernel_to_pde`, exact for PDE
blocks, a projection with a residual for c_ResNet), the von Neumann amplification
max_p |G(p)|; for the stack: the propagator P (the path sum with ReLU removed) beside its
Gaussian limits, the product of per-block amplifications (a Lipschitz bound of the whole
stack), and the path sum with the ReLU gates of a real MNIST test image checked against the
Keras forward pass. Files: report.md, report.json and PNG figures, each written atomically.

Staged multi-channel models (pdenet, convresnet: one stack of blocks per resolution, blocks
that mix channels) get the per-block and per-channel part: for a mixing block max_p |G(p)| is
the spectral norm of its C x C matrix symbol (`physics.system_symbol`), and the per-channel
rows are its diagonal stencils (for `PDESystemBlock` the channel's PDE, γ = Γ_cc); the
propagator and path sums, defined for one stack at one resolution, are skipped.
"""

import json
import math
from pathlib import Path

import numpy as np

from pde_zoo import physics
from pde_zoo.io_utils import atomic_savefig, atomic_write_json, atomic_write_text

AMPLIFYING = 1.0 + 1e-9  # max|G| above this counts as an amplifying block (float noise allowed)
MAP_LAYERS = 4  # |G| maps drawn for this many blocks, spread over depth
COEFFICIENT_LABELS = {"alpha": "α", "beta": "β", "sigma": "σ", "rho": "ρ", "gamma": "γ"}


def _spec_name(spec):
    path = Path(str(spec))
    if path.suffix == ".keras":
        return path.parent.name if path.stem == "model" else path.stem
    if path.is_dir():
        return path.resolve().name
    return str(spec)


def _card(spec):
    """card.json of a pretrained name, a run directory or a .keras file beside one; else None."""
    from pde_zoo import loading

    path = Path(str(spec))
    if path.is_dir():
        candidate = path / "card.json"
    elif path.is_file():
        candidate = path.parent / "card.json"
    elif str(spec) in loading.list_pretrained():
        return loading.pretrained_card(str(spec))
    else:
        return None
    return json.loads(candidate.read_text()) if candidate.is_file() else None


def load_model(model_or_spec):
    """(model, name, card) from a keras Model, a pretrained name, a .keras file or a run directory."""
    if hasattr(model_or_spec, "get_layer"):
        return model_or_spec, model_or_spec.name, None
    from pde_zoo import load

    return load(str(model_or_spec), compile=False), _spec_name(model_or_spec), _card(model_or_spec)


def _is_pde(block):
    return hasattr(block, "coefficients") and hasattr(block, "drift_scale")


def _jsonable(obj):
    """NumPy and non-finite floats -> plain JSON (NaN/inf become None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _has_layer(model, name):
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True


def _figure(**kwargs):
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    return Figure(layout="constrained", **kwargs)


def channel_stencils(block):
    """The per-channel stencils (3, 3, C) of a block: its own for a depthwise block, the
    diagonal K[:, :, c, c] (how channel c acts on itself) for a block that mixes channels."""
    if physics.mixes_channels(block):
        return np.einsum("rscc->rsc", physics.system_stencil(block))
    k = physics.stencil(block)
    return k[..., None] if k.ndim == 2 else k


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
        coefficients = {n: np.reshape(v, -1) for n, v in block.coefficients().items()} if _is_pde(block) else None
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


def _gated_check(model, blocks_layer, image_index, data_dir):
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


def _plot_coefficients(rows, path):
    fig = _figure(figsize=(10, 4))
    depth = [r["index"] for r in rows]
    pde = "coefficients" in rows[0]["channels"][0]
    ax = fig.add_subplot(1, 2, 1)
    names = list(COEFFICIENT_LABELS) if pde else list(physics.PDE_TERMS)
    for name in names:
        for c in range(len(rows[0]["channels"])):
            values = [r["channels"][c]["coefficients" if pde else "fit"][name] for r in rows]
            label = (COEFFICIENT_LABELS[name] if pde else name) if c == 0 else None
            ax.plot(depth, values, marker=".", lw=1 if c == 0 else 0.5, label=label, color=f"C{names.index(name)}")
    ax.set_xlabel("block")
    ax.set_title("PDE coefficients vs depth" if pde else "kernel_to_pde fit vs depth")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    for c in range(len(rows[0]["channels"])):
        ax.plot(depth, [r["channels"][c]["residual"] for r in rows], marker="o", label=f"channel {c}" if c == 0 else None)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("block")
    ax.set_title("relative residual ||f - PDE fit|| / ||f||")
    atomic_savefig(fig, path)


def _plot_symbol_maps(blocks, path):
    picks = sorted(set(np.linspace(0, len(blocks) - 1, min(MAP_LAYERS, len(blocks))).round().astype(int).tolist()))
    fig = _figure(figsize=(4.2 * len(picks), 3.5))
    for n, t in enumerate(picks, start=1):
        mixing = physics.mixes_channels(blocks[t])
        target = blocks[t] if mixing else physics.channel_stencil(blocks[t], 0)
        p, mag = physics.amplification_map(target, 65 if mixing else 129)
        ax = fig.add_subplot(1, len(picks), n)
        im = ax.imshow(mag, origin="lower", extent=[-np.pi, np.pi, -np.pi, np.pi], cmap="viridis")
        if mag.min() < 1 < mag.max():
            ax.contour(p, p, mag, levels=[1.0], colors="w", linewidths=1)
        label = "‖G(p)‖₂" if mixing else "|G(p)|"
        ax.set_title(f"{label} block {t + 1} (max {physics.max_amplification(target):.3f})", fontsize=9)
        ax.set_xlabel("px")
        ax.set_ylabel("py")
        fig.colorbar(im, ax=ax, shrink=0.8)
    atomic_savefig(fig, path)


def _plot_propagator(prop, limit, path):
    n = prop.shape[0] // 2
    d = np.arange(-n, n + 1)
    fig = _figure(figsize=(12, 4))
    ax = fig.add_subplot(1, 3, 1)
    with np.errstate(divide="ignore"):
        im = ax.imshow(np.log10(np.abs(prop)), origin="upper", extent=[-n - 0.5, n + 0.5, n + 0.5, -n - 0.5], cmap="magma")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(f"log10 |P| of {n} blocks")
    ax.set_xlabel("dx (column offset)")
    ax.set_ylabel("dy (row offset)")
    mass = prop.sum()
    fine = np.linspace(-n, n, 400)
    for panel, (axis, label) in enumerate([(0, "x"), (1, "y")], start=2):
        ax = fig.add_subplot(1, 3, panel)
        marginal = prop.sum(axis=axis) / mass if mass != 0 else prop.sum(axis=axis)
        ax.semilogy(d[marginal >= 0], marginal[marginal >= 0], "o", ms=4, label="P marginal / mass")
        if (marginal < 0).any():
            ax.semilogy(d[marginal < 0], -marginal[marginal < 0], "o", ms=4, mfc="none", label="-(P marginal) / mass, < 0")
        k = 1 if label == "x" else 0
        for key, style, name in [("discrete", "-", "Gaussian, exact cumulants"), ("continuum", "--", "exp(-S), thesis eq 36-38")]:
            mean, var = limit[key]["mean"][k], limit[key]["cov"][k, k]
            if var > 1e-6:
                ax.semilogy(fine, np.exp(-((fine - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var), style, label=f"{name} (var {var:.3g})")
            else:
                ax.plot([], [], style, label=f"{name}: var {var:.3g}, no Gaussian")
        values = np.abs(marginal)[np.abs(marginal) > 0]
        if values.size:
            ax.set_ylim(max(values.min(), 1e-12) / 2, 2 * values.max())
        ax.set_xlabel(f"d{label}")
        ax.set_title(f"propagator along {label}")
        ax.legend(fontsize=7, loc="lower center")
    atomic_savefig(fig, path)


def _plot_stability(rows, profile, path):
    pde = "von_neumann" in rows[0]["channels"][0]
    fig = _figure(figsize=(14 if pde else 9.5, 4))
    cols = 3 if pde else 2
    depth = np.array([r["index"] for r in rows])
    ax = fig.add_subplot(1, cols, 1)
    gmax = profile["layer_max"]
    ax.plot(depth, gmax, "-", color="0.6", label="max_p |G| (red: > 1)")
    ax.scatter(depth, gmax, c=np.where(gmax > AMPLIFYING, "C3", "C0"), zorder=3)
    ax.plot(depth, profile["relative_max"], "s--", ms=3, color="C1", label="max_p |G| / |G(0)|")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("block")
    ax.legend(fontsize=7)
    ax.set_title("von Neumann amplification per block")
    ax = fig.add_subplot(1, cols, 2)
    ax.plot(depth, profile["log10_cumulative"], marker=".", label="Π max|G|")
    ax.plot(depth, np.cumsum(np.log10(profile["relative_max"])), "--", color="C1", label="Π max|G| / |G(0)|")
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    ax.set_xlabel("block")
    ax.set_title("log10 prod max|G| (Lipschitz bound)")
    if pde:
        ax = fig.add_subplot(1, cols, 3)
        ax.add_patch(_rectangle())
        clip = 4.0
        xs, ys, cs = [], [], []
        for r in rows:
            for e in r["channels"]:
                vn = e["von_neumann"]
                if vn["diffusion_number"] is None:
                    continue
                xs.append(min(vn["diffusion_number"], clip))
                ys.append(min(vn["drift_number"], clip))
                cs.append(e["max_abs_G"])
        if xs:
            sc = ax.scatter(xs, ys, c=cs, cmap="coolwarm", vmin=min(min(cs), 0.9), vmax=max(max(cs), 1.1), edgecolor="k", zorder=3)
            fig.colorbar(sc, ax=ax, shrink=0.8, label="max |G|")
        ax.set_xlim(0, clip * 1.05)
        ax.set_ylim(0, clip * 1.05)
        ax.set_xlabel("(α² + σ²) / (1 + γ)")
        ax.set_ylabel("((sβ)²/α² + (sρ)²/σ²) / (1 + γ)")
        ax.set_title("stability region: max|G| = 1+γ inside (values clipped at 4)", fontsize=9)
    atomic_savefig(fig, path)


def _rectangle():
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 1, 1, color="C2", alpha=0.2)


def _plot_gated(gated, prop, path):
    fig = _figure(figsize=(12, 3.8))
    n = prop.shape[0] // 2
    extent = [-n - 0.5, n + 0.5, n + 0.5, -n - 0.5]
    weights = gated["weights"] if gated["weights"].ndim == 2 else gated["weights"][..., 0]
    for panel, (values, title) in enumerate([(weights, "gated weights (ReLU masks of the image)"), (prop, "propagator (ReLU removed)")], start=1):
        ax = fig.add_subplot(1, 3, panel)
        with np.errstate(divide="ignore"):
            im = ax.imshow(np.log10(np.abs(values)), extent=extent, cmap="magma")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(f"log10 | {title} |", fontsize=9)
    ax = fig.add_subplot(1, 3, 3)
    ax.plot(np.arange(1, len(gated["open_gate_fraction"]) + 1), gated["open_gate_fraction"], marker=".")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("block")
    ax.set_title(f"open ReLU gates, MNIST test image {gated['image_index']}", fontsize=9)
    atomic_savefig(fig, path)


def _fmt(x, digits=4):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


DIFFUSION_ON = 0.01  # α²/2 + σ²/2 at least this: the channel diffuses (coefficient summary)
DRIFT_ON = 0.01  # |sβ| + |sρ| at least this: the channel drifts


def _coefficient_summary(rows):
    """Markdown lines: per width (stage), medians of the learned PDE terms and the share of
    channels with diffusion / drift switched on (thresholds DIFFUSION_ON, DRIFT_ON)."""
    groups = {}
    for r in rows:
        groups.setdefault(len(r["channels"]), []).append(r)
    lines = [
        f"What the blocks learned, per width: medians over blocks and channels; 'diffusing' = α²/2 + σ²/2 ≥ "
        f"{DIFFUSION_ON}, 'drifting' = |sβ| + |sρ| ≥ {DRIFT_ON} (s = drift scale).",
        "",
        "| channels | blocks | median α²/2 | median σ²/2 | median |sβ| | median |sρ| | median γ | diffusing | drifting |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for width, group in sorted(groups.items()):
        entries = [(e["coefficients"], e.get("drift_scale", 1.0)) for r in group for e in r["channels"]]
        c = {n: np.array([v[n] for v, _ in entries]) for n in COEFFICIENT_LABELS}
        s = np.array([d for _, d in entries])
        diffusion = c["alpha"] ** 2 / 2 + c["sigma"] ** 2 / 2
        drift = np.abs(s * c["beta"]) + np.abs(s * c["rho"])
        lines.append(
            f"| {width} | {len(group)} | {_fmt(float(np.median(c['alpha'] ** 2 / 2)))} | {_fmt(float(np.median(c['sigma'] ** 2 / 2)))} | "
            f"{_fmt(float(np.median(np.abs(s * c['beta']))))} | {_fmt(float(np.median(np.abs(s * c['rho']))))} | "
            f"{_fmt(float(np.median(c['gamma'])))} | {(diffusion >= DIFFUSION_ON).mean():.0%} | {(drift >= DRIFT_ON).mean():.0%} |"
        )
    return lines + [""]


def _markdown(report):
    rows = report["layers"]
    pde = "coefficients" in rows[0]["channels"][0]
    lines = [
        f"# Physics report: {report['model']}",
        "",
        f"{report['depth']} blocks of type {report['block_type']}, "
        + (f"{report['channels']} channel(s), " if not isinstance(report["channels"], list) else f"{'/'.join(map(str, report['channels']))} channels (by stage), ")
        + f"{report['params']} parameters; test accuracy {_fmt(report['test_accuracy'])} (from card.json, if any).",
        "",
        "Conventions: pre-activation[i, j] = Σ K[dy+1, dx+1] ψ[i+dy, j+dx] (cross-correlation), x = column, "
        "y = row, Δt = Δx = Δy = 1, zero padding. G(p) = Σ K[dy+1, dx+1] e^{i(px dx + py dy)} is the symbol of a "
        "block (H = G - 1, thesis eq 29-34); max_p |G| ≤ 1 is von Neumann stability.",
        "",
        "## Summary",
        "",
        f"- largest max_p |G| over blocks: {_fmt(report['stability']['max_abs_G'])}",
        f"- blocks with max_p |G| > 1 (amplifying): {report['stability']['n_amplifying']} of {report['depth']}",
        f"- log10 of Π_t max_p |G_t| (an ℓ² Lipschitz bound of the whole stack, ReLU included): "
        f"{_fmt(report['stability']['log10_bound'])}",
        f"- relative to the mean mode, max_p |G| / |G(0)| = max|G| / |1+γ| (growth of patterns beyond the uniform gain): "
        f"largest {_fmt(report['stability']['max_relative_G'], 7)}, blocks > 1: {report['stability']['n_excess']}, "
        f"log10 of the product {_fmt(report['stability']['log10_relative_bound'])}",
        f"- PDE residual ||f - fit|| / ||f|| per block: mean {_fmt(report['pde_residual']['mean'])}, "
        f"max {_fmt(report['pde_residual']['max'])}, pooled over depth and channels {_fmt(report['pde_residual']['pooled'])}",
        "",
        "## Blocks",
        "",
    ]
    if any(r["mixes_channels"] for r in rows):
        lines += [
            "Blocks that mix channels: max_p ‖G(p)‖₂ is the spectral norm of the C x C matrix symbol (the ℓ² norm of "
            "the step); the per-channel rows further down are the diagonal stencils (channel c on itself; γ = Γ_cc).",
            "",
            "| block | name | channels | max_p ‖G(p)‖₂ | max_p ‖G(p)‖₂ / ‖G(0)‖₂ |",
            "|---|---|---|---|---|",
        ]
        relative = report["stability"]["relative_max"]
        for r, rel in zip(rows, relative):
            lines.append(f"| {r['index']} | {r['name']} | {len(r['channels'])} | {_fmt(r['max_abs_G'])} | {_fmt(rel, 7)} |")
        lines.append("")
    if pde:
        lines += _coefficient_summary(rows)
    if pde:
        lines += ["| block | ch | α | β | σ | ρ | γ | max|G| | (α²+σ²)/(1+γ) | ((sβ)²/α²+(sρ)²/σ²)/(1+γ) | max|G| = 1+γ |", "|" + "---|" * 11]
        for r in rows:
            for e in r["channels"]:
                c, vn = e["coefficients"], e["von_neumann"]
                lines.append(
                    f"| {r['index']} | {e['channel']} | " + " | ".join(_fmt(c[n]) for n in COEFFICIENT_LABELS)
                    + f" | {_fmt(e['max_abs_G'])} | {_fmt(vn['diffusion_number'])} | {_fmt(vn['drift_number'])} | {_fmt(vn['zero_mode_dominates'])} |"
                )
    else:
        lines += ["| block | ch | Dxx | Dx | Dyy | Dy | I | residual | max|G| |", "|" + "---|" * 9]
        for r in rows:
            for e in r["channels"]:
                lines.append(
                    f"| {r['index']} | {e['channel']} | " + " | ".join(_fmt(e["fit"][n]) for n in physics.PDE_TERMS)
                    + f" | {_fmt(e['residual'])} | {_fmt(e['max_abs_G'])} |"
                )
    prop = report["propagator"]
    lines += ["", "## Propagator and its Gaussian limit (channel 0)", ""]
    if "skipped" in prop:
        lines.append(f"Skipped: {prop['skipped']}.")
    else:
        lines += [
            "P[N+dy, N+dx] = ∂ψ_N[i,j]/∂ψ_0[i+dy, j+dx] with ReLU removed: the path sum of eq 33. Moments of the "
            "normalised P (mean offset d: features move by -d):",
            "",
            "| | mass | mean dy | mean dx | var y | var x | cov xy |",
            "|---|---|---|---|---|---|---|",
        ]
    for key, label in [] if "skipped" in prop else [("measured", "P (numerical)"), ("discrete", "exact cumulant sums"), ("continuum", "thesis continuum (eq 35-38)")]:
        m = prop[key]
        if m is None:
            lines.append(f"| {label} | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {label} | {_fmt(m['mass'])} | {_fmt(m['mean'][0])} | {_fmt(m['mean'][1])} | {_fmt(m['cov'][0][0])} | "
            f"{_fmt(m['cov'][1][1])} | {_fmt(m['cov'][0][1])} |"
        )
    gated = report["gated"]
    lines += ["", "## Path sum with ReLU gates on a real image (eq 26-27)", ""]
    if "skipped" in gated:
        lines.append(f"Skipped: {gated['skipped']}")
    else:
        lines += [
            f"MNIST test image {gated['image_index']} (label {gated['label']}), output pixel {tuple(gated['pixel'])}: "
            f"Keras forward pass {_fmt(gated['keras_value'][0], 8)}, gated path sum {_fmt(gated['path_sum_value'][0], 8)}, "
            f"max |difference| {_fmt(gated['max_abs_difference'], 3)}. Open gates per block: "
            + ", ".join(f"{v:.2f}" for v in gated["open_gate_fraction"]) + ".",
        ]
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in report["figures"]] + [""]
    return "\n".join(lines)


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
    from pde_zoo.data import DataNotFoundError

    model, name, card = load_model(model_or_spec)
    blocks = physics.blocks_of(model)
    if not blocks:
        raise ValueError(f"Model {name!r} has no residual blocks to analyse.")
    out = Path(out_dir) if out_dir is not None else Path("reports") / name
    rows = layer_table(blocks)
    profile = physics.amplification_profile(blocks)
    residuals = np.array([e["residual"] for r in rows for e in r["channels"]])
    per_channel = [channel_stencils(b) for b in blocks]
    residual_kernels = [k[..., c] - physics.IDENTITY for k in per_channel for c in range(k.shape[-1])]
    corners = sum(float((f[::2, ::2] ** 2).sum()) for f in residual_kernels)
    total = sum(float((f**2).sum()) for f in residual_kernels)
    widths = sorted({k.shape[-1] for k in per_channel})
    # The propagator and path sums follow one channel through one stack at one resolution.
    single_stack = _has_layer(model, "blocks") and not any(r["mixes_channels"] for r in rows)
    figures = ["coefficients.png", "symbol_maps.png", "stability.png"]
    _plot_coefficients(rows, out / "coefficients.png")
    _plot_symbol_maps(blocks, out / "symbol_maps.png")
    _plot_stability(rows, profile, out / "stability.png")
    if single_stack:
        stencils = [physics.channel_stencil(b, 0) for b in blocks]
        prop = physics.propagator(stencils)
        limit = physics.gaussian_limit(blocks, channel=0)
        measured = physics.stencil_moments(prop) if prop.sum() != 0 else None
        continuum = limit["continuum"] if np.all(np.diag(limit["continuum"]["cov"]) > 0) else None
        propagator = {"steps": len(blocks), "measured": measured, "discrete": limit["discrete"], "continuum": continuum}
        try:
            gated = _gated_check(model, model.get_layer("blocks"), image_index, data_dir)
        except DataNotFoundError as err:
            gated = {"skipped": f"MNIST not available ({err})"}
        _plot_propagator(prop, limit, out / "propagator.png")
        figures.insert(2, "propagator.png")
        if "skipped" not in gated:
            _plot_gated(gated, prop, out / "gated.png")
            figures.append("gated.png")
    else:
        reason = "the blocks span several stages (resolutions) or mix channels; the path sums follow one channel through one stack"
        propagator, gated = {"skipped": reason}, {"skipped": reason}
    report = {
        "model": name,
        "block_type": type(blocks[0]).__name__,
        "depth": len(blocks),
        "channels": widths[0] if len(widths) == 1 else widths,
        "params": int(model.count_params()),
        "test_accuracy": (card or {}).get("test_accuracy"),
        "layers": rows,
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
        "propagator": propagator,
        "gated": {k: v for k, v in gated.items() if k != "weights"},
        "figures": figures,
        "out_dir": str(out),
    }
    atomic_write_text(out / "report.md", _markdown(report))
    report = _jsonable(report)
    atomic_write_json(out / "report.json", report)
    return report


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
        model, name, card = load_model(spec)
        try:
            blocks = physics.blocks_of(model)
        except ValueError:  # no residual blocks (mlp): a row with accuracy only
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


def stability_markdown(table):
    """`compare_stability` rows as a markdown table."""
    keys = ["model", "block", "depth", "test_accuracy", "max_abs_G", "log10_amplification", "n_amplifying", "max_relative_G", "log10_relative", "n_excess"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(row[k], 7 if k == "max_relative_G" else 4) for k in keys) + " |" for row in table]
    return "\n".join(lines) + "\n"


def run_analyze(args):
    """Handler of `pde-zoo analyze`: one report per spec; with several specs also stability.{md,json}."""
    several = len(args.spec) > 1
    root = Path(args.out) if args.out else Path("reports")
    for spec in args.spec:
        target = root / _spec_name(spec) if several or not args.out else root
        report = analyze(spec, target, image_index=args.image, data_dir=args.data_dir)
        print(f"{report['model']}: {target / 'report.md'} (max|G| {report['stability']['max_abs_G']:.4g}, "
              f"{report['stability']['n_amplifying']} amplifying blocks)")
    if several:
        table = compare_stability(args.spec)
        atomic_write_json(root / "stability.json", _jsonable(table))
        atomic_write_text(root / "stability.md", stability_markdown(table))
        print(stability_markdown(table), end="")


def add_parser(subparsers):
    """Register `pde-zoo analyze SPEC [SPEC ...] [--out DIR] [--image K] [--data-dir DIR]`."""
    p = subparsers.add_parser("analyze", help="physics report (stencils, symbols, propagator, stability) of trained models")
    p.add_argument("spec", nargs="+", help="pretrained name (pde1-50), .keras file or run directory; several: also a stability table")
    p.add_argument("--out", default=None, help="report directory (default reports/NAME; with several specs OUT/NAME and OUT/stability.md)")
    p.add_argument("--image", type=int, default=0, help="MNIST test image of the gated path-sum check (default 0)")
    p.add_argument("--data-dir", default=None, help="directory of MNIST-format IDX files (see `pde-zoo data`)")
    p.set_defaults(func=run_analyze)
    return p
