"""The figures of the physics report (PNG, written atomically): coefficients or PDE fits vs
depth, |G(p)| maps, the propagator against its Gaussian limits, stability per block, the
gated path sum. Each draws on a `pde_zoo.figures.blank_figure` (no pyplot, no global backend)."""

import numpy as np

from pde_zoo import physics
from pde_zoo.analysis.numerics import AMPLIFYING, COEFFICIENT_LABELS
from pde_zoo.figures import blank_figure
from pde_zoo.io_utils import atomic_savefig

MAP_LAYERS = 4  # |G| maps drawn for this many blocks, spread over depth


def write_figures(numbers, blocks, out):
    """Draw the report's figures of `numbers` (`numerics.model_numbers`) into directory `out`;
    returns their file names in report order (the propagator and gated path sum only when
    they were computed)."""
    rows, prop = numbers["rows"], numbers["prop"]
    figures = ["coefficients.png", "symbol_maps.png", "stability.png"]
    plot_coefficients(rows, out / "coefficients.png")
    plot_symbol_maps(blocks, out / "symbol_maps.png")
    plot_stability(rows, numbers["profile"], out / "stability.png")
    if prop is not None:
        plot_propagator(prop, numbers["limit"], out / "propagator.png")
        figures.insert(2, "propagator.png")
        if "skipped" not in numbers["gated"]:
            plot_gated(numbers["gated"], prop, out / "gated.png")
            figures.append("gated.png")
    return figures


def plot_coefficients(rows, path):
    fig = blank_figure(layout="constrained", figsize=(10, 4))
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


def plot_symbol_maps(blocks, path):
    picks = sorted(set(np.linspace(0, len(blocks) - 1, min(MAP_LAYERS, len(blocks))).round().astype(int).tolist()))
    fig = blank_figure(layout="constrained", figsize=(4.2 * len(picks), 3.5))
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


def plot_propagator(prop, limit, path):
    n = prop.shape[0] // 2
    d = np.arange(-n, n + 1)
    fig = blank_figure(layout="constrained", figsize=(12, 4))
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


def plot_stability(rows, profile, path):
    pde = "von_neumann" in rows[0]["channels"][0]
    fig = blank_figure(layout="constrained", figsize=(14 if pde else 9.5, 4))
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
        ax.add_patch(rectangle())
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


def rectangle():
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 1, 1, color="C2", alpha=0.2)


def plot_gated(gated, prop, path):
    fig = blank_figure(layout="constrained", figsize=(12, 3.8))
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


def write_continuous_figures(numbers, pairs, out):
    """The figures of a continuous PDE model's report (`continuous.continuous_numbers`):
    steps.png (step sizes and max_p |G_h| per step over time) and symbol_maps.png (|Π G_h(p)|
    of up to MAP_LAYERS segments). Returns their file names."""
    from pde_zoo.analysis.continuous import piece_operator
    from pde_zoo.layers.physics_protocol import symbol_of_taps
    from pde_zoo.physics import rk_stability

    segments = numbers["segments"]
    fig = blank_figure(layout="constrained", figsize=(11, 3.8))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for s in segments:
        t = np.asarray(s["step_times"])
        ax1.step(np.append(t, s["t1"]), np.append(s["step_sizes"], s["step_sizes"][-1:]), where="post", color="C0")
        ax2.plot(t + np.asarray(s["step_sizes"]) / 2, s["step_max_abs_G"], "o-", color="C3", ms=3)
        ax1.axvline(s["t0"], color="0.8", lw=0.5)
        ax2.axvline(s["t0"], color="0.8", lw=0.5)
    ax1.set_xlabel("t")
    ax1.set_title("accepted step sizes h")
    ax2.axhline(1.0, color="k", lw=0.8, ls="--")
    ax2.set_xlabel("t (step midpoint)")
    ax2.set_title("max_p |R(h λ_k(p))| per step")
    atomic_savefig(fig, out / "steps.png")
    fields = {b.name: f for b, f in pairs}
    blocks = {b.name: b for b, _ in pairs}
    picks = sorted(set(np.linspace(0, len(segments) - 1, min(MAP_LAYERS, len(segments))).round().astype(int).tolist()))
    fig = blank_figure(layout="constrained", figsize=(4.2 * len(picks), 3.5))
    p = np.linspace(-np.pi, np.pi, 129)
    py, px = np.meshgrid(p, p, indexing="ij")
    for n, k in enumerate(picks, start=1):
        s = segments[k]
        field, method = fields[s["ode_block"]], blocks[s["ode_block"]].method
        operator = piece_operator(field, s["piece"])[1][..., 0]
        lam = symbol_of_taps(operator, px, py)
        g = np.ones_like(lam)
        for h in s["step_sizes"]:
            g = g * rk_stability.step_amplification(method, h, lam)
        mag = np.abs(g)
        ax = fig.add_subplot(1, len(picks), n)
        im = ax.imshow(mag, origin="lower", extent=[-np.pi, np.pi, -np.pi, np.pi], cmap="viridis")
        if mag.min() < 1 < mag.max():
            ax.contour(p, p, mag, levels=[1.0], colors="w", linewidths=1)
        ax.set_title(f"|Π R(h λ(p))| segment {s['index']} ({s['n_steps']} steps)", fontsize=9)
        ax.set_xlabel("px")
        ax.set_ylabel("py")
        fig.colorbar(im, ax=ax, shrink=0.8)
    atomic_savefig(fig, out / "symbol_maps.png")
    return ["steps.png", "symbol_maps.png"]
