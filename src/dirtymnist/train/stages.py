"""What an epoch trains on, by stage `source`: the epoch's batches and how a step treats them.

    data    the fold's rows of the cache (and pseudo-labelled test images with `pseudo`: pseudo.py)
    synth   scenes generated on the fly (or from a pool), image-level loss
    dense   scenes with letter position maps: image-level loss + dense_weight x the class-map loss
    glyphs  single-glyph crops with a softmax loss (`glyph_stage`; an experiment that lost)

`SOURCES` maps each source to a function (spec, epoch, cfg, data, loss_fn) -> Stage; the loop
calls `build_stage` and the engine steps whatever it gets. `load_training_data`: a run's cache
split and folds, which `TrainData` takes a fold's rows of.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from dirtymnist.arrays import positions
from dirtymnist.data.crops import CROP_CANVAS
from dirtymnist.errors import ConfigError
from dirtymnist.layout import IMAGE_SIZE
from dirtymnist.model.batches import CachedBatches, EpochDraw
from dirtymnist.train import distributed as dist
from dirtymnist.train.mixing import batch_mixer, no_mix
from dirtymnist.train.pseudo import MixedBatches, PseudoSet
from dirtymnist.train.schedule import EpochPlan
from dirtymnist.train.sources import ScenePool, SynthBatches


@dataclass
class Stage:
    """One epoch's batches and how the engine steps them."""

    batches: Dataset  # batch i -> (images uint8 (B, H, W), targets (B, K)[, position maps (B, K, g, g)])
    cfg: object  # the input settings of its steps (TrainConfig; glyph crops have their own size)
    augment: str  # augmentation preset (transforms.AUGMENT_PRESETS)
    loss_fn: Callable  # (logits (B, K) float, targets (B, K) float) -> loss
    dense_weight: float = 1.0  # weight of the class-map loss, for batches with position maps
    mix: Callable = no_mix  # (x, y, maps, rng) -> the same, mixed (mixing.batch_mixer)


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
    draw, split = _draw(cfg, epoch), data.split
    if data.pseudo is None:
        batches = CachedBatches(split.images, split.labels, data.rows, cfg.batch_size, draw)
    else:  # the fold's rows and the pseudo-labelled test images, shuffled together
        batches = MixedBatches(split.images, split.labels, data.rows, data.pseudo, cfg.batch_size, draw)
    batches.num_batches = min(batches.num_batches, spec.steps)  # epoch_fraction: the shuffle's first batches
    return Stage(batches, cfg, cfg.augment, loss_fn, spec.dense_weight, batch_mixer(cfg))


def scene_stage(spec: EpochPlan, epoch: int, cfg, data: TrainData, loss_fn) -> Stage:
    batches = SynthBatches(spec.source, spec.knobs, cfg.batch_size, spec.steps, _draw(cfg, epoch),
                           ScenePool(spec.pool, spec.hard_knobs, spec.hard_share))
    # scenes are drawn at any angle already; dense targets would need the same warp
    augment = "rot90" if cfg.augment != "none" and spec.source != "dense" else "none"
    if epoch < cfg.dense_softmax_epochs:  # a softmax start (issue 14): then dense_target as set
        cfg = dataclasses.replace(cfg, dense_target="softmax")
    return Stage(batches, cfg, augment, loss_fn, spec.dense_weight, batch_mixer(cfg))


def glyph_stage(spec: EpochPlan, epoch: int, cfg, data: TrainData, loss_fn) -> Stage:
    """A 26-way softmax on single-glyph crops before the scene stages: crops hold one letter, so
    never mixed. An experiment that lost (docs/learning.md: 200 steps only cost time; the dense
    stages use the minutes better); kept reachable through its stage source."""
    batches = SynthBatches("glyphs", spec.knobs, cfg.batch_size, spec.steps, _draw(cfg, epoch),
                           ScenePool(spec.pool))
    augment = "rot90" if cfg.augment != "none" else "none"
    # crops keep the scale letters have in resized scenes
    size = max(8, round(spec.knobs.get("canvas", CROP_CANVAS) * cfg.image_size / IMAGE_SIZE))
    return Stage(batches, dataclasses.replace(cfg, image_size=size), augment, softmax_loss, spec.dense_weight)


def softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy against the one letter of each crop (targets one-hot (B, 26))."""
    return F.cross_entropy(logits, targets.argmax(1))


def _draw(cfg, epoch: int) -> EpochDraw:
    """Epoch `epoch`'s batches of this process."""
    return EpochDraw(cfg.seed, epoch, dist.rank(), dist.world_size())


SOURCES: dict[str, Callable[..., Stage]] = {
    "data": data_stage, "synth": scene_stage, "dense": scene_stage, "glyphs": glyph_stage,
}


def load_training_data(data_dir, cfg, cache_dir=None):
    """Cache (built once, reused) and folds. Returns (split, rows in the subset, fold per row)."""
    from dirtymnist.data.cache import build_cache, open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.data.folds import make_folds, read_folds

    paths = DataPaths.from_root(data_dir)
    if dist.is_main():
        cache = build_cache(paths, cache_dir=cache_dir, splits=("train",))
        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed,
                                   subset=cfg.subset or None, method=cfg.folds_method)
    dist.barrier()
    if not dist.is_main():
        cache = build_cache(paths, cache_dir=cache_dir, splits=("train",))
        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed,
                                   subset=cfg.subset or None, method=cfg.folds_method)
    split = open_split(cache, "train")
    if split.labels is None:
        raise ConfigError(f"{data_dir}: the training split has no labels")
    fold_index, fold_of = read_folds(folds_path)
    pos = positions(split.index, fold_index)
    if np.any(pos < 0):
        raise ConfigError(f"{folds_path}: holds indices that are not in the dataset; delete it to rebuild")
    return split, pos, fold_of
