"""`build_parts`: the `TrainParts` of a fold (model, loss, optimizer, schedule, EMA, SWA, grad scaler), built in a fixed order; `seed_everything`."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from dirtymnist.errors import ConfigError
from dirtymnist.model.precision import resolve_amp, use_channels_last
from dirtymnist.train.averaging import SwaAverage
from dirtymnist.train.engine import TrainParts, second_pass
from dirtymnist.train.schedule import EpochPlan, Schedule


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


def build_grad_scaler(cfg, device: torch.device):
    """fp16 autocast needs loss scaling (T4 / V100 / P100 under amp: auto); bf16 and fp32 do not."""
    if resolve_amp(cfg, device) != "fp16":
        return None
    if cfg.sam_rho > 0:  # SAM's second pass is not loss-scaled: its gradients would be unscaled to ~0
        raise ConfigError(f"sam_rho > 0 needs bf16 or fp32, and amp resolves to fp16 on this {device.type} "
                          "device (compute capability < 8.0); set --set amp=off")
    return torch.amp.GradScaler(device.type)


def build_parts(cfg, n_classes: int, plan: list[EpochPlan], device: torch.device) -> TrainParts:
    """Model (on `device`), loss, optimizer, EMA, SWA, grad scaler, schedule: in this order, so
    that the seeded initialisation is the same wherever a fold is built."""
    from timm.utils import ModelEmaV3

    from dirtymnist.model.build import build_model
    from dirtymnist.train.losses import build_loss

    model = build_model(cfg, n_classes).to(device)
    if any(p.source == "dense" for p in plan) and not cfg.pretrained and model.head is not None:
        # class maps start at p=0.1 (CenterNet): the focal loss over thousands of empty cells
        # would otherwise swamp the first steps
        torch.nn.init.constant_(model.head.conv.bias, -2.19)
    if use_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss)
    optimizer = build_optimizer(cfg, model)
    ema = ModelEmaV3(model, decay=cfg.ema) if cfg.ema > 0 else None
    swa = SwaAverage(model, cfg, len(plan), device)
    scaler = build_grad_scaler(cfg, device)
    return TrainParts(cfg, device, model, optimizer, Schedule(cfg, optimizer, plan), loss_fn, ema, swa,
                      scaler, second_pass(cfg), teacher=build_teacher(cfg, n_classes, device))


def build_teacher(cfg, n_classes: int, device: torch.device) -> torch.nn.Module | None:
    """The frozen net whose class maps dense stages distil (`distill` > 0): `teacher_model` (or
    `model`) with the `teacher` weights, in eval mode; None when distillation is off."""
    from dirtymnist.model.build import build_model

    if cfg.distill <= 0:
        return None
    tcfg = dataclasses.replace(cfg, model=cfg.teacher_model or cfg.model, pretrained=cfg.teacher,
                               grad_checkpointing=False)
    try:
        teacher = build_model(tcfg, n_classes).to(device).eval().requires_grad_(False)
    except ConfigError as exc:
        raise ConfigError(f"teacher: {exc}") from None
    if teacher.head is None:
        raise ConfigError(f"teacher: model {tcfg.model} has no class maps to distil (head={cfg.head})")
    if use_channels_last(cfg, device):
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher
