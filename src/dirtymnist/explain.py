"""Where the model looked on the report's worst validation images: heat maps of missed and hallucinated letters.

Each image is explained by its own fold's `best.pt` (the model that had not seen it, whose
probabilities are in oof.npy). Class-map models (`head: avg|max|lse|csra`) show their
per-letter maps (`heatmaps.py`); models with `head: timm` have none, and the report says so
rather than showing a different method's picture as if it were the model's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_LETTERS = 6  # panels per image: missed letters, then up to 3 hallucinated ones


def explain_worst(run_dir: Path, images: np.ndarray, folds: np.ndarray, true01: np.ndarray,
                  pred01: np.ndarray, probs: np.ndarray, titles: list[str], letters):
    """(Figure or None, note): heat maps of the wrong letters of images (n, 256, 256) uint8.

    folds (n,) the fold of each image; true01 / pred01 / probs (n, 26).
    """
    import torch

    from dirtymnist.checkpoint import load_model
    from dirtymnist.heatmaps import class_maps

    maps: list[np.ndarray | None] = [None] * len(images)
    for fold in np.unique(folds):
        ckpt = Path(run_dir) / f"fold{int(fold)}" / "best.pt"
        if not ckpt.is_file():
            return None, f"no heat maps: {ckpt} is missing (the report reads each fold's best.pt)"
        model, cfg, _ = load_model(ckpt, torch.device("cpu"))
        sel = np.flatnonzero(folds == fold)
        fold_maps = class_maps(model, cfg, images[sel])
        if fold_maps is None:
            return None, (f"no heat maps for this model: head={cfg.head} pools inside the backbone, "
                          f"so there is no per-letter map to show (class-map heads: avg, max, lse, csra)")
        for k, i in enumerate(sel):
            maps[i] = fold_maps[k]
    return _plot(images, maps, true01.astype(bool), pred01.astype(bool), probs, titles, letters), ""


def _plot(images, maps, true, pred, probs, titles, letters):
    from dirtymnist.heatmaps import overlay
    from dirtymnist.plots import HALLUCINATED, MISSED, _figure

    rows = []
    for i in range(len(images)):
        halluc = [(j, "halluc.", HALLUCINATED) for j in np.flatnonzero(pred[i] & ~true[i])]
        halluc = halluc[:MAX_LETTERS // 2]  # both kinds shown when both happen
        missed = [(j, "missed", MISSED) for j in np.flatnonzero(true[i] & ~pred[i])]
        rows.append(missed[:MAX_LETTERS - len(halluc)] + halluc)
    cols = 1 + max((len(r) for r in rows), default=0)
    fig = _figure(1.9 * cols, 2.1 * len(images))
    axes = np.asarray(fig.subplots(len(images), cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, wrong in enumerate(rows):
        axes[i, 0].imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[i, 0].set_title(titles[i], fontsize=8)
        for k, (j, what, color) in enumerate(wrong, start=1):
            axes[i, k].imshow(overlay(images[i], maps[i][j]), interpolation="nearest")
            axes[i, k].set_title(f"{what} '{letters[j]}' p={probs[i, j]:.2f}", fontsize=8, color=color)
    return fig
