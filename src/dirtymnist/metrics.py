"""Multi-label scores on 0/1 arrays (N, 26): label accuracy (the competition metric) and friends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_bool_pair(pred01, true01) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred01), np.asarray(true01)
    if pred.shape != true.shape:
        raise ValueError(f"predictions {pred.shape} and targets {true.shape} differ in shape")
    if pred.size == 0:
        raise ValueError("empty predictions")
    for name, arr in (("predictions", pred), ("targets", true)):
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be 0/1 (threshold probabilities first)")
    return pred.astype(bool), true.astype(bool)


def label_accuracy(pred01, true01) -> float:
    """Mean over every image and letter of (pred == true): the competition's score."""
    pred, true = _as_bool_pair(pred01, true01)
    return float((pred == true).mean())


def exact_match(pred01, true01) -> float:
    """Fraction of images whose 26 answers are all right."""
    pred, true = _as_bool_pair(pred01, true01)
    if pred.ndim != 2:
        raise ValueError(f"expected (N, letters) arrays, got shape {pred.shape}")
    return float((pred == true).all(axis=1).mean())


def per_letter_stats(pred01, true01, letters: Sequence[str]) -> dict[str, dict[str, float]]:
    """{letter: {accuracy, precision, recall, f1, support}}; precision/recall/f1 are 0 when
    undefined (no predicted / no true positives), as in sklearn's zero_division=0."""
    pred, true = _as_bool_pair(pred01, true01)
    if pred.ndim != 2 or pred.shape[1] != len(letters):
        raise ValueError(f"expected (N, {len(letters)}) arrays, got shape {pred.shape}")
    tp = (pred & true).sum(axis=0)
    fp = (pred & ~true).sum(axis=0)
    fn = (~pred & true).sum(axis=0)
    acc = (pred == true).mean(axis=0)
    stats = {}
    for j, letter in enumerate(letters):
        precision = tp[j] / (tp[j] + fp[j]) if tp[j] + fp[j] else 0.0
        recall = tp[j] / (tp[j] + fn[j]) if tp[j] + fn[j] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        stats[letter] = {"accuracy": float(acc[j]), "precision": float(precision),
                         "recall": float(recall), "f1": float(f1), "support": int(tp[j] + fn[j])}
    return stats
