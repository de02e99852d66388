"""Batch sources for training: rows of the memory-mapped cache, or scenes made on the fly; a `Stage`.

A source is indexed by batch number inside an epoch, so the data of any (epoch, step)
is a pure function of the seed: a resumed run sees exactly the batches it would have.
Each yields (images uint8 (B, H, W), targets float32 (B, K)) CPU tensors. A `Stage` is one
epoch's source with what a step does with it (input size, augmentation, loss, mixing: stages.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dirtymnist.train.mixing import no_mix


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
    """Batch `i` of an epoch of freshly generated samples.

    kind: "synth" (scenes), "dense" (scenes + position maps (B, 26, g, g)), "glyphs"
    (single-glyph crops, one-hot labels). Sample j of batch i of epoch e is rendered from
    (seed, index) with a unique index, so workers and ranks can generate in any order with
    identical results. With `pool` > 0 the indices wrap around a fixed set of `pool` samples,
    kept in memory after their first rendering (generation paid once; epochs repeat them).
    With `hard_share` > 0, that share of each batch (its last members, at least one) comes from
    scenes drawn with `knobs` + `hard_knobs`, indexed on their own and pooled in
    ceil(pool x hard_share) samples: harder scenes mixed into every batch (issue 14, lever 4).
    Yields (images, targets) or, for "dense", (images, targets, maps).
    """

    def __init__(self, kind: str, knobs: dict, batch_size: int, steps: int, *, seed: int,
                 epoch: int, rank: int = 0, world: int = 1, pool: int = 0, letters=None,
                 hard_knobs: dict | None = None, hard_share: float = 0.0):
        self.kind, self.knobs_dict = kind, dict(knobs)
        self.batch_size, self.steps, self.seed, self.epoch = batch_size, steps, seed, epoch
        self.rank, self.world, self.pool = rank, world, pool
        self._knobs = None
        self.hard = None
        n_hard = min(batch_size - 1, max(1, round(batch_size * hard_share))) if hard_share > 0 else 0
        if n_hard > 0:
            self.hard = SynthBatches(kind, {**knobs, **(hard_knobs or {})}, n_hard, steps, seed=seed,
                                     epoch=epoch, pool=math.ceil(pool * hard_share))

    def __len__(self) -> int:
        return self.steps

    def _render(self, index: int):
        from dirtymnist.data import crops
        if self._knobs is None:
            base = crops.CROP_DEFAULTS if self.kind == "glyphs" else None
            self._knobs = crops.make_knobs(self.knobs_dict, base)
        seed = scene_seed(self.seed)
        if self.kind == "glyphs":
            return crops.render_glyph_crop(seed, index, self._knobs)
        if self.kind == "dense":
            return crops.render_dense(seed, index, self._knobs)
        from dirtymnist.data.synth import render_scene

        scene = render_scene(seed, index, self._knobs)
        return scene.image, scene.labels

    def _sample(self, index: int):
        if self.pool <= 0:
            return self._render(index)
        index %= self.pool
        key = _pool_key(self.kind, self.seed, self.knobs_dict, index)
        if key not in _POOL:
            _POOL[key] = self._render(index)
        return _POOL[key]

    def __getitem__(self, i: int):
        step = self.epoch * self.steps + i
        n_hard = self.hard.batch_size if self.hard is not None else 0
        n_main = self.batch_size - n_hard
        members = [(self, step * n_main + j) for j in range(n_main)]
        members += [(self.hard, step * n_hard + j) for j in range(n_hard)]
        samples = [src._sample(index) for src, index in members[self.rank::self.world]]
        out = [torch.from_numpy(np.stack(part)) for part in zip(*samples)]
        out[1] = out[1].float()
        return tuple(out)


def scene_seed(seed: int) -> int:
    """The generator seed of training-time scenes: a space of its own, so a dataset written with
    `synth --seed S` never holds an image that a training stage with seed S also drew (that
    would leak the synthetic test set into training: measured, it inflated test accuracy)."""
    return int(np.random.SeedSequence([seed, 0x7EA1]).generate_state(1, np.uint64)[0] >> 1)


_POOL: dict = {}  # rendered pool samples of this process, by (kind, seed, knobs, index)


def _pool_key(kind: str, seed: int, knobs: dict, index: int) -> tuple:
    return kind, seed, repr(sorted((k, list(v) if isinstance(v, tuple) else v) for k, v in knobs.items())), index


def fill_pool(kind: str, knobs: dict, seed: int, n: int, workers: int = 1) -> list:
    """Render pool samples 0..n-1 ahead of training (in `workers` processes) and keep them in
    this process, so a stage with `pool: n` and the same kind/knobs/seed finds them ready.
    Returns the samples, in index order."""
    from dirtymnist.parallel import process_pool

    jobs = [(kind, dict(knobs), seed, range(a, min(a + 256, n))) for a in range(0, n, 256)]
    if workers > 1:
        with process_pool(workers) as ex:
            chunks = list(ex.map(_render_chunk, jobs))
    else:
        chunks = [_render_chunk(j) for j in jobs]
    samples = [s for chunk in chunks for s in chunk]
    for index, sample in enumerate(samples):
        _POOL[_pool_key(kind, seed, knobs, index)] = sample
    return samples


def _render_chunk(job) -> list:
    kind, knobs, seed, indices = job
    src = SynthBatches(kind, knobs, 1, 1, seed=seed, epoch=0)
    return [src._render(i) for i in indices]


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


@dataclass
class Stage:
    """One epoch's batches and how the engine steps them."""

    batches: Dataset  # batch i -> (images uint8 (B, H, W), targets (B, K)[, position maps (B, K, g, g)])
    cfg: object  # the input settings of its steps (TrainConfig; glyph crops have their own size)
    augment: str  # augmentation preset (transforms.AUGMENT_PRESETS)
    loss_fn: Callable  # (logits (B, K) float, targets (B, K) float) -> loss
    dense_weight: float = 1.0  # weight of the class-map loss, for batches with position maps
    mix: Callable = no_mix  # (x, y, maps, rng) -> the same, mixed (mixing.batch_mixer)
