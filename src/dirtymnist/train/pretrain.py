"""Pretrain a backbone on unlimited generated letters: `dirtymnist pretrain OUT [--minutes M | --steps N]`.

The training loop of `train` (`loop.train_fold`) run on the preset's dense curriculum: its
`dense` stages (the `cpu` preset's when it has none: easy scenes first, then the competition's
look) on fresh scenes, never a pool, with the preset's own schedule. With `--steps N` each stage
is one epoch and the stages share N steps as the preset shares its steps; with `--minutes M` the
stages keep their epochs, the last one repeats, the learning rate stays at its peak after the
warmup (`scheduler: constant`) and a step hook ends the run when the minutes are used. Every epoch is validated on
`val_scenes` generated scenes of the held-out glyph families (`families: train`; all families
otherwise). Writes OUT (safetensors, keys `trunk.*`/`head.*`: the last weights) for
`--set pretrained=OUT` in any preset with the same model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dirtymnist.atomic import atomic_path, check_writable
from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.layout import LETTERS
from dirtymnist.rundir import RunDir

log = logging.getLogger(__name__)

MAX_STEPS_PER_SECOND = 200  # a --minutes plan long enough for any machine; the step hook ends it


@dataclass(frozen=True)
class PretrainOptions:
    """A pretraining: the budget (exactly one of `minutes` of training or optimizer `steps`), the
    preset whose settings are used and its model (or `model`) with config `overrides`, the glyph
    `families` drawn ("train": the training side of `glyphs.split_families`, so held-out families
    stay unseen; or "all"), generator workers, and the generated validation scenes."""

    minutes: float | None = None
    steps: int | None = None
    preset: str = "scratch"
    model: str | None = None
    overrides: Sequence[str] = ()
    families: str = "train"
    num_workers: int = 1
    val_scenes: int = 64


def pretrain(out, options: PretrainOptions, *, run_dir=None) -> Path:
    """Train the preset's model on dense synthetic scenes; write its weights to `out`.

    Stops after `options.steps` optimizer steps or `options.minutes` of training. run_dir: keep
    the run folder there (last.pt, metrics.jsonl: a killed pretrain resumes); a temporary one by default.
    """
    from dirtymnist.glyphs import split_families
    from dirtymnist.model.checkpoint import load_checkpoint
    from dirtymnist.model.precision import choose_device
    from dirtymnist.train.loop import FoldContext, train_fold

    minutes, steps, families, val_scenes = options.minutes, options.steps, options.families, options.val_scenes
    model, preset, overrides = options.model, options.preset, options.overrides
    if (minutes is None) == (steps is None):
        raise ConfigError("pretrain: give exactly one of minutes or steps")
    cfg = load_config(preset, [*(overrides or []), *([f"model={model}"] if model else [])])
    check_writable(out)  # before the minutes of training, not after them
    train_fams, held_out = split_families(0.2, seed=0)
    fams = {} if families == "all" else {"families": list(train_fams)}
    cfg = dataclasses.replace(
        cfg, num_workers=options.num_workers, stages=_dense_stages(cfg, fams, minutes, steps),
        # dense targets need per-class maps; the trunk weights fit any head
        head="max" if cfg.head in ("timm", "imagenet_silu") else cfg.head,
        **({"scheduler": "constant"} if minutes is not None else {}))
    split = _validation_scenes(cfg.seed + 1, val_scenes, {} if families == "all" else {"families": list(held_out)})
    with contextlib.ExitStack() as stack:
        run = RunDir(run_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="pretrain-")))
        fold = run.fold(0)
        out_of_time = (lambda info: info.train_seconds >= minutes * 60) if minutes is not None else None
        context = FoldContext(cfg, choose_device(), on_step=out_of_time)
        best = train_fold(context, split, np.arange(0), np.arange(val_scenes), fold)
        last = load_checkpoint(fold.last)
        history = last["history"]
        if history:
            log.info("pretrain: %d epochs, validation label_acc %.4f (best %.4f)", len(history),
                     history[-1]["label_acc"], best["label_acc"])
        return save_weights(last["model"], out)


def _dense_stages(cfg, knobs: dict, minutes: float | None, steps: int | None) -> list[dict]:
    """The preset's dense stages (the scratch preset's if it has none) for this budget, fresh scenes."""
    stages = [s for s in cfg.stages if s["source"] == "dense"]
    stages = stages or [s for s in load_config("scratch").stages if s["source"] == "dense"]
    stages = [{**s, "pool": 0, "knobs": {**s["knobs"], **knobs}} for s in stages]
    if minutes is not None:  # the last stage repeats until the time limit
        last = stages[-1]
        last["epochs"] = math.ceil(minutes * 60 * MAX_STEPS_PER_SECOND / last["steps"])
        return stages
    sizes = [s["steps"] * max(1, s["epochs"]) for s in stages]
    out, left = [], steps
    for i, (s, size) in enumerate(zip(stages, sizes)):
        n = left if i == len(stages) - 1 else min(left, round(steps * size / sum(sizes)))
        if n > 0:
            out.append({**s, "steps": n, "epochs": 1})
            left -= n
    return out


def _validation_scenes(seed: int, n: int, knobs: dict):
    """A cache-split look-alike of `n` generated scenes (images (n, 256, 256) uint8, labels (n, 26))."""
    from dirtymnist.model.batches import EpochDraw
    from dirtymnist.train.sources import SynthBatches

    images, labels = SynthBatches("synth", knobs, n, 1, EpochDraw(seed))[0]
    return types.SimpleNamespace(images=images.numpy(), labels=labels.numpy().astype(np.uint8),
                                 letters=list(LETTERS), index=np.arange(n))


def save_weights(state: dict[str, torch.Tensor], out) -> Path:
    """A model state dict -> OUT (safetensors), atomically."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp))
        os.chmod(tmp, 0o644)  # safetensors writes a new 0600 file
    log.info("pretrain: wrote %s (%d tensors)", out, len(state))
    return out
