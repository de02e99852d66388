"""Small numpy helpers used across the package: row alignment by image index, the sigmoid."""

from __future__ import annotations

import numpy as np


def positions(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each `wanted` value in `keys` (any order, unique values), or -1 where it is absent.

    `keys[positions(keys, wanted)] == wanted` wherever the result is >= 0.
    """
    keys, wanted = np.asarray(keys), np.asarray(wanted)
    if len(keys) == 0:
        return np.full(wanted.shape, -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys[order], wanted), 0, len(keys) - 1)
    rows = order[pos]
    return np.where(keys[rows] == wanted, rows, -1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) in float64 (no overflow warning for large |z|), any shape."""
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))
