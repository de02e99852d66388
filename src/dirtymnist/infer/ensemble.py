"""The one ensemble rule, for models (predict, serve, the packaged main.py) and for saved
probabilities (ensemble, OOF thresholds, blend).

A run is the mean of its members (its folds' models) and the ensemble the weighted mean of its
runs, both in one space: probabilities (`average="prob"`) or logits (`average="logit"`, then a
sigmoid). Weights are one per run (R,) or one per run and letter (R, 26), as `blend.json`
holds them, normalised per letter; none means equal. The letters are then decided by
`thresholds.Thresholds.apply`, the one decision rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dirtymnist import layout
from dirtymnist.arrays import sigmoid
from dirtymnist.errors import ConfigError

AVERAGES = ("prob", "logit")
_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before their logit


@dataclass(frozen=True)
class EnsembleOptions:
    """How the models' outputs combine: the space averaged in (`AVERAGES`), the runs' weights
    ((R,) or (R, 26); None: equal), the batch size, and the class list every model must have."""

    average: str = "prob"
    weights: Any = None
    batch_size: int = 64
    letters: Sequence[str] = layout.LETTERS


def ensemble_probs(runs: Sequence[Sequence[Path]], images, rows: np.ndarray | None = None, *,
                   tta: str = "none", device=None, load: Callable | None = None,
                   options: EnsembleOptions = EnsembleOptions()) -> np.ndarray:
    """Ensemble probabilities (len(rows), 26) float32 of `images[rows]` (uint8 (N, 256, 256):
    the cache's memmap, an array, a `PngFolder`); `runs` are groups of model files.

    One model is in memory at a time; `load(path, device) -> loader.Model` replaces
    `loader.open_model` (the serve page keeps its models loaded). Every model's class list
    must be `options.letters`."""
    from dirtymnist.infer.loader import open_model, tta_views
    from dirtymnist.model.precision import choose_device

    average, letters = options.average, options.letters
    _check_average(average)
    load = load or open_model
    views = tta_views(tta)
    rows = np.arange(len(images)) if rows is None else rows
    device = device or choose_device()
    per_run, first = [], None
    for group in runs:
        acc = None
        for path in group:
            model = load(path, device)
            if list(model.letters) != list(letters):
                against = f"{first}'s" if first else "the data's"
                raise ConfigError(f"{path}: class list {''.join(model.letters)} differs from {against} "
                                  f"{''.join(letters)}; models of an ensemble must share it")
            first = first or path
            logits = model.logits(images, rows, views, batch_size=options.batch_size)
            del model
            score = sigmoid(logits) if average == "prob" else logits.astype(np.float64)
            acc = score if acc is None else acc + score
        per_run.append(acc / len(group))
    return _mean_of_runs(per_run, options.weights, average)


def combine(probs: Sequence[np.ndarray], weights=None, average: str = "prob") -> np.ndarray:
    """The ensemble (N, 26) float32 of saved probability arrays (N, 26), one per run, in
    probability or logit space (the logits of probabilities clipped to [1e-7, 1 - 1e-7])."""
    _check_average(average)
    if average == "prob":
        return _mean_of_runs([p.astype(np.float64) for p in probs], weights, average)
    return _mean_of_runs([_logit(np.clip(p.astype(np.float64), _EPS, 1 - _EPS)) for p in probs],
                         weights, average)


def _mean_of_runs(scores: list[np.ndarray], weights, average: str) -> np.ndarray:
    """Weighted mean of the runs' (N, 26) float64 scores (probabilities or logits) -> float32
    probabilities; weights (R,) or (R, 26), normalised per letter."""
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(scores) or (w < 0).any() or (w.sum(0) <= 0).any():
        raise ConfigError(f"weights {w.tolist()} must be {len(scores)} non-negative numbers, not all 0")
    mean = sum(wi * s for wi, s in zip(w / w.sum(0), scores))
    return (mean if average == "prob" else sigmoid(mean)).astype(np.float32)


def _check_average(average: str) -> None:
    if average not in AVERAGES:
        raise ConfigError(f"average={average!r}; choose from {', '.join(AVERAGES)}")


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)
