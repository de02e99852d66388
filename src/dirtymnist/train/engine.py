"""Per-batch work (DETR's engine.py): `train_one_epoch` over a fold's `TrainParts` and a `Stage`;
`optimizer_step` (with SAM's second pass, `sam_rho`: an experiment that lost); `evaluate`."""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dirtymnist.arrays import sigmoid
from dirtymnist.errors import DirtyMnistError
from dirtymnist.model.batches import make_loader, predict_logits
from dirtymnist.model.precision import autocast_context
from dirtymnist.model.transforms import to_input
from dirtymnist.train import distributed as dist
from dirtymnist.train.losses import DENSE_LOSSES, dense_distill_loss
from dirtymnist.train.schedule import Schedule
from dirtymnist.train.stages import Stage

log = logging.getLogger(__name__)


class NonFiniteLoss(DirtyMnistError):
    pass


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """Every random draw of one batch derives from (seed, epoch, step, rank): resume is exact."""
    return int(np.random.SeedSequence([seed, epoch, step, rank, 7]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class TrainParts:
    """One fold's training set-up: what the engine steps and what a checkpoint keeps."""

    cfg: object  # TrainConfig
    device: torch.device
    model: torch.nn.Module  # the weights: what checkpoints keep and the averages follow
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    loss_fn: torch.nn.Module  # image-level loss (losses.build_loss)
    ema: object | None  # timm ModelEmaV3 (`ema` > 0): validation and best.pt's "ema" use its weights
    swa: object  # averaging.SwaAverage (`swa_epochs`); does nothing when off
    scaler: torch.amp.GradScaler | None  # fp16 only
    second_pass: Callable  # SAM's second forward/backward (`second_pass`); a no-op when off
    net: torch.nn.Module | None = None  # what the step runs: the model, or its DDP / compiled wrapper
    teacher: torch.nn.Module | None = None  # frozen, eval mode (`distill` > 0): dense stages distil its maps

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation and step hooks see: the EMA's when on."""
        return self.ema.module if self.ema is not None else self.model

    def wrap(self) -> None:
        """`net`: the model in DDP (several processes) and/or torch.compile (`compile`)."""
        net = self.model
        if dist.world_size() > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
        self.net = torch.compile(net) if self.cfg.compile else net


def train_one_epoch(parts: TrainParts, stage: Stage, *, epoch: int, start_step: int,
                    on_step: Callable[[int], None] | None = None, desc: str = "train") -> dict:
    """Train over batches start_step..end of `stage.batches` (DETR's engine, with exact resume).

    on_step(step) runs after each optimizer step but the epoch's last (timed checkpoints, hooks).
    Returns train_loss (mean over all ranks), samples, data_time, step_time.
    """
    cfg, device = parts.cfg, parts.device
    steps = len(stage.batches)
    loader = make_loader(stage.batches, start_step, cfg.num_workers, device.type == "cuda")
    parts.net.train()
    rank = dist.rank()
    sum_loss, n_seen, data_time, step_time = 0.0, 0, 0.0, 0.0
    bar = _progress(steps, start_step, desc)
    t0 = time.perf_counter()
    step = start_step
    for images, targets, *maps in loader:
        t_data = time.perf_counter()
        data_time += t_data - t0
        seed = step_seed(cfg.seed, epoch, step, rank)
        x, y, target_maps = _step_inputs(stage, images, targets, maps, seed, device)
        forward_loss = functools.partial(stage_loss, parts.net, x, y, target_maps, stage, device,
                                        teacher=parts.teacher)
        loss = forward_loss()
        _check_finite(loss, epoch, step)
        (parts.scaler.scale(loss / cfg.accum_steps) if parts.scaler else loss / cfg.accum_steps).backward()
        boundary = (step + 1) % cfg.accum_steps == 0 or step + 1 == steps
        if boundary:
            _check_finite(parts.second_pass(parts.net, forward_loss), epoch, step)  # SAM; off: 0
            optimizer_step(parts)
        sum_loss += loss.item() * x.shape[0]
        n_seen += x.shape[0]
        step += 1
        t0 = time.perf_counter()
        step_time += t0 - t_data
        bar.update(step, loss.item(), parts.schedule.lr)
        if boundary and on_step is not None and step < steps:
            on_step(step)
    bar.close()
    n_total = dist.all_reduce_sum(torch.tensor([sum_loss, float(n_seen)]))
    return {
        "train_loss": float(n_total[0] / max(n_total[1], 1)),
        "samples": int(n_total[1]),
        "data_time": data_time,
        "step_time": step_time,
    }


def _step_inputs(stage: Stage, images, targets, maps: list, seed: int, device):
    """The step's network input, targets and position maps (or None): preprocessed, augmented
    and mixed with draws from the step's seed only."""
    torch.manual_seed(seed)  # dropout, stochastic depth
    g = torch.Generator(device=device).manual_seed(seed)
    x = to_input(images, stage.cfg, device, g, stage.augment)
    y = targets.to(device, non_blocking=True).float()
    target_maps = maps[0].to(device, non_blocking=True) if maps else None
    return stage.mix(x, y, target_maps, rng=np.random.default_rng([seed, 11]))


def optimizer_step(parts: TrainParts) -> None:
    """The gradients are in: unscale (fp16), clip, step, zero them, update the EMA, move the lr."""
    cfg, optimizer, scaler = parts.cfg, parts.optimizer, parts.scaler
    if scaler:
        scaler.unscale_(optimizer)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(parts.net.parameters(), cfg.grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None:
        parts.ema.update(parts.model)
    parts.schedule.after_step()


def second_pass(cfg):
    """(model, forward_loss) -> loss at the shifted weights (SAM, `sam_rho` > 0: after the first
    backward of each optimizer step), or a no-op returning 0. SAM lost at our budgets (BENCHMARKS)."""
    if cfg.sam_rho > 0:  # config: accum_steps 1, no fp16 scaler (build.build_grad_scaler)
        return functools.partial(sam_second_step, rho=cfg.sam_rho)
    return _none


def _none(model, forward_loss) -> torch.Tensor:
    return torch.zeros(())


def sam_second_step(model, forward_loss, rho: float) -> torch.Tensor:
    """Sharpness-aware minimisation (Foret et al. 2021), after the first backward: move the
    weights by rho * g / |g| (the ascent step), take the gradient there, move back. The
    optimizer then steps with that gradient. Costs a second forward and backward per step;
    batch-norm running statistics are updated by the first pass only. Returns the loss at the
    shifted weights."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = rho / (norm + 1e-12)
        originals = [p.detach().clone() for p in params]
        for p in params:
            p.add_(p.grad * scale)
    for p in params:
        p.grad = None
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in batch_norms]
    for m in batch_norms:
        m.momentum = 0.0
    try:
        loss = forward_loss()
        loss.backward()
    finally:
        for m, (momentum, tracked) in zip(batch_norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        with torch.no_grad():
            for p, w in zip(params, originals):
                p.copy_(w)
    return loss.detach()


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at epoch {epoch + 1} step {step}; "
                            "the last good checkpoint is untouched: lower lr or set grad_clip")


def stage_loss(net, x, y, target_maps, stage: Stage, device, teacher=None):
    """The training loss of one batch: the stage's image-level loss, plus `dense_weight` x the
    class-map loss when position maps come with the batch (dense stages), plus `distill` x the
    KL to a teacher's class maps when one is set (its forward pass runs without gradients)."""
    with autocast_context(stage.cfg, device):
        out = net(x, return_maps=True) if target_maps is not None else net(x)
    logits, maps = (out[0].float(), out[1].float()) if target_maps is not None else (out.float(), None)
    loss = stage.loss_fn(logits, y)
    if maps is not None:
        loss = loss + stage.dense_weight * DENSE_LOSSES[stage.cfg.dense_target](maps, target_maps)
        if teacher is not None and stage.cfg.distill > 0:
            with torch.no_grad(), autocast_context(stage.cfg, device):
                teacher_maps = teacher(x, return_maps=True)[1].float()
            loss = loss + stage.cfg.distill * dense_distill_loss(maps, teacher_maps, target_maps)
    return loss


def evaluate(model, loader, targets: np.ndarray, cfg, device, loss_fn, gather: bool = True) -> dict:
    """Validation metrics; also returns the probabilities (key `probs`) for out-of-fold files.

    gather: the loader holds this rank's share of the rows (DDP); False when one process
    evaluates all of them alone (e.g. SWA's final check on the main rank)."""
    from dirtymnist.metrics import exact_match, label_accuracy

    logits = predict_logits(model, loader, cfg, device)
    if gather:
        logits = dist.gather_rows(logits, len(targets))
    probs = sigmoid(logits)
    loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(targets).float()))
    pred = (probs > 0.5).astype(np.uint8)
    return {
        "val_loss": loss,
        "label_acc": float(label_accuracy(pred, targets)),
        "exact_match": float(exact_match(pred, targets)),
        "per_letter_acc": [float(v) for v in (pred == targets).mean(0)],
        "probs": probs,
    }


class _progress:
    """tqdm on a terminal, a plain line every `every` steps otherwise (logs, CI, notebooks)."""

    def __init__(self, total: int, start: int, desc: str, every: int = 0):
        self.total, self.desc = total, desc
        self.enabled = dist.is_main()
        # a terminal, or a Jupyter kernel (tqdm.auto draws a notebook bar there)
        self.tty = sys.stderr.isatty() or "ipykernel" in sys.modules
        self.every = every or max(1, total // 5)
        self.bar = None
        self.t0 = time.perf_counter()
        self.start = start
        if self.enabled and self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, step: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        elif step % self.every == 0 or step == self.total:
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else math.inf
            log.info("%s %d/%d loss %.4f lr %.2e eta %.0fs", self.desc, step, self.total, loss, lr, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
