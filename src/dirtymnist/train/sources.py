"""Scenes made on the fly for training stages (`synth`, `dense`, `glyphs`), or from a pool.

Like the cache's batches (`model.batches.CachedBatches`), a source is indexed by batch number
inside an epoch, so the data of any (epoch, step) is a pure function of the seed: a resumed run
sees exactly the batches it would have. Each yields (images uint8 (B, H, W), targets float32
(B, K)[, position maps]) CPU tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dirtymnist.model.batches import EpochDraw


@dataclass(frozen=True)
class ScenePool:
    """Which scenes a source draws besides fresh ones of its knobs: `size` > 0 wraps the indices
    around a fixed set of that many samples; `hard_share` of each batch comes from scenes with
    `hard_knobs` on top of the knobs."""

    size: int = 0
    hard_knobs: dict | None = None
    hard_share: float = 0.0


class SynthBatches(Dataset):
    """Batch `i` of an epoch of freshly generated samples.

    kind: "synth" (scenes), "dense" (scenes + position maps (B, 26, g, g)), "glyphs"
    (single-glyph crops, one-hot labels). Sample j of batch i of epoch e is rendered from
    (seed, index) with a unique index, so workers and ranks can generate in any order with
    identical results. With `pool.size` > 0 the indices wrap around a fixed set of that many samples,
    kept in memory after their first rendering (generation paid once; epochs repeat them).
    With `pool.hard_share` > 0, that share of each batch (its last members, at least one) comes from
    scenes drawn with `knobs` + `hard_knobs`, indexed on their own and pooled in
    ceil(pool x hard_share) samples: harder scenes mixed into every batch (issue 14, lever 4).
    Yields (images, targets) or, for "dense", (images, targets, maps).
    """

    def __init__(self, kind: str, knobs: dict, batch_size: int, steps: int, draw: EpochDraw = EpochDraw(),
                 pool: ScenePool = ScenePool()):
        self.kind, self.knobs_dict = kind, dict(knobs)
        self.batch_size, self.steps, self.draw = batch_size, steps, draw
        self.seed, self.epoch, self.pool = draw.seed, draw.epoch, pool.size
        self._knobs = None
        self.hard = None
        share = pool.hard_share
        n_hard = min(batch_size - 1, max(1, round(batch_size * share))) if share > 0 else 0
        if n_hard > 0:
            self.hard = SynthBatches(kind, {**knobs, **(pool.hard_knobs or {})}, n_hard, steps,
                                     EpochDraw(draw.seed, draw.epoch), ScenePool(math.ceil(pool.size * share)))

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
        samples = [src._sample(index) for src, index in self.draw.share(members)]
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
    src = SynthBatches(kind, knobs, 1, 1, EpochDraw(seed))
    return [src._render(i) for i in indices]
