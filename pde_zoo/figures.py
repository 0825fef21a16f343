"""Figures of the thesis experiment from real runs (matplotlib, PNG): accuracy vs epoch per
depth (thesis Fig 4.3/4.4), final accuracy vs depth beside the thesis numbers, and the evolution
of one test image through the blocks of a trained model (Fig 4.5).

Figures are `matplotlib.figure.Figure` objects written straight to PNG (Agg): no pyplot, no
global backend, nothing set at import.
"""

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pde_zoo.history import read_history
from pde_zoo.io_utils import atomic_savefig
from pde_zoo.registry import run_name
from pde_zoo.results import THESIS, collect

FAMILIES = ("pde1", "pde2", "resnet")
LABELS = {"pde1": "PDE1 (eq 39)", "pde2": "PDE2 (eq 40)", "resnet": "c_ResNet", "mlp": "head only (mlp)"}


def blank_figure(figsize=None, layout=None):
    """A `matplotlib.figure.Figure` without pyplot: no global state holds it (garbage-collected
    when dropped), no backend is chosen, and Agg draws it when it is saved as PNG."""
    return Figure(figsize=figsize, layout=layout)


def new_figure(nrows=1, ncols=1, figsize=None, **subplot_kw):
    """(figure, axes) as `pyplot.subplots` returns them, on a `blank_figure`."""
    fig = blank_figure(figsize)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def save_figure(fig, path):
    """Save as PNG atomically (`io_utils.atomic_savefig`); returns the path."""
    return atomic_savefig(fig, path)


def accuracy_vs_epoch(models_dir, out):
    """One panel per sweep depth: test accuracy per epoch of PDE1, PDE2 and c_ResNet (+ mlp)."""
    depths = sorted({r["depth"] for r in collect(models_dir) if r["model"] in FAMILIES})
    fig, axes = new_figure(1, max(len(depths), 1), figsize=(4.2 * max(len(depths), 1), 3.6), sharey=True, squeeze=False)
    mlp = read_history(Path(models_dir) / run_name("mlp", 0) / "history.csv")
    for ax, depth in zip(axes[0], depths):
        for family in FAMILIES:
            rows = read_history(Path(models_dir) / run_name(family, depth) / "history.csv")
            if rows:
                ax.plot([int(r["epoch"]) for r in rows], [100 * float(r["test_accuracy"]) for r in rows], label=LABELS[family])
        if mlp:
            ax.plot([int(r["epoch"]) for r in mlp], [100 * float(r["test_accuracy"]) for r in mlp], "k:", lw=1, label=LABELS["mlp"])
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].set_ylim(94, 99)
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("MNIST test accuracy per epoch (Adam 1e-3, batch 128) — cf. thesis Fig 4.3/4.4")
    return save_figure(fig, out)


def accuracy_vs_depth(models_dir, out):
    """Final test accuracy vs depth, ours (lines) and the thesis Table 4.1/4.2 (markers)."""
    rows = collect(models_dir)
    fig, ax = new_figure(figsize=(6, 4))
    for color, family in zip(("C0", "C1", "C2"), FAMILIES):
        ours = sorted((r["depth"], 100 * r["test_acc"]) for r in rows if r["model"] == family)
        if ours:
            ax.plot(*zip(*ours), "o-", color=color, label=f"{LABELS[family]} (ours)")
        thesis = [(d, float(re.findall(r"[\d.]+", v)[0])) for (f, d), v in sorted(THESIS.items()) if f == family]
        if thesis:
            ax.plot(*zip(*thesis), "x--", color=color, alpha=0.7, label=f"{LABELS[family]} (thesis)")
    for r in rows:
        if r["model"] == "mlp":
            ax.axhline(100 * r["test_acc"], color="k", ls=":", lw=1, label="head only (mlp, ours)")
    ax.set_xlabel("depth (blocks)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Final test accuracy vs depth")
    return save_figure(fig, out)


def evolution(model, image, out, layers=None, title=""):
    """The image ψ_0 and the block outputs ψ_t for t in `layers` (default: 8 evenly spaced)."""
    stack = model.get_layer("blocks")
    states = stack.trajectory(image[None])
    depth = len(states) - 1
    layers = layers or sorted(set(np.linspace(0, depth, 8).round().astype(int)))
    fig, axes = new_figure(1, len(layers), figsize=(1.9 * len(layers), 2.3))
    for ax, t in zip(np.atleast_1d(axes), layers):
        ax.imshow(states[t][0, ..., 0], cmap="viridis")
        ax.set_title(f"t = {t}\nmax {states[t].max():.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title or f"{model.name}: evolution of one test image through the blocks (cf. thesis Fig 4.5)", fontsize=9)
    return save_figure(fig, out)
