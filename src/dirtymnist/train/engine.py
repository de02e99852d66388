"""Per-batch work: `train_one_epoch` and `evaluate`, each returning a dict of metrics."""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dirtymnist.arrays import sigmoid
from dirtymnist.errors import DirtyMnistError
from dirtymnist.model.precision import resolve_amp, use_channels_last
from dirtymnist.model.transforms import augment, normalize, preprocess
from dirtymnist.train import distributed as dist
from dirtymnist.train.mixing import mix_batch

log = logging.getLogger(__name__)


class NonFiniteLoss(DirtyMnistError):
    pass


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """Every random draw of one batch derives from (seed, epoch, step, rank): resume is exact."""
    return int(np.random.SeedSequence([seed, epoch, step, rank, 7]).generate_state(1, np.uint64)[0] >> 1)


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


def autocast_context(cfg, device: torch.device, training: bool = True):
    amp = resolve_amp(cfg, device, training)
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def train_one_epoch(
    model, loader, *, epoch: int, start_step: int, steps: int, optimizer, scheduler, loss_fn,
    cfg, device, ema=None, raw_model=None, scaler=None, aug: str = "none", softmax: bool = False,
    dense_weight: float = 1.0, on_step: Callable[[int], None] | None = None, desc: str = "train",
) -> dict:
    """Train over batches start_step..steps-1 of `loader` (which already starts at start_step).

    A batch is (images, targets) or (images, targets, position maps): with maps, the loss adds
    `dense_weight` x `dense_loss` on the model's class maps.
    """
    model.train()
    rank = dist.rank()
    sum_loss, n_seen, data_time, step_time = 0.0, 0, 0.0, 0.0
    bar = _progress(steps, start_step, desc)
    t0 = time.perf_counter()
    step = start_step
    for images, targets, *extra in loader:
        t_data = time.perf_counter()
        data_time += t_data - t0
        seed = step_seed(cfg.seed, epoch, step, rank)
        torch.manual_seed(seed)  # dropout, stochastic depth
        g = torch.Generator(device=device).manual_seed(seed)
        x = to_input(images, cfg, device, g, aug)
        y = targets.to(device, non_blocking=True).float()
        target_maps = extra[0].to(device, non_blocking=True) if extra else None
        if cfg.mix != "none" and not softmax:  # glyph crops hold one letter: softmax, never mixed
            x, y, target_maps = mix_batch(x, y, target_maps, cfg.mix, cfg.mix_alpha, cfg.mix_prob,
                                          np.random.default_rng([seed, 11]))
        forward_loss = functools.partial(batch_loss, model, x, y, target_maps, cfg=cfg, device=device,
                                         loss_fn=loss_fn, softmax=softmax, dense_weight=dense_weight)
        loss = forward_loss()
        _check_finite(loss, epoch, step)
        (scaler.scale(loss / cfg.accum_steps) if scaler else loss / cfg.accum_steps).backward()
        boundary = (step + 1) % cfg.accum_steps == 0 or step + 1 == steps
        if boundary:
            if cfg.sam_rho > 0:  # config: accum_steps 1, no fp16 scaler
                _check_finite(sam_second_step(model, forward_loss, cfg.sam_rho), epoch, step)
            if scaler:
                scaler.unscale_(optimizer)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(raw_model if raw_model is not None else model)
            if scheduler is not None and cfg.scheduler != "plateau" and cfg.scheduler_interval == "step":
                scheduler.step()
        sum_loss += loss.item() * x.shape[0]
        n_seen += x.shape[0]
        step += 1
        t0 = time.perf_counter()
        step_time += t0 - t_data
        bar.update(step, loss.item(), optimizer.param_groups[0]["lr"])
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


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at epoch {epoch + 1} step {step}; "
                            "the last good checkpoint is untouched: lower lr or set grad_clip")


def batch_loss(model, x, y, target_maps, *, cfg, device, loss_fn, softmax: bool, dense_weight: float):
    """The training loss of one batch: image-level (or softmax for glyph crops), plus the
    dense loss of the class maps when position targets come with the batch."""
    with autocast_context(cfg, device):
        out = model(x, return_maps=True) if target_maps is not None else model(x)
    logits, maps = (out[0].float(), out[1].float()) if target_maps is not None else (out.float(), None)
    loss = F.cross_entropy(logits, y.argmax(1)) if softmax else loss_fn(logits, y)
    if maps is not None:
        loss = loss + dense_weight * dense_loss(maps, target_maps)
    return loss


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


def dense_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal BCE of class maps (B, K, h, w) logits against position maps (B, K, g, g) {0,1},
    max-pooled to (h, w); summed and divided by the number of positive cells (CenterNet)."""
    t = F.adaptive_max_pool2d(target.float(), maps.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(maps, t, reduction="none")
    p = torch.sigmoid(maps)
    weight = torch.where(t > 0, (1 - p) ** 2, p**2).detach()
    return (weight * bce).sum() / t.sum().clamp(min=1.0)


@torch.no_grad()
def predict_logits(model, loader, cfg, device, views=None) -> np.ndarray:
    """Logits (N, K) float32 over the loader's batches; `views` = TTA list of (name, fn), averaged."""
    model.eval()
    out = []
    for images, *_ in loader:
        x = to_input(images, cfg, device, None, "none")
        acc = None
        for _, fn in views or [("id", lambda t: t)]:
            with autocast_context(cfg, device, training=False):
                logits = model(fn(x)).float()
            acc = logits if acc is None else acc + logits
        out.append((acc / len(views or [0])).cpu().numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


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
