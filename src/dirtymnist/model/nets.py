"""Small fully-convolutional backbones for CPU training, registered with timm (`model: dm_fcn`).

Letters are local (17-55 px at 256) and presence is "somewhere in the image", so these nets
keep a stride-8 feature map with a receptive field of ~150 px at 256 and no global pooling in
`forward_features`: `ClassMapHead` turns the (B, C, h, w) map into per-class maps.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import register_model


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Res(nn.Module):
    """Two 3x3 convs with a skip: the deepest stage trains faster with it. With `identity`, the
    last BatchNorm's scale starts at zero, so the block starts as the identity (on the ReLU
    output it follows) and a deeper net loaded from a shallower one's weights computes what it did."""

    def __init__(self, c: int, dilation: int = 1, identity: bool = False):
        super().__init__()
        self.a = _conv(c, c, dilation=dilation)
        self.b = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(c)
        )
        if identity:
            nn.init.zeros_(self.b[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(self.a(x)))


class _Stride4(nn.Module):
    """The stride-8 map brought back to stride 4 (issue 14, lever 1: small letters): upsampled,
    plus a 3x3 lateral conv of the stride-4 features, plus a depthwise-separable refinement.
    Both added branches end in a BatchNorm whose scale starts at zero, so a net loaded from
    stride-8 weights starts with exactly their class maps, upsampled."""

    def __init__(self, c4: int, c: int):
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(c4, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.refine = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c),
        )
        nn.init.zeros_(self.lateral[1].weight)
        nn.init.zeros_(self.refine[-1].weight)

    def forward(self, deep: torch.Tensor, s4: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(deep, size=s4.shape[-2:], mode="nearest") + self.lateral(s4)
        return x + self.refine(torch.relu(x))


class LetterFCN(nn.Module):
    """stem (stride 2) -> stride 4 -> stride 8 -> residual blocks (dilated). Plain convs + BN.
    With `stride4`, the output map is brought back to stride 4 (`_Stride4`). Residual blocks from
    index `grown` on start as the identity (`_Res`): the net grown from a `grown`-block one."""

    def __init__(self, widths=(24, 48, 96, 128), blocks: int = 2, in_chans: int = 1,
                 num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0,
                 stride4: bool = False, grown: int | None = None, **_):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(_conv(in_chans, w0, stride=2), _conv(w0, w0))  # (B, w0, S/2, S/2)
        self.stages = nn.Sequential(
            _conv(w0, w1, stride=2), _conv(w1, w1),  # (B, w1, S/4, S/4)
            _conv(w1, w2, stride=2), _conv(w2, w3),  # (B, w3, S/8, S/8)
            *[_Res(w3, 1 + i % 2, identity=grown is not None and i >= grown) for i in range(blocks)],
        )
        self.up = _Stride4(w1, w3) if stride4 else None
        self.num_features = w3
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(w3, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.up is None:
            return self.stages(self.stem(x))  # (B, C, S/8, S/8)
        s4 = self.stages[:2](self.stem(x))  # (B, w1, S/4, S/4)
        return self.up(self.stages[2:](s4), s4)  # (B, C, S/4, S/4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool:
            x = x.amax((2, 3)) if self.global_pool == "max" else x.mean((2, 3))
        return x if pre_logits else self.fc(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _build(widths, blocks, pretrained: bool = False, stride4: bool = False, **kwargs) -> LetterFCN:
    if pretrained:
        raise ValueError("dm_fcn nets have no hub weights; use `dirtymnist pretrain`")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return LetterFCN(widths, blocks, stride4=stride4, **kwargs)


@register_model
def dm_fcn(pretrained: bool = False, **kwargs) -> LetterFCN:
    """~0.2 M parameters; ~0.07 GMAC per 128 px image (the cpu preset's net)."""
    return _build((16, 32, 48, 64), 2, pretrained, **kwargs)


@register_model
def dm_fcn_tiny(pretrained: bool = False, **kwargs) -> LetterFCN:
    """For tests and quick checks."""
    return _build((8, 16, 16, 16), 1, pretrained, **kwargs)


@register_model
def dm_fcn_wide(pretrained: bool = False, **kwargs) -> LetterFCN:
    """~0.8 M parameters; ~0.27 GMAC per 128 px image: more capacity when minutes allow."""
    return _build((24, 48, 96, 128), 2, pretrained, **kwargs)


@register_model
def dm_fcn_deep(pretrained: bool = False, **kwargs) -> LetterFCN:
    """~0.76 M parameters: dm_fcn with its capacity where it is cheap, 96 channels and 4 residual
    blocks at stride 8 (1.8x dm_fcn's step time on one core in fp32; issue 14, lever 3)."""
    return _build((16, 32, 64, 96), 4, pretrained, **kwargs)


@register_model
def dm_fcn_deep_s4(pretrained: bool = False, **kwargs) -> LetterFCN:
    """dm_fcn_deep with a stride-4 output map (`_Stride4`, ~+18% MACs): two class-map cells per
    side where dm_fcn_deep has one, for the small letters it misses most (bench/limits.py).
    Loads dm_fcn_deep's weights (`pretrained=` its file) and starts with their predictions."""
    return _build((16, 32, 64, 96), 4, pretrained, stride4=True, **kwargs)


@register_model
def dm_fcn_deep6(pretrained: bool = False, **kwargs) -> LetterFCN:
    """dm_fcn_deep with 6 residual blocks at stride 8 (~1.1 M parameters), the two added ones
    starting as the identity: loaded from dm_fcn_deep's weights (`pretrained=` its file), it starts
    with their predictions and has more capacity to fine-tune (issue 14, round 11)."""
    return _build((16, 32, 64, 96), 6, pretrained, grown=4, **kwargs)


@register_model
def dm_fcn_deep8(pretrained: bool = False, **kwargs) -> LetterFCN:
    """dm_fcn_deep with 8 residual blocks at stride 8 (~1.4 M parameters), grown like dm_fcn_deep6."""
    return _build((16, 32, 64, 96), 8, pretrained, grown=4, **kwargs)
