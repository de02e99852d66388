"""Multi-label losses on logits (B, K) and multi-hot float targets (B, K); the class-map loss of dense stages."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017), mean over every cell."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-bce)
        return ((1 - p_t) ** self.gamma * bce).mean()


class AsymmetricLoss(nn.Module):
    """timm's AsymmetricLossMultiLabel, scaled to a per-cell mean so its size reads like BCE."""

    def __init__(self):
        super().__init__()
        from timm.loss import AsymmetricLossMultiLabel

        self.inner = AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=1, clip=0.05)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, target) / target.numel()


def build_loss(name: str) -> nn.Module:
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "softmargin":
        return nn.MultiLabelSoftMarginLoss()
    if name == "focal":
        return FocalLoss()
    if name == "asl":
        return AsymmetricLoss()
    raise ValueError(f"unknown loss {name!r}")


def dense_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal BCE of class maps (B, K, h, w) logits against position maps (B, K, g, g) {0,1},
    max-pooled to (h, w); summed and divided by the number of positive cells (CenterNet)."""
    t = F.adaptive_max_pool2d(target.float(), maps.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(maps, t, reduction="none")
    p = torch.sigmoid(maps)
    weight = torch.where(t > 0, (1 - p) ** 2, p**2).detach()
    return (weight * bce).sum() / t.sum().clamp(min=1.0)


def dense_softmax_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-cell softmax over background + K letters of class maps (B, K, h, w) logits against
    position maps (B, K, g, g) {0,1} max-pooled to (h, w). The background logit is fixed at 0, so
    sigmoid(map) stays the presence score at inference. A cell covered by several letters takes
    them as equal soft targets. Focal weight (1 - p_target)^2, summed over cells and divided by
    the number of positive cells (as dense_loss)."""
    t = F.adaptive_max_pool2d(target.float(), maps.shape[-2:])  # (B, K, h, w)
    background = (t.sum(1, keepdim=True) == 0).float()  # (B, 1, h, w)
    soft = torch.cat([background, t], 1)
    soft = soft / soft.sum(1, keepdim=True)  # (B, K + 1, h, w), rows sum to 1
    logp = F.log_softmax(torch.cat([torch.zeros_like(maps[:, :1]), maps], 1), 1)
    p_target = (soft * logp.exp()).sum(1)  # (B, h, w)
    ce = -(soft * logp).sum(1)
    weight = ((1 - p_target) ** 2).detach()
    return (weight * ce).sum() / (1 - background).sum().clamp(min=1.0)


def dense_distill_loss(maps: torch.Tensor, teacher_maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bernoulli KL from the teacher's class-map probabilities to the student's, over every cell
    of (B, K, h, w) logits (the teacher's resized to the student's map if they differ), summed and
    divided by the positive cells of the position maps `target`, as `dense_loss`. Zero when the
    maps agree; its gradient is sigmoid(student) - sigmoid(teacher)."""
    if teacher_maps.shape[-2:] != maps.shape[-2:]:
        teacher_maps = F.interpolate(teacher_maps, size=maps.shape[-2:], mode="bilinear", align_corners=False)
    p_t = torch.sigmoid(teacher_maps.detach())
    entropy = F.binary_cross_entropy(p_t, p_t, reduction="none")
    kl = F.binary_cross_entropy_with_logits(maps, p_t, reduction="none") - entropy
    positives = F.adaptive_max_pool2d(target.float(), maps.shape[-2:]).sum()
    return kl.sum() / positives.clamp(min=1.0)


DENSE_LOSSES = {"sigmoid": dense_loss, "softmax": dense_softmax_loss}
