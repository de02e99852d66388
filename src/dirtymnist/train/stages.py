"""What an epoch trains on, by stage `source`: the epoch's batches and how a step treats them.

    data    the fold's rows of the cache (and pseudo-labelled test images with `pseudo`: pseudo.py)
    synth   scenes generated on the fly (or from a pool), image-level loss
    dense   scenes with letter position maps: image-level loss + dense_weight x the class-map loss
    glyphs  single-glyph crops with a softmax loss (glyph_stage.py; an experiment that lost)

`SOURCES` maps each source to a function (spec, epoch, cfg, data, loss_fn) -> Stage; the loop
calls `build_stage` and the engine steps whatever it gets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dirtymnist.train import distributed as dist
from dirtymnist.train.glyph_stage import glyph_stage
from dirtymnist.train.mixing import batch_mixer
from dirtymnist.train.pseudo import MixedBatches, PseudoSet
from dirtymnist.train.schedule import EpochPlan
from dirtymnist.train.sources import CachedBatches, Stage, SynthBatches


@dataclass
class TrainData:
    """A fold's training images: rows of the cache split, plus pseudo-labelled test images."""

    split: object  # cache split: images (N, 256, 256) uint8 memmap, labels (N, 26) uint8
    rows: np.ndarray  # (M,) the fold's training rows
    pseudo: PseudoSet | None = None

    def batches_per_epoch(self, batch_size: int) -> int:
        return (len(self.rows) + (len(self.pseudo) if self.pseudo else 0)) // batch_size


def build_stage(spec: EpochPlan, epoch: int, cfg, data: TrainData, loss_fn) -> Stage:
    return SOURCES[spec.source](spec, epoch, cfg, data, loss_fn)


def data_stage(spec: EpochPlan, epoch: int, cfg, data: TrainData, loss_fn) -> Stage:
    rank, world, split = dist.rank(), dist.world_size(), data.split
    if data.pseudo is None:
        batches = CachedBatches(split.images, split.labels, data.rows, cfg.batch_size,
                                seed=cfg.seed, epoch=epoch, rank=rank, world=world)
    else:  # the fold's rows and the pseudo-labelled test images, shuffled together
        batches = MixedBatches(split.images, split.labels, data.rows, data.pseudo, cfg.batch_size,
                               seed=cfg.seed, epoch=epoch, rank=rank, world=world)
    return Stage(batches, cfg, cfg.augment, loss_fn, spec.dense_weight, batch_mixer(cfg))


def scene_stage(spec: EpochPlan, epoch: int, cfg, data: TrainData, loss_fn) -> Stage:
    batches = SynthBatches(spec.source, spec.knobs, cfg.batch_size, spec.steps, seed=cfg.seed,
                           epoch=epoch, rank=dist.rank(), world=dist.world_size(), pool=spec.pool,
                           hard_knobs=spec.hard_knobs, hard_share=spec.hard_share)
    # scenes are drawn at any angle already; dense targets would need the same warp
    augment = "rot90" if cfg.augment != "none" and spec.source != "dense" else "none"
    if epoch < cfg.dense_softmax_epochs:  # a softmax start (issue 14): then dense_target as set
        cfg = dataclasses.replace(cfg, dense_target="softmax")
    return Stage(batches, cfg, augment, loss_fn, spec.dense_weight, batch_mixer(cfg))


SOURCES: dict[str, Callable[..., Stage]] = {
    "data": data_stage, "synth": scene_stage, "dense": scene_stage, "glyphs": glyph_stage,
}
