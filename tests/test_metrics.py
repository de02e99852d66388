"""metrics.py: the competition metric and per-letter statistics on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from dirtymnist.metrics import exact_match, label_accuracy, per_letter_stats


def test_label_accuracy_and_exact_match():
    true = np.array([[1, 0, 1], [0, 0, 1]])
    pred = np.array([[1, 1, 1], [0, 0, 1]])
    assert label_accuracy(pred, true) == pytest.approx(5 / 6)
    assert exact_match(pred, true) == pytest.approx(0.5)
    assert label_accuracy(true.astype(bool), true) == 1.0


def test_all_zeros_scores_one_minus_positive_rate():
    rng = np.random.default_rng(0)
    true = (rng.random((200, 26)) < 0.46).astype(np.uint8)
    assert label_accuracy(np.zeros_like(true), true) == pytest.approx(1 - true.mean())


def test_per_letter_stats():
    true = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    pred = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = per_letter_stats(pred, true, ["a", "b"])
    assert s["a"] == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5,
                                    "f1": 0.5, "support": 2})
    # no predicted positives: precision/recall/f1 are 0, not NaN
    assert s["b"] == pytest.approx({"accuracy": 0.75, "precision": 0.0, "recall": 0.0,
                                    "f1": 0.0, "support": 1})


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        label_accuracy(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="threshold probabilities first"):
        label_accuracy(np.full((2, 3), 0.7), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        per_letter_stats(np.zeros((2, 2)), np.zeros((2, 2)), "abc")
