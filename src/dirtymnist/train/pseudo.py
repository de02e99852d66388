"""Pseudo labels: confidently predicted test images join a fold's training rows (`pseudo: PROBS.npy`).

The winners' round: train folds -> `predict` the test split with the ensemble (which writes
NAME.probs.npy) -> train again with `--pseudo NAME.probs.npy`. A test image is kept when every
one of its 26 letters is decided (|p - 0.5| >= `pseudo_margin`); its targets are the 0/1
decisions (`pseudo_targets: hard`) or the probabilities (`soft`). Only the test images and
their indices are read: never test labels (test_answer.csv, or their copy in the cache).
Pseudo rows only ever join training batches; validation stays the fold's own labelled rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dirtymnist.errors import DataError
from dirtymnist.model.batches import EpochDraw, read_rows

log = logging.getLogger(__name__)


@dataclass
class PseudoSet:
    """The kept test images: rows of the test split's memmap and their targets."""

    images: np.ndarray  # (N_test, 256, 256) uint8 memmap of the whole test split
    rows: np.ndarray  # (M,) rows kept
    targets: np.ndarray  # (M, 26) float32, 0/1 (hard) or probabilities (soft)
    source: Path

    def __len__(self) -> int:
        return len(self.rows)


def select_confident(probs: np.ndarray, margin: float) -> np.ndarray:
    """(N,) bool: images whose every letter is decided, |p - 0.5| >= margin."""
    return (np.abs(np.asarray(probs, dtype=np.float64) - 0.5) >= margin).all(axis=1)


def make_targets(probs: np.ndarray, kind: str) -> np.ndarray:
    """(N, 26) float32 targets: the 0/1 decisions (hard) or the probabilities (soft)."""
    probs = np.asarray(probs, dtype=np.float32)
    return (probs > 0.5).astype(np.float32) if kind == "hard" else probs


def settle_pseudo(cfg):
    """`cfg` with `pseudo` as an absolute path and `pseudo_record` holding the file's sha256:
    the file's content is part of the recipe, so a run resumed on a rewritten file is refused
    (config diff) instead of training on other rows."""
    if not cfg.pseudo:
        return cfg
    import dataclasses

    from dirtymnist.model.weights import sha256

    path = Path(cfg.pseudo).expanduser().absolute()
    if not path.is_file():
        raise DataError(f"{path}: pseudo-label probability file not found (a `predict` NAME.probs.npy)")
    return dataclasses.replace(cfg, pseudo=str(path), pseudo_record=f"sha256 {sha256(path)}")


def load_pseudo(cfg, data_dir, cache_dir=None) -> PseudoSet | None:
    """The pseudo-labelled test images of `cfg.pseudo` (None when unset)."""
    if not cfg.pseudo:
        return None
    from dirtymnist.data.cache import default_cache_dir, open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.submission import align_to, load_probs, row_mismatch

    cache = Path(cache_dir).expanduser().absolute() if cache_dir else default_cache_dir(DataPaths.from_root(data_dir))
    test = open_split(cache, "test", labels=False)  # images and indices only
    probs, index = load_probs(cfg.pseudo)
    problem = row_mismatch(index, test.index)
    if problem:
        raise DataError(f"{cfg.pseudo}: indices are not the test split's of {data_dir}: {problem}")
    if probs.shape[1] != len(test.letters):
        raise DataError(f"{cfg.pseudo}: {probs.shape[1]} columns, expected {len(test.letters)}")
    probs = align_to(index, probs, test.index)  # (N_test, 26) in cache row order
    keep = select_confident(probs, cfg.pseudo_margin)
    log.info("pseudo labels: %d of %d test images confident (margin %.2f, %s targets) from %s",
             keep.sum(), len(keep), cfg.pseudo_margin, cfg.pseudo_targets, cfg.pseudo)
    if not keep.any():  # a weak model is rarely sure of all 26 letters of an image
        log.warning("pseudo labels: no test image has every letter within %.2f of 0 or 1 (its least "
                    "certain letters reach at most %.3f from 0.5); lower pseudo_margin or use "
                    "pseudo_targets=soft with pseudo_margin=0", 0.5 - cfg.pseudo_margin,
                    float(np.abs(probs - 0.5).min(axis=1).max()))
    return PseudoSet(test.images, np.flatnonzero(keep), make_targets(probs[keep], cfg.pseudo_targets),
                     Path(cfg.pseudo))


class MixedBatches(Dataset):
    """Batch `i` of an epoch over labelled `rows` of `images` and the pseudo set, shuffled together
    per (seed, epoch) like `CachedBatches`. Yields (uint8 (B, 256, 256), float32 (B, 26))."""

    def __init__(self, images, labels, rows: np.ndarray, pseudo: PseudoSet, batch_size: int,
                 draw: EpochDraw = EpochDraw()):
        self.images, self.labels, self.rows, self.pseudo = images, labels, np.asarray(rows), pseudo
        n = len(self.rows) + len(pseudo)
        self.order = draw.permutation(n)  # < len(rows): labelled; else pseudo
        self.batch_size, self.draw = batch_size, draw
        self.num_batches = n // batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, i: int):
        items = self.draw.share(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        n_lab = len(self.rows)
        imgs = np.empty((len(items), *self.images.shape[1:]), np.uint8)
        targets = np.empty((len(items), self.pseudo.targets.shape[1]), np.float32)
        lab = items < n_lab
        if lab.any():
            imgs[lab] = read_rows(self.images, self.rows[items[lab]])
            targets[lab] = self.labels[self.rows[items[lab]]]
        if (~lab).any():
            k = items[~lab] - n_lab
            imgs[~lab] = read_rows(self.pseudo.images, self.pseudo.rows[k])
            targets[~lab] = self.pseudo.targets[k]
        return torch.from_numpy(imgs), torch.from_numpy(targets)

