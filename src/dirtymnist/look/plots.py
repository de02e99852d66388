"""Matplotlib figures of a run (Agg, no pyplot state): curves, per-letter bars, confusions, gallery.

Each `plot_*` returns a `Figure`; `save_png` writes it atomically and returns the PNG bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dirtymnist.atomic import atomic_write_bytes

MISSED = "#d62728"  # red: a true letter the model did not predict
HALLUCINATED = "#1f77b4"  # blue: a predicted letter that is not there
_DPI = 90


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> bytes:
    """Write `fig` to `path` as PNG (atomically) and return the bytes (for a data URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return data


def plot_learning_curves(histories: dict[int, list[dict]]) -> Figure:
    """Per fold: train (solid) and val (dashed) loss, label accuracy, learning rate, by epoch."""
    fig = _figure(13, 3.6)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    colors = [f"C{i}" for i in range(10)]
    for i, (fold, rows) in enumerate(sorted(histories.items())):
        if not rows:
            continue
        c = colors[i % len(colors)]
        ep = [r["epoch"] for r in rows]
        ax_loss.plot(ep, [r.get("train_loss", np.nan) for r in rows], "-o", ms=3, color=c,
                     label=f"fold {fold} train")
        ax_loss.plot(ep, [r.get("val_loss", np.nan) for r in rows], "--s", ms=3, color=c,
                     label=f"fold {fold} val")
        acc = [r.get("label_acc", np.nan) for r in rows]
        ax_acc.plot(ep, acc, "-o", ms=3, color=c, label=f"fold {fold}")
        best = int(np.nanargmax(acc))
        ax_acc.plot(ep[best], acc[best], "*", ms=12, color=c)
        ax_lr.plot(ep, [r.get("lr", np.nan) for r in rows], "-o", ms=3, color=c, label=f"fold {fold}")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "label accuracy (* = best)"), (ax_lr, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=8)
    if any(line.get_ydata().size and np.nanmin(line.get_ydata()) > 0 for line in ax_lr.lines):
        ax_lr.set_yscale("log")
    return fig


def plot_letter_bars(stats: dict[str, dict[str, float]]) -> Figure:
    """Accuracy, precision and recall per letter, hardest (lowest accuracy) first."""
    letters = sorted(stats, key=lambda k: stats[k]["accuracy"])
    x = np.arange(len(letters))
    fig = _figure(13, 3.8)
    ax = fig.subplots()
    for i, (key, color) in enumerate((("accuracy", "0.35"), ("precision", "C2"), ("recall", "C1"))):
        ax.bar(x + (i - 1) * 0.27, [stats[k][key] for k in letters], width=0.27, color=color, label=key)
    ax.set_xticks(x, letters)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("letter (hardest first)")
    ax.set_title("out-of-fold per-letter scores")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=3, fontsize=8, loc="lower right")
    return fig


def plot_confusion(matrix: np.ndarray, missed: np.ndarray, hallucinated: np.ndarray,
                   letters: Sequence[str]) -> Figure:
    """Left: (26, 26) counts of images where letter i (row) was missed while letter j (column)
    was hallucinated. Right: per letter, how often it was missed and hallucinated."""
    fig = _figure(13, 5.6)
    ax_m, ax_b = fig.subplots(1, 2, width_ratios=[1.1, 1])
    n = len(letters)
    im = ax_m.imshow(matrix, cmap="magma_r", interpolation="nearest")
    ax_m.set_xticks(range(n), letters, fontsize=8)
    ax_m.set_yticks(range(n), letters, fontsize=8)
    ax_m.set_xlabel("hallucinated letter")
    ax_m.set_ylabel("missed letter")
    ax_m.set_title("missed (row) while hallucinated (column), images")
    fig.colorbar(im, ax=ax_m, shrink=0.8)
    x = np.arange(n)
    ax_b.bar(x - 0.2, missed, width=0.4, color=MISSED, label="missed (false negative)")
    ax_b.bar(x + 0.2, hallucinated, width=0.4, color=HALLUCINATED, label="hallucinated (false positive)")
    ax_b.set_xticks(x, letters, fontsize=8)
    ax_b.set_title("errors per letter")
    ax_b.set_ylabel("images")
    ax_b.grid(axis="y", alpha=0.3)
    ax_b.legend(fontsize=8)
    return fig


def plot_threshold_curve(grid: np.ndarray, acc: np.ndarray,
                         per_letter_acc: float | None = None) -> Figure:
    """OOF label accuracy against one global threshold; the best and 0.5 are marked."""
    fig = _figure(7, 3.6)
    ax = fig.subplots()
    ax.plot(grid, acc, color="C0", label="global threshold")
    best = int(np.argmax(acc))
    ax.plot(grid[best], acc[best], "o", color="C3",
            label=f"best {grid[best]:.2f}: {acc[best]:.4f}")
    half = int(np.argmin(np.abs(grid - 0.5)))
    ax.axvline(0.5, color="0.5", ls=":", label=f"0.5: {acc[half]:.4f}")
    if per_letter_acc is not None:
        ax.axhline(per_letter_acc, color="C2", ls="--", label=f"thresholds.json: {per_letter_acc:.4f}")
    ax.set_xlabel("threshold")
    ax.set_ylabel("OOF label accuracy")
    ax.set_title("label accuracy vs threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_gallery(images: np.ndarray, true01: np.ndarray, pred01: np.ndarray,
                 letters: Sequence[str], titles: Sequence[str], cols: int = 6) -> Figure:
    """Images (n, H, W) uint8 with two caption lines: true letters (missed ones red) and
    predicted letters (hallucinated ones blue); correct letters in black."""
    n = len(images)
    rows = max(1, -(-n // cols))
    height = 2.95 * rows
    fig = Figure(figsize=(2.3 * cols, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    # margins in inches: a title line above each image, two caption lines below
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.22 / height, bottom=0.5 / height,
                        wspace=0.06, hspace=0.42)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, img, t, p, title in zip(axes, images, true01.astype(bool), pred01.astype(bool), titles):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8, pad=2)
        _caption(ax, -0.04, "true", [(letters[j], MISSED if not p[j] else "black") for j in np.flatnonzero(t)])
        _caption(ax, -0.16, "pred", [(letters[j], HALLUCINATED if not t[j] else "black") for j in np.flatnonzero(p)])
    return fig


def _caption(ax, y: float, label: str, items: list[tuple[str, str]]) -> None:
    # One monospace letter per text object, so each can have its own colour.
    ax.text(0.0, y, label, transform=ax.transAxes, fontsize=7, family="monospace",
            va="top", color="0.4")
    step = min(0.058, 0.8 / max(len(items), 1))
    for k, (ch, color) in enumerate(items):
        ax.text(0.19 + k * step, y, ch, transform=ax.transAxes, fontsize=8, family="monospace",
                va="top", color=color, weight="bold" if color != "black" else "normal")
