"""Measure what the plan needs before training: seconds per optimizer step and per image-view.

A short timing run on the job's real batches: `train` (the same config, its data stage only, one
epoch) on fold 0 into `OUT/.measure`, stopped by its `on_step` hook after `MEASURE_STEPS` steps;
then one inference batch of the test split through the model it left. The run is thrown away:
the job's own training starts afresh with the planned schedule (the cosine's length depends on it).
The first step (model build, first batch, warm-up) is left out of the step rate.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MEASURE_STEPS = 8  # optimizer steps timed (the first one excluded from the rate)


def measure_rates(data_dir, preset: str, overrides: list[str], out: Path, *, data_steps: int,
                  batch_size: int = 64) -> tuple[float, float, float]:
    """(seconds per optimizer step, seconds per image per view, seconds the measuring took)."""
    from dirtymnist.config import load_config
    from dirtymnist.data.cache import open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.infer.loader import open_model, tta_views
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
    step_s = (seen[-1] - seen[0]) / (len(seen) - 1) if len(seen) >= 3 else seen[-1] / len(seen)

    test = open_split(DataPaths.from_root(data_dir), "test")
    model = open_model(run.fold(0).last)
    rows = np.arange(min(len(test), batch_size))
    views = tta_views("none")
    model.logits(test.images, rows[: max(1, len(rows) // 4)], views, batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    model.logits(test.images, rows, views, batch_size=batch_size)
    view_s = (time.perf_counter() - t0) / max(len(rows), 1)
    shutil.rmtree(run.path, ignore_errors=True)
    log.info("measured: %.3fs per optimizer step, %.4fs per image-view", step_s, view_s)
    return step_s, view_s, time.perf_counter() - t_start
