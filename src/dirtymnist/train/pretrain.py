"""Pretrain a backbone on unlimited generated letters: `dirtymnist pretrain OUT [--minutes M | --steps N]`.

The net learns per-class letter maps from scenes with known letter positions (dense targets,
`crops.render_dense`): easy scenes (few, large, opaque letters) for the first tenth of the
run, then the competition's look. Writes OUT (safetensors, keys `trunk.*`/`head.*`) for
`--set pretrained=OUT` in any preset with the same model.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

from dirtymnist.atomic import atomic_path
from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError

log = logging.getLogger(__name__)

EASY_KNOBS = {"letters": [3, 6], "height": [30.0, 55.0], "transparent": 0.0, "distractors": [0, 0]}
CHUNK = 20  # steps per source "epoch" (the unit at which the time budget is checked)


def pretrain(out, *, minutes: float | None = None, steps: int | None = None, model: str | None = None,
             preset: str = "cpu", overrides: list[str] | None = None, families: str = "train",
             num_workers: int = 1) -> Path:
    """Train `preset`'s model (or `model`) on dense synthetic scenes; write its weights to `out`.

    families: "train" (the training side of `glyphs.split_families`, so held-out families stay
    unseen) or "all". Stops after `steps` optimizer steps or `minutes` of training.
    """
    from dirtymnist.glyphs import split_families
    from dirtymnist.model.build import build_model
    from dirtymnist.train.engine import train_one_epoch
    from dirtymnist.train.loop import build_optimizer, seed_everything
    from dirtymnist.train.losses import build_loss
    from dirtymnist.train.sources import SynthBatches, make_loader

    if (minutes is None) == (steps is None):
        raise ConfigError("pretrain: give exactly one of minutes or steps")
    cfg = load_config(preset, [*(overrides or []), *([f"model={model}"] if model else [])])
    if cfg.head in ("timm", "imagenet_silu"):
        cfg.head = "max"  # dense targets need per-class maps; the trunk weights fit any head
    seed_everything(cfg.seed, cfg.deterministic)
    fams = {} if families == "all" else {"families": list(split_families(0.2, seed=0)[0])}
    net = build_model(cfg, 26)
    if not cfg.pretrained:
        torch.nn.init.constant_(net.head.conv.bias, -2.19)
    optimizer = build_optimizer(cfg, net)
    total = steps if steps is not None else math.inf
    warm = 20

    def factor(t: int) -> float:  # warmup, then cosine over `steps` (constant with a time budget)
        if t < warm:
            return (t + 1) / warm
        return 1.0 if math.isinf(total) else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t / total)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_fn = build_loss(cfg.loss)
    device = torch.device("cpu")
    t0, done, epoch = time.perf_counter(), 0, 0
    easy_steps = 0.1 * total if steps is not None else None
    while done < total and (minutes is None or time.perf_counter() - t0 < minutes * 60):
        if easy_steps is not None:
            easy = done < easy_steps
        else:
            easy = time.perf_counter() - t0 < 0.1 * minutes * 60
        n = int(min(CHUNK, total - done))
        knobs = {**(EASY_KNOBS if easy else {}), **fams}
        batches = SynthBatches("dense", knobs, cfg.batch_size, n, seed=cfg.seed + 1, epoch=epoch)
        stats = train_one_epoch(
            net, make_loader(batches, 0, num_workers, False), epoch=epoch, start_step=0, steps=n,
            optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, cfg=cfg, device=device,
            desc=f"pretrain {'easy' if easy else 'full'}")
        done += n
        epoch += 1
        log.info("pretrain: %d steps, %.1f min, loss %.4f", done, (time.perf_counter() - t0) / 60,
                 stats["train_loss"])
    return save_weights(net, out)


def save_weights(net: torch.nn.Module, out) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp))
        os.chmod(tmp, 0o644)  # safetensors writes a new 0600 file
    log.info("pretrain: wrote %s (%d tensors)", out, len(state))
    return out
