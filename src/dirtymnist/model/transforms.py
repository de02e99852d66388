"""Device-side batched preprocessing, augmentation presets and TTA views; `to_input`, the network input.

Batches arrive as uint8 (B, H, W) tensors already on the device; everything here is
batched torch, random per sample, driven by an explicit torch.Generator so that a run is
reproducible and resumable bit-exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dirtymnist.model.precision import use_channels_last

IMAGENET_MEAN = 0.449  # grey = mean of ImageNet's RGB means (one channel replicated)
IMAGENET_STD = 0.226


def preprocess(images: torch.Tensor, cfg) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, C, S, S) float in [0, 1]: denoise, then resize to cfg.image_size.

    C is 1, or 2 for `denoise: ink` (grey, and the share of saturated pixels per output cell).
    """
    x = images.unsqueeze(1).float().div_(255.0)
    if cfg.denoise in ("ink", "threshold"):
        # Letters are added onto the noise and clip at 255 far more often than noise does
        # (1 in 256): after area downsampling the saturated pixels give a nearly clean ink map.
        # `ink` keeps the grey channel beside it, for semi-transparent letters that rarely clip.
        ink = (x >= 1.0).to(x.dtype)
        x = torch.cat([x, ink], dim=1) if cfg.denoise == "ink" else ink
    elif cfg.denoise == "median":
        x = _median3(x)
    size = cfg.image_size
    if x.shape[-1] != size:
        if cfg.resize == "area" and size < x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="area")
        else:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def normalize(x: torch.Tensor, cfg) -> torch.Tensor:
    """(B, C, S, S) in [0, 1] -> network input (B, in_chans, S, S)."""
    if cfg.normalize == "imagenet":
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    elif cfg.normalize == "center":
        x = (x - 0.5) / 0.5
    if cfg.in_chans == 3:
        x = x.expand(-1, 3, -1, -1)
    return x


def to_input(images: torch.Tensor, cfg, device, g: torch.Generator | None, aug: str) -> torch.Tensor:
    """uint8 (B, H, W) on any device -> normalised network input on `device`.

    g: the training step's generator, or None for inference (see `precision`: on a CPU only
    training steps use bf16 / channels_last).
    """
    x = preprocess(images.to(device, non_blocking=True), cfg)
    if g is not None and aug != "none":
        x = augment(x, aug, g)
    x = normalize(x, cfg)
    if use_channels_last(cfg, x.device, training=g is not None):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _median3(x: torch.Tensor) -> torch.Tensor:
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel_size=3)
    return patches.median(dim=1).values.view_as(x)


