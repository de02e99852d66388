"""Batch sources for training: rows of the memory-mapped cache, or scenes made on the fly.

A source is indexed by batch number inside an epoch, so the data of any (epoch, step)
is a pure function of the seed: a resumed run sees exactly the batches it would have.
Each yields (images uint8 (B, H, W), targets float32 (B, K)) CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 11]).permutation(n)


class CachedBatches(Dataset):
    """Batch `i` of an epoch over `rows` of a memmap (shuffled per epoch, or in order)."""

    def __init__(self, images, labels, rows: np.ndarray, batch_size: int, *, seed: int = 0,
                 epoch: int = 0, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world: int = 1):
        self.images, self.labels = images, labels
        self.rows = np.asarray(rows)
        order = epoch_permutation(len(rows), seed, epoch) if shuffle else np.arange(len(rows))
        self.order = self.rows[order]
        self.batch_size, self.rank, self.world = batch_size, rank, world
        n = len(self.order)
        self.num_batches = n // batch_size if drop_last else -(-n // batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, i: int):
        rows = self.order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
        sort = np.argsort(rows)  # memmap reads in file order are faster
        inv = np.empty_like(sort)
        inv[sort] = np.arange(len(sort))
        imgs = np.asarray(self.images[rows[sort]])[inv]
        labels = self.labels[rows] if self.labels is not None else np.zeros((len(rows), 26), np.uint8)
        return torch.from_numpy(imgs), torch.from_numpy(labels.astype(np.float32))


class SynthBatches(Dataset):
    """Batch `i` of an epoch of freshly generated scenes (or single-glyph crops).

    Scene j of batch i of epoch e is `render(seed, index)` with a unique index, so workers
    and ranks can generate in any order with identical results.
    """

    def __init__(self, kind: str, knobs: dict, batch_size: int, steps: int, *, seed: int,
                 epoch: int, rank: int = 0, world: int = 1, letters=None):
        self.kind, self.knobs_dict = kind, dict(knobs)
        self.batch_size, self.steps, self.seed, self.epoch = batch_size, steps, seed, epoch
        self.rank, self.world = rank, world
        self._knobs = None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        from dirtymnist import synth

        if self._knobs is None:
            self._knobs = synth.SceneKnobs(**self.knobs_dict) if hasattr(synth, "SceneKnobs") else None
        base = (self.epoch * self.steps + i) * self.batch_size
        members = range(base, base + self.batch_size)[self.rank::self.world]
        imgs, labels = [], []
        for index in members:
            if self.kind == "glyphs":
                img, lab = synth.render_glyph_crop(self.seed, index, self._knobs)
            else:
                scene = synth.render_scene(self.seed, index, self._knobs)
                img, lab = scene.image, scene.labels
            imgs.append(img)
            labels.append(lab)
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labels).astype(np.float32))


def make_loader(dataset: Dataset, start: int, num_workers: int, pin: bool) -> DataLoader:
    """Batches start..len-1 of `dataset`, prefetched by `num_workers` processes."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, len(dataset)),
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
