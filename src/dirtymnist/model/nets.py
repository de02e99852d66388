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
    """Two 3x3 convs with a skip: the deepest stage trains faster with it."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.a = _conv(c, c, dilation=dilation)
        self.b = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(self.a(x)))


class LetterFCN(nn.Module):
    """stem (stride 2) -> stride 4 -> stride 8 -> residual blocks (dilated). Plain convs + BN."""

    def __init__(self, widths=(24, 48, 96, 128), blocks: int = 2, in_chans: int = 1,
                 num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0, **_):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(_conv(in_chans, w0, stride=2), _conv(w0, w0))  # (B, w0, S/2, S/2)
        self.stages = nn.Sequential(
            _conv(w0, w1, stride=2), _conv(w1, w1),  # (B, w1, S/4, S/4)
            _conv(w1, w2, stride=2), _conv(w2, w3),  # (B, w3, S/8, S/8)
            *[_Res(w3, dilation=1 + i % 2) for i in range(blocks)],
        )
        self.num_features = w3
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(w3, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # (B, C, S/8, S/8)

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


def _build(widths, blocks, pretrained: bool = False, **kwargs) -> LetterFCN:
    if pretrained:
        raise ValueError("dm_fcn nets have no hub weights; use `dirtymnist pretrain`")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return LetterFCN(widths, blocks, **kwargs)


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
