"""The physics report as text: report.md of one model and the stability table of several."""

import math

import numpy as np

from pde_zoo import physics
from pde_zoo.analysis.numerics import COEFFICIENT_LABELS


def fmt(x, digits=4):
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
            f"| {width} | {len(group)} | {fmt(float(np.median(c['alpha'] ** 2 / 2)))} | {fmt(float(np.median(c['sigma'] ** 2 / 2)))} | "
            f"{fmt(float(np.median(np.abs(s * c['beta']))))} | {fmt(float(np.median(np.abs(s * c['rho']))))} | "
            f"{fmt(float(np.median(c['gamma'])))} | {(diffusion >= DIFFUSION_ON).mean():.0%} | {(drift >= DRIFT_ON).mean():.0%} |"
        )
    return lines + [""]


def report_markdown(report):
    rows = report["layers"]
    pde = "coefficients" in rows[0]["channels"][0]
    lines = [
        f"# Physics report: {report['model']}",
        "",
        f"{report['depth']} blocks of type {report['block_type']}, "
        + (f"{report['channels']} channel(s), " if not isinstance(report["channels"], list) else f"{'/'.join(map(str, report['channels']))} channels (by stage), ")
        + f"{report['params']} parameters; test accuracy {fmt(report['test_accuracy'])} (from card.json, if any).",
        "",
        "Conventions: pre-activation[i, j] = Σ K[dy+1, dx+1] ψ[i+dy, j+dx] (cross-correlation), x = column, "
        "y = row, Δt = Δx = Δy = 1, zero padding. G(p) = Σ K[dy+1, dx+1] e^{i(px dx + py dy)} is the symbol of a "
        "block (H = G - 1, thesis eq 29-34); max_p |G| ≤ 1 is von Neumann stability.",
        "",
        "## Summary",
        "",
        f"- largest max_p |G| over blocks: {fmt(report['stability']['max_abs_G'])}",
        f"- blocks with max_p |G| > 1 (amplifying): {report['stability']['n_amplifying']} of {report['depth']}",
        f"- log10 of Π_t max_p |G_t| (an ℓ² Lipschitz bound of the whole stack, ReLU included): "
        f"{fmt(report['stability']['log10_bound'])}",
        f"- relative to the mean mode, max_p |G| / |G(0)| = max|G| / |1+γ| (growth of patterns beyond the uniform gain): "
        f"largest {fmt(report['stability']['max_relative_G'], 7)}, blocks > 1: {report['stability']['n_excess']}, "
        f"log10 of the product {fmt(report['stability']['log10_relative_bound'])}",
        f"- PDE residual ||f - fit|| / ||f|| per block: mean {fmt(report['pde_residual']['mean'])}, "
        f"max {fmt(report['pde_residual']['max'])}, pooled over depth and channels {fmt(report['pde_residual']['pooled'])}",
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
            lines.append(f"| {r['index']} | {r['name']} | {len(r['channels'])} | {fmt(r['max_abs_G'])} | {fmt(rel, 7)} |")
        lines.append("")
    if pde:
        lines += _coefficient_summary(rows)
    if pde:
        lines += ["| block | ch | α | β | σ | ρ | γ | max|G| | (α²+σ²)/(1+γ) | ((sβ)²/α²+(sρ)²/σ²)/(1+γ) | max|G| = 1+γ |", "|" + "---|" * 11]
        for r in rows:
            for e in r["channels"]:
                c, vn = e["coefficients"], e["von_neumann"]
                lines.append(
                    f"| {r['index']} | {e['channel']} | " + " | ".join(fmt(c[n]) for n in COEFFICIENT_LABELS)
                    + f" | {fmt(e['max_abs_G'])} | {fmt(vn['diffusion_number'])} | {fmt(vn['drift_number'])} | {fmt(vn['zero_mode_dominates'])} |"
                )
    else:
        lines += ["| block | ch | Dxx | Dx | Dyy | Dy | I | residual | max|G| |", "|" + "---|" * 9]
        for r in rows:
            for e in r["channels"]:
                lines.append(
                    f"| {r['index']} | {e['channel']} | " + " | ".join(fmt(e["fit"][n]) for n in physics.PDE_TERMS)
                    + f" | {fmt(e['residual'])} | {fmt(e['max_abs_G'])} |"
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
        for key, label in [("measured", "P (numerical)"), ("discrete", "exact cumulant sums"), ("continuum", "thesis continuum (eq 35-38)")]:
            m = prop[key]
            if m is None:
                lines.append(f"| {label} | – | – | – | – | – | – |")
                continue
            lines.append(
                f"| {label} | {fmt(m['mass'])} | {fmt(m['mean'][0])} | {fmt(m['mean'][1])} | {fmt(m['cov'][0][0])} | "
                f"{fmt(m['cov'][1][1])} | {fmt(m['cov'][0][1])} |"
            )
    gated = report["gated"]
    lines += ["", "## Path sum with ReLU gates on a real image (eq 26-27)", ""]
    if "skipped" in gated:
        lines.append(f"Skipped: {gated['skipped']}")
    else:
        lines += [
            f"MNIST test image {gated['image_index']} (label {gated['label']}), output pixel {tuple(gated['pixel'])}: "
            f"Keras forward pass {fmt(gated['keras_value'][0], 8)}, gated path sum {fmt(gated['path_sum_value'][0], 8)}, "
            f"max |difference| {fmt(gated['max_abs_difference'], 3)}. Open gates per block: "
            + ", ".join(f"{v:.2f}" for v in gated["open_gate_fraction"]) + ".",
        ]
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in report["figures"]] + [""]
    return "\n".join(lines)


def stability_markdown(table):
    """`compare_stability` rows as a markdown table."""
    keys = ["model", "block", "depth", "test_accuracy", "max_abs_G", "log10_amplification", "n_amplifying", "max_relative_G", "log10_relative", "n_excess"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(row[k], 7 if k == "max_relative_G" else 4) for k in keys) + " |" for row in table]
    return "\n".join(lines) + "\n"