# --------------------------------------------------------------------------- augmentations
def rot90(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotate each sample by a random multiple of 90 degrees."""
    k = torch.randint(0, 4, (x.shape[0],), generator=g, device=g.device).to(x.device)
    out = x.clone()
    for turns in (1, 2, 3):
        sel = k == turns
        if sel.any():
            out[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
    return out


def flips(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Independent horizontal and vertical flips, each with probability p."""
    b = x.shape[0]
    h = (torch.rand(b, generator=g, device=g.device) < p).to(x.device).view(b, 1, 1, 1)
    v = (torch.rand(b, generator=g, device=g.device) < p).to(x.device).view(b, 1, 1, 1)
    x = torch.where(h, x.flip(-1), x)
    return torch.where(v, x.flip(-2), x)


def affine(
    x: torch.Tensor,
    g: torch.Generator,
    degrees: float,
    scale: float = 0.0,
    shift: float = 0.0,
    apply: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random rotation (+-degrees), scale (1 +- scale) and shift (fraction of the side)."""
    return _warp(x, _affine_grid(x, g, degrees, scale, shift, apply))


def _affine_grid(x, g, degrees, scale=0.0, shift=0.0, apply=None):
    b = x.shape[0]
    dev = g.device
    angle = (torch.rand(b, generator=g, device=dev) * 2 - 1) * math.radians(degrees)
    s = 1 + (torch.rand(b, generator=g, device=dev) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=g, device=dev) * 2 - 1) * shift * 2
    if apply is not None:  # samples not selected keep the identity
        keep = ~apply.to(dev)
        angle = torch.where(keep, torch.zeros_like(angle), angle)
        s = torch.where(keep, torch.ones_like(s), s)
        t = torch.where(keep.view(b, 1), torch.zeros_like(t), t)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    return F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)


def _smooth_field(b, cells, size, magnitude, g, device, dtype):
    """Random displacement field: (B, cells, cells, 2) noise upsampled to (B, size, size, 2)."""
    d = (torch.rand(b, 2, cells, cells, generator=g, device=g.device) * 2 - 1) * magnitude
    d = F.interpolate(d.to(device, dtype), size=(size, size), mode="bicubic", align_corners=True)
    return d.permute(0, 2, 3, 1)


def one_of_distortions(x: torch.Tensor, g: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """The winner's OneOf: grid distortion / shift-scale-rotate(15) / elastic, per sample."""
    b, _, h, w = x.shape
    choice = torch.randint(0, 3, (b,), generator=g, device=g.device).to(x.device)
    use = (torch.rand(b, generator=g, device=g.device) < p).to(x.device)
    grid = _affine_grid(x, g, 15.0, 0.1, 0.0625, apply=(choice == 1) & use)
    grid_d = _smooth_field(b, 5, h, 0.06, g, x.device, x.dtype)  # coarse grid distortion
    elastic = _smooth_field(b, 17, h, 0.03, g, x.device, x.dtype)  # fine elastic field
    sel = lambda c: ((choice == c) & use).view(b, 1, 1, 1).to(x.dtype)  # noqa: E731
    grid = grid + grid_d * sel(0) + elastic * sel(2)
    return _warp(x, grid)


def cutout(x: torch.Tensor, g: torch.Generator, holes: int = 16, size_frac: float = 15 / 256) -> torch.Tensor:
    """Zero `holes` squares of side size_frac * S per sample (the winner's Cutout)."""
    b, _, h, w = x.shape
    s = max(1, round(size_frac * h))
    ys = torch.randint(0, h - s + 1, (b, holes), generator=g, device=g.device).to(x.device)
    xs = torch.randint(0, w - s + 1, (b, holes), generator=g, device=g.device).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside_y = (rows >= ys.view(b, holes, 1, 1)) & (rows < ys.view(b, holes, 1, 1) + s)
    inside_x = (cols >= xs.view(b, holes, 1, 1)) & (cols < xs.view(b, holes, 1, 1) + s)
    mask = (inside_y & inside_x).any(dim=1, keepdim=True)
    return x.masked_fill(mask, 0.0)


def _warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _seed_aug(x, g):
    """The 9th-place team: flips p=0.6, rotation +-40 degrees."""
    return affine(flips(x, g, p=0.6), g, degrees=40.0)


def _winner_aug(x, g):
    """The 1st place: RandomRotate90, OneOf(grid / shift-scale-rotate / elastic), Cutout."""
    return cutout(one_of_distortions(rot90(x, g), g), g)


AUGMENT_PRESETS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": lambda x, g: x,
    "rot90": rot90,
    "d4": lambda x, g: flips(rot90(x, g), g),
    "seed": _seed_aug,
    "winner": _winner_aug,
}


def augment(x: torch.Tensor, name: str, g: torch.Generator) -> torch.Tensor:
    try:
        fn = AUGMENT_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown augment preset {name!r}; choose from {sorted(AUGMENT_PRESETS)}") from None
    return fn(x, g)


# --------------------------------------------------------------------------- TTA views
# Each view is a deterministic function (B, C, S, S) -> (B, C, S', S'). Letter presence is
# invariant to where a letter is, so outputs are averaged without un-transforming. A zoomed view
# (S' = ZOOM x S, bilinear) shows a fully-convolutional net its input larger: small letters get
# more cells of the class maps (BENCHMARKS.md; any net that takes any size).
ZOOM = 1.25


def _view(turns: int, hflip: bool, zoom: float = 1.0):
    def fn(x):
        if hflip:
            x = x.flip(-1)
        if turns:
            x = torch.rot90(x, turns, dims=(-2, -1))
        if zoom != 1.0:
            x = F.interpolate(x, scale_factor=zoom, mode="bilinear", align_corners=False)
        return x

    return fn


TTA_PRESETS: dict[str, list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]] = {
    "none": [("id", _view(0, False))],
    "flip": [("id", _view(0, False)), ("hflip", _view(0, True))],
    "rot90": [(f"rot{90 * k}", _view(k, False)) for k in range(4)],
    "d4": [(f"rot{90 * k}", _view(k, False)) for k in range(4)]
    + [(f"hflip_rot{90 * k}", _view(k, True)) for k in range(4)],
    "rot90_zoom": [(f"rot{90 * k}", _view(k, False)) for k in range(4)]
    + [(f"zoom_rot{90 * k}", _view(k, False, ZOOM)) for k in range(4)],
}

