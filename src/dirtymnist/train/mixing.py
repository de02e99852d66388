"""Mixup and CutMix for multi-label batches (`mix`): an experiment that lost at our budgets (BENCHMARKS).

`batch_mixer(cfg)` is what a training stage applies to each batch (`no_mix` when `mix: none`);
`mix_batch(x, y, maps, kind, alpha, prob, rng)` does the work.

Each sample is paired with another of the same batch (a permutation drawn from the step's
generator, so resume stays exact), with lam ~ Beta(alpha, alpha); a batch is mixed with
probability `prob`.

Targets, multi-label:
  mixup   lam * y_i + (1 - lam) * y_j: both letter sets are visible, each at its share of ink
          (timm's soft targets); position maps (dense stages) mix the same way.
  cutmix  with position maps (dense stages) the box is cut on the map grid and the targets
          come from the letters' positions: a letter is present when any cell of its
          position disk (radius 0.3 x its height around its centre) is still shown, from
          either image. An approximation at the box's edge: a letter whose disk is covered
          counts as absent though some outer ink may show. A letter whose disk holds no cell
          centre keeps its image's label. Without maps (the data folder) the targets are
          area-weighted, lam * y_i + (1 - lam) * y_j with lam the share of the image kept
          (timm's rule) -- cruder: a letter is either inside the box or not.
Soft targets suit BCE; the focusing terms of `focal` and `asl` assume 0/1 targets.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

KINDS = ("none", "mixup", "cutmix")


def no_mix(x, y, maps, rng):
    """The batch as it is (`mix: none`, and glyph crops, which hold one letter)."""
    return x, y, maps


def batch_mixer(cfg):
    """f(x, y, maps, rng=) -> the batch mixed as `cfg.mix` says (`no_mix` when it is none)."""
    if cfg.mix == "none":
        return no_mix
    return functools.partial(mix_batch, kind=cfg.mix, alpha=cfg.mix_alpha, prob=cfg.mix_prob)


def mix_batch(x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor | None, kind: str, alpha: float,
              prob: float, rng: np.random.Generator):
    """(x (B, C, S, S), y (B, K) float, maps (B, K, G, G) or None) -> the same, mixed.

    `rng`: the step's NumPy generator (draws on the host: no device sync, exact on resume)."""
    if kind == "none" or x.shape[0] < 2:
        return x, y, maps
    if rng.random() >= prob:
        return x, y, maps
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    if kind == "mixup":
        x = lam * x + (1 - lam) * x[perm]
        y = lam * y + (1 - lam) * y[perm]
        if maps is not None:
            maps = lam * maps.float() + (1 - lam) * maps[perm].float()
        return x, y, maps
    if kind != "cutmix":
        raise ValueError(f"unknown mix {kind!r}; choose from {', '.join(KINDS)}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"cutmix expects square inputs, got {tuple(x.shape[-2:])}")
    side = maps.shape[-1] if maps is not None else x.shape[-1]  # cut on the map grid if any
    y0, y1, x0, x1 = _box(rng, side, lam)
    if y1 <= y0 or x1 <= x0:
        return x, y, maps
    cell = x.shape[-1] / side
    py0, py1, px0, px1 = (round(v * cell) for v in (y0, y1, x0, x1))
    x = x.clone()
    x[..., py0:py1, px0:px1] = x[perm][..., py0:py1, px0:px1]
    if maps is None:
        kept = 1 - (py1 - py0) * (px1 - px0) / (x.shape[-2] * x.shape[-1])
        return x, kept * y + (1 - kept) * y[perm], None
    unplaced = (y > 0) & (maps.flatten(2).amax(2) == 0)  # no cell centre inside its disk
    maps = maps.clone()
    maps[..., y0:y1, x0:x1] = maps[perm][..., y0:y1, x0:x1]
    return x, torch.maximum(maps.flatten(2).amax(2).to(y.dtype), y * unplaced), maps


def _box(rng: np.random.Generator, side: int, lam: float) -> tuple[int, int, int, int]:
    """A square box of area ~ (1 - lam) * side^2 centred uniformly, clipped to the image."""
    cut = int(round(side * math.sqrt(1 - lam)))
    cy, cx = rng.integers(0, side, 2)
    y0, x0 = max(0, cy - cut // 2), max(0, cx - cut // 2)
    return y0, min(side, cy + cut - cut // 2), x0, min(side, cx + cut - cut // 2)
