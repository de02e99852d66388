"""Measure what the plan needs before training: seconds per optimizer step and per image-view.

A short timing run on the job's real batches: `train` (the same config, its data stage only, one
epoch) on fold 0 into `OUT/.measure`, stopped by its `on_step` hook after `MEASURE_STEPS` steps;
then `VIEW_BATCHES` inference batches of the test split through the model it left, in each kind of
view the job may predict (plain, zoomed, flipped: rotations of one kind cost the same, so one is
timed and stands for the others; a zoomed view costs about two plain ones, it is drawn larger).
The run is thrown away: the job's own training starts afresh with the planned schedule (the
cosine's length depends on it). The first two steps (model build, first batch, warm-up) are left
out of the step rate. The figures are as good as the machine is quiet while they are taken:
another job on the cores then makes the plan long or short (BENCHMARKS, "A time budget").
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MEASURE_STEPS = 16  # optimizer steps timed (the first two left out of the rate: build, first batch, warm-up)
VIEW_BATCHES = 2  # inference batches timed per kind of view, after one batch of warm-up


def measure_rates(data_dir, preset: str, overrides: list[str], out: Path, *, data_steps: int,
                  views: list[str], batch_size: int = 64) -> tuple[float, dict[str, float], float]:
    """(seconds per optimizer step, {view: seconds per image} of `views`, seconds the measuring took).

    `views`: distinct view names of `transforms.TTA_PRESETS` ("rot0", "zoom_rot90", ...)."""
    from dirtymnist.config import load_config
    from dirtymnist.data.cache import open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.infer.loader import open_model
    from dirtymnist.model.transforms import TTA_PRESETS
    from dirtymnist.rundir import RunDir
    from dirtymnist.train.loop import train

    t_start = time.perf_counter()
    cfg = load_config(preset, [*overrides, "stages=[]", "epochs=1"])  # the data stage's step, one epoch
    run = RunDir(Path(out) / ".measure")
    shutil.rmtree(run.path, ignore_errors=True)  # a measure killed half-way: start it again
    k = max(1, min(MEASURE_STEPS, data_steps))
    seen: list[float] = []

    def hook(info) -> bool:
        seen.append(info.train_seconds)
        return info.step >= k

    train(data_dir, cfg, folds=[0], run_dir=run.path, on_step=hook)
    step_s = step_rate(seen)

    test = open_split(DataPaths.from_root(data_dir), "test")
    model = open_model(run.fold(0).last)
    rows = np.arange(min(len(test), VIEW_BATCHES * batch_size))
    fns = {v: fn for preset_views in TTA_PRESETS.values() for v, fn in preset_views}
    fns["rot0"] = fns.get("rot0", fns["id"])
    model.logits(test.images, rows[:batch_size], [("rot0", fns["rot0"])], batch_size=batch_size)  # warm-up
    kinds: dict[str, float] = {}
    for v in dict.fromkeys(["rot0", *views]):
        if _kind(v) not in kinds:
            t0 = time.perf_counter()
            model.logits(test.images, rows, [(v, fns[v])], batch_size=batch_size)
            kinds[_kind(v)] = (time.perf_counter() - t0) / max(len(rows), 1)
    view_s = {v: kinds[_kind(v)] for v in dict.fromkeys(["rot0", *views])}
    shutil.rmtree(run.path, ignore_errors=True)
    log.info("measured: %.3fs per optimizer step; per image: %s", step_s,
             ", ".join(f"{k}* {s:.4f}s" for k, s in kinds.items()))
    return step_s, view_s, time.perf_counter() - t_start


def step_rate(seen: list[float]) -> float:
    """Seconds per optimizer step from the training seconds seen at each step: the mean over the
    steps after the first two (model build, first batch and allocator warm-up are not the rate)."""
    if len(seen) >= 4:
        return (seen[-1] - seen[2]) / (len(seen) - 3)
    return seen[-1] / len(seen)


def _kind(view: str) -> str:
    """A view's kind: its name without the rotation ("zoom_rot90" -> "zoom_rot"); rotations cost alike."""
    return re.sub(r"rot\d+", "rot", view)
