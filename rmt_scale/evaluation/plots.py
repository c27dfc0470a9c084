"""PNG figures: accuracy heatmap (tasks x lengths, as in the BABILong paper), per-segment loss, and
a run's loss curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int | None = None) -> Path:
    """Lay out `fig`, write it to `path` (creating folders) and free it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_accuracy_heatmap(grid: Sequence[Sequence[float | None]], tasks: Sequence[str],
                          lengths: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Accuracy heatmap: one row per task, one column per length, accuracy % in each cell.

    Args:
        grid: Accuracy 0..1 per (task, length); None for a cell that was not run (drawn grey).
        tasks: Row names.
        lengths: Column names.
        path: PNG to write.
        title: Figure title (e.g. the model).
    """
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    plt = pyplot()
    values = np.array([[np.nan if v is None else 100 * v for v in row] for row in grid], dtype=float)
    # Red (0 %) through yellow to green (100 %), as in the BABILong figures.
    cmap = LinearSegmentedColormap.from_list("babilong", ["#d73027", "#fee08b", "#1a9850"])
    cmap = cmap.with_extremes(bad="#dddddd")
    width = max(4.0, 1.0 + 0.75 * len(lengths))
    fig, ax = plt.subplots(figsize=(width, 1.3 + 0.5 * len(tasks)), dpi=120)
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for i in range(len(tasks)):
        for j in range(len(lengths)):
            text = "-" if np.isnan(values[i, j]) else f"{values[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=10)
    ax.set_xticks(range(len(lengths)), labels=list(lengths))
    ax.set_yticks(range(len(tasks)), labels=list(tasks))
    ax.set_xlabel("context length (tokens)")
    ax.tick_params(length=0)
    if title:
        ax.set_title(textwrap.fill(title, int(width * 11)), fontsize=9)
    return save_figure(fig, path)


def plot_segment_losses(curves: dict[str, Sequence[float]], path: str | Path, title: str = "",
                        ylabel: str = "loss (nats / token)") -> Path:
    """One line per curve over segment positions 1..N (e.g. with and without memory)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), list(values), marker="o", markersize=3, label=name)
    return _finish_curves(fig, ax, "segment position", ylabel, title, path)


def _finish_curves(fig, ax, xlabel: str, ylabel: str, title: str, path: str | Path) -> Path:
    """Axis labels, grid, legend and title of a line plot; then write it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_loss_curves(train: Sequence[tuple[int, float]], validation: Sequence[tuple[int, float]],
                     stages: Sequence[tuple[int, str]], path: str | Path, title: str = "") -> Path:
    """Training and validation loss against step, a dashed line where each curriculum stage begins.

    Args:
        train: (step, loss) of the training records.
        validation: (step, loss) of the validation records.
        stages: (first step, label) of each stage, e.g. (120, "stage 2: 4 segments").
        path: PNG to write.
        title: Figure title.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), linewidth=1, alpha=0.8, label="training loss")
    if validation:
        ax.plot(*zip(*validation, strict=True), marker="o", markersize=3, label="validation loss")
    for step, label in stages:
        ax.axvline(step, color="grey", linestyle="--", linewidth=0.8)
        # Labels sit along the line at the top, in axes coordinates, whatever the loss range.
        ax.text(step, 0.98, f" {label}", rotation=90, va="top", ha="left", fontsize=7, color="grey",
                transform=ax.get_xaxis_transform())
    return _finish_curves(fig, ax, "step", "loss (nats / token)", title, path)
