"""Where the model looked on the report's worst validation images: heat maps of missed and hallucinated letters.

Each image is explained by its own fold's `best.pt` (the model that had not seen it, whose
probabilities are in oof.npy). Class-map models (`head: avg|max|lse|csra`) show their
per-letter maps (`heatmaps.class_maps`: the model's own "letter here" probabilities). Models
with `head: timm` have none: they get Grad-CAM from pytorch-grad-cam (`heatmaps.grad_cam`,
scaled per panel) when that package is installed, and otherwise the report says why there are
no heat maps.
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)

MAX_LETTERS = 6  # panels per image: missed letters, then up to 3 hallucinated ones
CLASS_MAPS = "its class map from the image's own fold model: the model's \"letter here\" probability per cell"
GRAD_CAM = ("Grad-CAM (pytorch-grad-cam) of the image's own fold model at its last feature stage, "
            "as head=timm has no per-letter maps; each panel scaled on its own")


def wrong_letters(true: np.ndarray, pred: np.ndarray) -> list[tuple[int, str]]:
    """(letter, "missed" | "halluc.") of one image's (26,) bool rows, at most MAX_LETTERS."""
    halluc = [(int(j), "halluc.") for j in np.flatnonzero(pred & ~true)][:MAX_LETTERS // 2]
    missed = [(int(j), "missed") for j in np.flatnonzero(true & ~pred)]
    return missed[:MAX_LETTERS - len(halluc)] + halluc  # both kinds shown when both happen


def explain_worst(run_dir: str | os.PathLike, images: np.ndarray, folds: np.ndarray, true01: np.ndarray,
                  pred01: np.ndarray, probs: np.ndarray, titles: list[str], letters):
    """(Figure or None, note): heat maps of the wrong letters of images (n, 256, 256) uint8.

    folds (n,) the fold of each image; true01 / pred01 / probs (n, 26). The note says which
    method drew the maps, or why there are none.
    """
    import torch

    from dirtymnist.infer.loader import open_model
    from dirtymnist.look.heatmaps import class_maps, grad_cam
    from dirtymnist.rundir import RunDir

    wrong = [wrong_letters(t, p) for t, p in zip(true01.astype(bool), pred01.astype(bool))]
    panels: list[list[np.ndarray]] = [[] for _ in images]  # per image: one (h, w) map per wrong letter
    method = CLASS_MAPS
    for fold in np.unique(folds):
        ckpt = RunDir(run_dir).fold(int(fold)).best
        if not ckpt.is_file():
            return None, f"no heat maps: {ckpt} is missing (the report reads each fold's {ckpt.name})"
        loaded = open_model(ckpt, torch.device("cpu"))
        model, cfg = loaded.net, loaded.config
        sel = np.flatnonzero(folds == fold)
        maps = class_maps(model, cfg, images[sel])  # (len(sel), 26, h, w) or None
        for k, i in enumerate(sel):
            if maps is not None:
                panels[i] = [maps[k, j] for j, _ in wrong[i]]
                continue
            try:
                panels[i] = list(grad_cam(model, cfg, images[i], [j for j, _ in wrong[i]]))
            except ImportError:
                return None, (f"no heat maps for this model: head={cfg.head} has no per-letter class "
                              f"maps, and Grad-CAM needs the grad-cam package (pip install grad-cam)")
            method = GRAD_CAM
    return _plot(images, panels, wrong, probs, titles, letters), method


def _plot(images, panels, wrong, probs, titles, letters):
    from dirtymnist.look.heatmaps import overlay
    from dirtymnist.look.plots import HALLUCINATED, MISSED, _figure

    cols = 1 + max((len(w) for w in wrong), default=0)
    fig = _figure(1.9 * cols, 2.1 * len(images))
    axes = np.asarray(fig.subplots(len(images), cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, (img, maps, letters_wrong) in enumerate(zip(images, panels, wrong)):
        axes[i, 0].imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[i, 0].set_title(titles[i], fontsize=8)
        for k, ((j, what), heat) in enumerate(zip(letters_wrong, maps), start=1):
            axes[i, k].imshow(overlay(img, heat), interpolation="nearest")
            axes[i, k].set_title(f"{what} '{letters[j]}' p={probs[i, j]:.2f}", fontsize=8,
                                 color=MISSED if what == "missed" else HALLUCINATED)
    return fig