def continuous_markdown(report):
    """report.md of a continuous PDE model (`pde_zoo.analysis.continuous`): one row per time segment."""
    st, solve = report["stability"], report["solve"]
    lines = [
        f"# Physics report: {report['model']}",
        "",
        f"Continuous depth: {report['depth']} time segment(s) of {report['block_type']} integrated by "
        + ", ".join(f"{s['ode_block']} ({s['method']}, rtol {fmt(s['rtol'])}, atol {fmt(s['atol'])}"
                    + (f", step {fmt(s['step_size'])}" if s["step_size"] is not None else "") + f", t in [{fmt(s['t0'])}, {fmt(s['t1'])}])"
                    for s in solve["solves"])
        + f"; {report['channels']} channel(s), {report['params']} parameters; test accuracy {fmt(report['test_accuracy'])} "
        "(from card.json, if any).",
        "",
        "Conventions: the field's linear part on piece k is L_k ψ = α²/2 Dxx ψ + s β Dx ψ + σ²/2 Dyy ψ + s ρ Dy ψ + γ ψ "
        "(cross-correlation stencils, x = column, y = row, Δx = Δy = 1, zero padding) with symbol "
        "λ_k(p) = γ - 2α² sin²(px/2) - 2σ² sin²(py/2) + i s (β sin px + ρ sin py). One explicit Runge–Kutta step of "
        "size h multiplies the mode p by G_h(p) = R(h λ_k(p)), R(z) = 1 + z bᵀ(I - zA)⁻¹1 the method's stability "
        "polynomial (pde_zoo.physics.rk_stability); max_p |G_h| ≤ 1 is von Neumann stability of the step. For the "
        "ReLU field f = relu(ψ + Lψ) - ψ these are the numbers of its linear part (all gates open).",
        "",
        f"Step sizes: the solver's accepted steps on {solve['image']}"
        + (f" (label {solve['label']})" if solve.get("label") is not None else "") + ", recorded by pde_zoo.ode.solve_steps; "
        + "; ".join(
            f"{s['ode_block']}: {s['recorded']['steps']} steps, {s['recorded']['rejected']} rejected, {s['recorded']['nfe']} "
            f"evaluations (the ODEBlock's own solve: {s['ode_block_stats']}, "
            f"{'equal' if s['counts_equal'] else 'NOT equal' if s['counts_equal'] is not None else 'not known'}; "
            f"max |state difference| {fmt(s['max_abs_state_difference'], 3)})"
            for s in solve["solves"]
        ) + ".",
        "",
        "## Summary",
        "",
        f"- largest max_p |G_h(p)| over all steps: {fmt(st['max_abs_G'])} "
        f"({st['n_amplifying_steps']} of {st['n_steps']} steps amplify, in {st['n_amplifying']} of {st['n_segments']} segments)",
        f"- log10 of Π over all steps of max_p |G_h| (an ℓ² bound of the linearised solve): {fmt(st['log10_bound'])}",
        f"- log10 of Π over segments of max_p |Π_steps G_h(p)| (the solve's own amplification): {fmt(st['log10_composite'])}; "
        f"exact flow, Σ_k T_k max_p Re λ_k / ln 10: {fmt(st['log10_exact'])}",
        f"- relative to the mean mode, max_p |Π G_h(p)| / |Π G_h(0)| per segment: largest {fmt(st['max_relative_G'], 7)}, "
        f"segments > 1: {st['n_excess']}, log10 of the product {fmt(st['log10_relative_bound'])}",
        f"- the same pieces as discrete thesis blocks (one Euler step of Δt = 1): largest max_p |1 + λ_k(p)| "
        f"{fmt(st['max_euler_block_G'])}",
        "",
        "## Segments",
        "",
        "| segment | t | ch | α | β | σ | ρ | γ | steps | h min | h max | max_p |G_h| | log10 Π max|G_h| | "
        "log10 max|Π G_h| | log10 exact | max|Π G_h| / |Π G_h(0)| | Euler block max|G| |",
        "|" + "---|" * 17,
    ]
    for s in report["segments"]:
        for e in s["channels"]:
            c = e["coefficients"]
            lines.append(
                f"| {s['index']} | [{fmt(s['t0'])}, {fmt(s['t1'])}] | {e['channel']} | "
                + " | ".join(fmt(c[n]) for n in COEFFICIENT_LABELS)
                + f" | {s['n_steps']} | {fmt(s['h_min'])} | {fmt(s['h_max'])} | {fmt(e['max_abs_G'], 6)} | {fmt(e['log10_product'])} | "
                f"{fmt(e['log10_composite'])} | {fmt(e['log10_exact'])} | {fmt(e['relative_max'], 7)} | {fmt(e['euler_block_max_abs_G'])} |"
            )
    lines += ["", "## Steps", "", "| segment | step | t | h | max_p |G_h(p)| |", "|---|---|---|---|---|"]
    for s in report["segments"]:
        for j, (t, h, g) in enumerate(zip(s["step_times"], s["step_sizes"], s["step_max_abs_G"]), start=1):
            lines.append(f"| {s['index']} | {j} | {fmt(t)} | {fmt(h)} | {fmt(g, 6)} |")
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in report["figures"]] + [""]
    return "\n".join(lines)
