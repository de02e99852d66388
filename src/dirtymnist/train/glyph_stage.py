"""The glyph-crop stage (`source: glyphs`): a 26-way softmax on single-glyph crops before the
scene stages. An experiment that lost (docs/learning.md: 200 steps only cost time; the dense
stages use the minutes better); kept reachable through its stage source."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from dirtymnist.data.crops import CROP_CANVAS
from dirtymnist.layout import IMAGE_SIZE
from dirtymnist.train import distributed as dist
from dirtymnist.train.sources import Stage, SynthBatches


def glyph_stage(spec, epoch: int, cfg, data, loss_fn):
    """stages.SOURCES["glyphs"]: crops hold one letter, so softmax over 26, never mixed."""
    batches = SynthBatches("glyphs", spec.knobs, cfg.batch_size, spec.steps, seed=cfg.seed, epoch=epoch,
                           rank=dist.rank(), world=dist.world_size(), pool=spec.pool)
    augment = "rot90" if cfg.augment != "none" else "none"
    # crops keep the scale letters have in resized scenes
    size = max(8, round(spec.knobs.get("canvas", CROP_CANVAS) * cfg.image_size / IMAGE_SIZE))
    return Stage(batches, dataclasses.replace(cfg, image_size=size), augment, softmax_loss, spec.dense_weight)


def softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy against the one letter of each crop (targets one-hot (B, 26))."""
    return F.cross_entropy(logits, targets.argmax(1))
