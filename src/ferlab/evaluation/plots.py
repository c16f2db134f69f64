"""Figures: the seed's `plot_loss_acc` curves, confusion-matrix heatmaps, per-class scores, a
reliability diagram, image galleries and a video's emotion timeline per face track.
`*_figure` functions return a matplotlib `Figure` (shown inline by notebooks); `plot_*`
functions save PNGs.

Figures are made with matplotlib's object API (`Figure`, no pyplot), which renders
PNGs without any GUI backend: nothing global is switched, so importing ferlab
never changes a notebook's or an application's matplotlib backend.

Depends on: files; matplotlib, numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.files import atomic_path


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def plot_loss_acc(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training and validation loss (left) and accuracy (right) per epoch, as in the seed."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label=f"train {label}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", ms=3, label=f"val {label}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if history:
        best = max(history, key=lambda h: h["val_accuracy"])
        ax_acc.axvline(best["epoch"], color="grey", ls="--", lw=1)
        ax_acc.set_title(f"best val accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Counts (left) and row-normalised recall (right) heatmaps, saved as PNG."""
    return _save(confusion_figure(cm, class_names, title), path)


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts (left) and row-normalised recall (right) heatmaps."""
    cm = np.asarray(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    k = len(class_names)
    fig = Figure(figsize=(6 + 1.2 * k, 0.6 * k + 2))
    axes = fig.subplots(1, 2)
    for ax, values, fmt, name in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalised")):
        im = ax.imshow(values, cmap="Blues")
        ax.set_xticks(range(k), class_names, rotation=45, ha="right")
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        top = values.max() if values.size else 1
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_figure(per_class: dict[str, dict[str, float]], title: str = "") -> Figure:
    """Precision, recall and F1 per class as grouped bars (evaluation's `per_class`)."""
    names = list(per_class)
    x = np.arange(len(names))
    fig = Figure(figsize=(1.1 * len(names) + 2.5, 3.6))
    ax = fig.subplots()
    for i, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, [per_class[n][key] for n in names], width=0.27, label=key)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel="score", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=3, loc="upper left")
    fig.tight_layout()
    return fig


def gallery_figure(tiles: Sequence[tuple[np.ndarray, str]], columns: int = 6, title: str = "") -> Figure:
    """Images (RGB or gray uint8) with a caption each, in a grid: e.g. the report's mistakes."""
    rows = max(1, -(-len(tiles) // columns))
    fig = Figure(figsize=(1.9 * columns, 2.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (image, caption) in zip(axes, tiles):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_loss_acc_of_multiple_parameters(
    histories: dict[str, Sequence[dict[str, Any]]], path: str | Path, title: str = ""
) -> Path:
    """The seed's sweep figure: train/val loss and accuracy of every value of one parameter."""
    fig = Figure(figsize=(12, 8))
    axes = fig.subplots(2, 2, sharex=True)
    panels = (("loss", axes[0, 0]), ("val_loss", axes[0, 1]), ("accuracy", axes[1, 0]),
              ("val_accuracy", axes[1, 1]))
    # Five or six runs a figure stay apart: a qualitative palette, a line style and a marker
    # each, and every run's best validation epoch starred and named in the legend.
    colours = colormaps["tab10"](np.arange(max(1, len(histories))) % 10)
    styles, markers = ("-", "--", "-.", ":"), "os^Dvx<>"
    for i, ((label, history), colour) in enumerate(zip(histories.items(), colours)):
        epochs = [h["epoch"] for h in history]
        best = max(history, key=lambda h: h["val_accuracy"]) if history else None
        if best is not None:
            label = f"{label} (best {best['val_accuracy']:.3f} @ {best['epoch']})"
        for key, ax in panels:
            ax.plot(epochs, [h[key] for h in history], styles[i % len(styles)], color=colour, lw=1.5,
                    marker=markers[i % len(markers)], ms=3.5, markevery=max(1, len(epochs) // 8), label=label)
        if best is not None:
            axes[1, 1].plot([best["epoch"]], [best["val_accuracy"]], "*", color=colour, ms=12, mec="k",
                            mew=0.5)
    for key, ax in panels:
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def reliability_figure(curves: dict[str, Sequence[dict[str, Any]]], title: str = "") -> Figure:
    """Reliability diagram: accuracy against confidence per bin (calibration.reliability_bins),
    one line per entry of `curves` (e.g. raw and calibrated); the diagonal is perfect
    calibration. Below it, how many faces fall in each bin."""
    fig = Figure(figsize=(5.2, 6.0))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="0.6", lw=1, label="perfectly calibrated")
    width = None
    for i, (label, bins) in enumerate(curves.items()):
        used = [b for b in bins if b["n"]]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o-", ms=4, label=label)
        width = (bins[0]["hi"] - bins[0]["lo"]) if bins else 0.1
        offset = (i - (len(curves) - 1) / 2) * width / len(curves)
        ax_n.bar([(b["lo"] + b["hi"]) / 2 + offset for b in bins], [b["n"] for b in bins],
                 width=width / len(curves), label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.set(xlabel="confidence (top probability)", ylabel="faces")
    fig.tight_layout()
    return fig


def plot_reliability(curves: dict[str, Sequence[dict[str, Any]]], path: str | Path, title: str = "") -> Path:
    return _save(reliability_figure(curves, title), path)


def timeline_figure(tracks: dict[int, dict[str, Any]], class_names: Sequence[str], title: str = "",
                    max_tracks: int = 8) -> Figure:
    """Each face track's class probabilities over time, stacked (one panel per track, the
    longest `max_tracks`). `tracks`: id -> {"time": [s, ...], "probs": [[p per class], ...]}."""
    longest = sorted(tracks, key=lambda t: -len(tracks[t]["time"]))[:max_tracks]
    shown = sorted(longest)
    fig = Figure(figsize=(9, 1.0 + 1.6 * max(1, len(shown))))
    axes = fig.subplots(max(1, len(shown)), 1, squeeze=False, sharex=True)[:, 0]
    colours = colormaps["tab10"](np.arange(len(class_names)) % 10)
    for ax, tid in zip(axes, shown):
        t, p = np.asarray(tracks[tid]["time"]), np.asarray(tracks[tid]["probs"]).T
        ax.stackplot(t, p, colors=colours, labels=class_names, linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_xlim(t.min(), max(t.max(), t.min() + 1e-3))
        ax.set_ylabel(f"track {tid}")
    if not shown:
        axes[0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("time (s)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "emotions per face track", y=1.04)
    return fig


def plot_timeline(tracks: dict[int, dict[str, Any]], class_names: Sequence[str], path: str | Path,
                  title: str = "") -> Path:
    return _save(timeline_figure(tracks, class_names, title), path)
