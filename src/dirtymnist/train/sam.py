"""Sharpness-aware minimisation (`sam_rho`), an experiment that lost at our budgets (BENCHMARKS).

The engine calls `parts.second_pass(model, forward_loss)` after the first backward of each
optimizer step; `second_pass(cfg)` gives SAM's when `sam_rho` > 0 and a no-op otherwise.
"""

from __future__ import annotations

import functools

import torch


def second_pass(cfg):
    """(model, forward_loss) -> loss at the shifted weights (SAM), or a no-op returning 0."""
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
