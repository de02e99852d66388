"""Train k folds: `dirtymnist train DATA_DIR --preset cpu --folds 0,1,2,3,4 [--set key=value]`.

`train` checks and records the run folder, then trains each fold with `train_fold`, which
reads top to bottom: seed -> data and plan -> model, optimizer, schedule -> resume -> epochs
(train, validate, checkpoint) -> SWA. Running the same command again resumes from `last.pt`
bit-exactly. Per-batch work is `engine.train_one_epoch`; files are `checkpointer.Checkpointer`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dirtymnist.config import TrainConfig
from dirtymnist.errors import ConfigError
from dirtymnist.layout import LETTERS
from dirtymnist.model.batches import CachedBatches, EpochDraw, in_order, make_loader
from dirtymnist.model.build import check_input_size, check_weights_fit
from dirtymnist.model.precision import choose_device
from dirtymnist.model.precision import describe as describe_precision
from dirtymnist.model.weights import settle as settle_weights
from dirtymnist.rundir import FoldDir, RunDir
from dirtymnist.train import distributed as dist
from dirtymnist.train import runfolder
from dirtymnist.train.build import build_parts, seed_everything
from dirtymnist.train.checkpointer import Checkpointer, FoldState
from dirtymnist.train.engine import TrainParts, evaluate, train_one_epoch
from dirtymnist.train.pseudo import PseudoSet, load_pseudo, settle_pseudo
from dirtymnist.train.schedule import build_plan, refit_steps
from dirtymnist.train.stages import TrainData, build_stage, load_training_data

log = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raised inside the loop when an `on_step` hook asks to stop (last.pt is saved first)."""


@dataclass
class StepInfo:
    """What an `on_step` hook sees: where training is and the model to evaluate."""

    fold: int
    epoch: int
    step: int
    train_seconds: float  # training time so far in this fold, hooks and validation excluded
    samples: int  # training samples seen so far in this fold
    model: torch.nn.Module  # the weights validation uses (EMA when enabled)
    cfg: TrainConfig


@dataclass(frozen=True)
class FoldContext:
    """What every fold of a run shares: its config, device, pseudo labels, resume rule and hooks."""

    cfg: TrainConfig
    device: torch.device
    pseudo: PseudoSet | None = None  # confident test images joining the training rows
    force: bool = False  # resume even if the config changed
    on_epoch: Callable | None = None  # (fold, epoch, row) after each epoch's checkpoint
    on_step: Callable | None = None  # (StepInfo) -> True to stop, at optimizer steps
    data_budget: Callable | None = None  # (fold, row) -> seconds the fold's data stage may take


def train(data_dir, cfg: TrainConfig, *, folds: list[int] | None = None, run_dir=None,
          force: bool = False, cache_dir=None, on_epoch=None, on_step=None,
          data_budget=None) -> dict[int, dict]:
    """Train each fold in turn (each resumable). Returns {fold: best validation metrics}.

    Hooks for tools built on top (tune, benchmarks): `on_epoch(fold, epoch, row)` after each
    epoch's checkpoint is written (it may raise, e.g. to prune a trial); `on_step(StepInfo)`
    at optimizer steps -- returning True saves last.pt and stops the fold there. A time budget
    (`run --minutes`): `data_budget(fold, row)`, asked after each data-stage epoch but the stage's
    last, gives the seconds the fold's data stage may take in all; its later epochs' length is set
    again to end on it, from the rate this fold ran at (schedule.refit_steps, Schedule.refit).
    """
    device = dist.init_from_env() or choose_device()
    run = RunDir(run_dir or Path("runs") / (cfg.preset or "run"))
    folds = folds if folds is not None else [0]
    for f in folds:
        if not 0 <= f < cfg.folds_k:
            raise ConfigError(f"fold {f} is out of range for folds_k={cfg.folds_k}")
    if cfg.batch_size % dist.world_size():
        raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the {dist.world_size()} processes")
    # hub weights fetched once into the HF cache, normalize: auto resolved; first, so that weights
    # that cannot be had are refused in a second, before the model is probed for its stride
    cfg = settle_weights(cfg)
    check_input_size(cfg)
    cfg = settle_pseudo(cfg)  # the pseudo-label file named by its content
    if dist.is_main():  # refuse another config or data folder before any work
        runfolder.check_run(run, cfg, data_dir, force=force)
        if not run.config.exists():  # a start that does not fit the model: refused before config.yaml
            check_weights_fit(cfg, len(LETTERS))
    split, rows, fold_of = load_training_data(data_dir, cfg, cache_dir)
    pseudo = load_pseudo(cfg, data_dir, cache_dir)  # confident test images, or None
    with contextlib.ExitStack() as held:
        if dist.world_size() == 1 and len(folds) == 1:
            # one fold asked for: claim it before anything is written, so a refused train changes nothing
            held.enter_context(runfolder.claim(run, folds[0]))
        if dist.is_main():  # config.yaml, run.json: written only now that every check passed
            runfolder.record_run(run, cfg, data_dir, cache_dir, force=force)
        context = FoldContext(cfg, device, pseudo, force, on_epoch, on_step, data_budget)
        return _train_folds(context, split, rows, fold_of, run, folds)


def _train_folds(context: FoldContext, split, rows, fold_of, run: RunDir, folds: list[int]) -> dict[int, dict]:
    """Each fold once (claimed when several workers share the run), with tracking around it."""
    from dirtymnist.tracking import chain, start_tracking

    tracker = start_tracking(context.cfg, run.path) if dist.is_main() else None  # tracking: mlflow
    if tracker:
        context = dataclasses.replace(context, on_epoch=chain(tracker.on_epoch, context.on_epoch))
    results: dict[int, dict] = {}

    def train_one(f: int) -> dict:
        # one writer per fold: a second train of it is refused, naming this one's PID and host
        with runfolder.lock_fold(run.fold(f)) if dist.is_main() else contextlib.nullcontext():
            return train_fold(context, split, rows[fold_of != f], rows[fold_of == f], run.fold(f))

    try:
        if dist.world_size() > 1 or len(folds) == 1:  # a torchrun group trains its folds in order
            results = {f: train_one(f) for f in folds}
        else:  # other processes or hosts may share this run folder: each fold is trained once
            results = runfolder.train_claimed(run, folds, train_one)
        if len(folds) > 1 and dist.is_main():
            runfolder.gather_oof(run, folds)
    finally:
        dist.barrier()
        if tracker:
            tracker.finish(ok=len(results) == len(folds))
    return results


def train_fold(context: FoldContext, split, train_rows: np.ndarray, val_rows: np.ndarray, fold_dir: FoldDir) -> dict:
    """Train one fold (resuming from its last.pt); returns its best validation metrics."""
    cfg, device, on_step = context.cfg, context.device, context.on_step
    main, fold, letters = dist.is_main(), fold_dir.fold, list(split.letters)
    seed_everything(cfg.seed, cfg.deterministic)

    # data: the training rows (and pseudo labels), the plan of epochs, the validation batches
    data = TrainData(split, train_rows, context.pseudo)
    if data.batches_per_epoch(cfg.batch_size) < 1 and not cfg.stages:
        raise ConfigError(f"fold {fold}: {len(train_rows)} training images is less than one batch of {cfg.batch_size}")
    plan = build_plan(cfg, data.batches_per_epoch(cfg.batch_size))
    validation = _Validation.of(split, val_rows, cfg)

    # model, loss, optimizer, schedule, EMA / SWA; then where an earlier run of this fold stopped
    parts = build_parts(cfg, len(letters), plan, device)
    if main:
        log.info("fold %d: %s on %s", fold, describe_precision(cfg, device), device.type)
    files = Checkpointer(fold_dir, parts, letters, main=main)
    state = files.resume(force=context.force)
    parts.schedule.apply_refit(state.refit)
    if state.epoch >= len(plan) or state.stopped:
        if main:
            log.info("fold %d: already finished (%d epochs)", fold, len(plan))
            parts.swa.finish(split, train_rows, val_rows, fold_dir, len(state.history), missing_only=True)
        return state.best or {}
    parts.wrap()  # DDP, torch.compile

    for epoch in range(state.epoch, len(plan)):
        spec = plan[epoch]
        parts.schedule.start_epoch(epoch, state.step)
        stage = build_stage(spec, epoch, cfg, data, parts.loss_fn)
        hook = _StepHook(fold, epoch, state, files, parts, on_step)
        try:
            stats = train_one_epoch(parts, stage, epoch=epoch, start_step=state.step, on_step=hook,
                                    desc=f"fold {fold} epoch {epoch + 1}/{len(plan)}")
        except StopTraining as exc:
            if main:
                log.info("fold %d: %s", fold, exc)
            return state.best or {}
        stats["data_time"] -= hook.seconds  # the hook ran between batches
        parts.swa.after_epoch(parts.model, epoch)
        train_seconds = hook.elapsed()
        val, probs = validation.run(parts)
        parts.schedule.after_epoch(val["val_loss"])
        row = {"epoch": epoch + 1, "stage": spec.stage, "source": spec.source, **stats, **val,
               "lr": parts.schedule.lr, "seconds": time.perf_counter() - hook.t0,
               "samples_per_s": stats["samples"] / max(train_seconds, 1e-9)}
        if context.data_budget is not None and spec.source == "data":
            _refit(context, fold, epoch, row, state, parts, data.batches_per_epoch(cfg.batch_size))
        better = state.end_epoch(row, cfg.best_metric)
        if better:
            files.save_best(state, probs, validation.index, validation.targets)
        stop = state.stop_reason(cfg)
        state.stopped = stop is not None
        files.save_epoch(state, row)  # last.pt, epoch{N}.pt, metrics.jsonl, TensorBoard
        if main:
            _log_epoch(fold, len(plan), row, better)
        dist.barrier()
        if context.on_epoch is not None:
            context.on_epoch(fold, epoch, row)
        if stop:
            if main:
                log.info("fold %d: %s", fold, stop)
            break
    if main:
        parts.swa.finish(split, train_rows, val_rows, fold_dir, len(state.history))
    return state.best


def _refit(context: FoldContext, fold: int, epoch: int, row: dict, state: FoldState, parts: TrainParts,
           full_steps: int) -> None:
    """A time budget: the data stage's later epochs set again from this fold's own rate (the same
    on every process: the fewest steps any of them asks for), kept in `state` and said in `row`."""
    plan, stage = parts.schedule.plan, parts.schedule.plan[epoch].stage
    left = sum(p.stage == stage for p in plan[epoch + 1:])
    if not left:
        return
    rows = [r for r in state.history if r.get("stage") == stage and r.get("source") == "data"] + [row]
    steps = refit_steps(context.data_budget(fold, row), rows, left, context.cfg.batch_size, full_steps)
    steps = int(-dist.all_reduce_max(-float(steps)))
    state.refit = parts.schedule.refit(epoch, steps)
    row["next_steps"] = steps
    if dist.is_main():
        log.info("fold %d: the time budget sets the %d epoch(s) left to %d batches each (%.0f%% of the rows)",
                 fold, left, steps, 100 * steps / max(full_steps, 1))


@dataclass
class _Validation:
    """A fold's validation rows: their batches (this rank's share of each), targets, image indices."""

    batches: CachedBatches
    targets: np.ndarray  # (N, K) uint8
    index: np.ndarray  # (N,) image index of each row (the OOF files')

    @classmethod
    def of(cls, split, rows: np.ndarray, cfg: TrainConfig) -> _Validation:
        world = dist.world_size()
        batch = max(1, 2 * (cfg.batch_size // world)) * world
        batches = in_order(split.images, split.labels, rows, batch, EpochDraw(rank=dist.rank(), world=world))
        return cls(batches, split.labels[rows].astype(np.uint8), split.index[rows])

    def run(self, parts: TrainParts) -> tuple[dict, np.ndarray]:
        """(metrics, probabilities (N, K)) of the weights validation uses, over all ranks' rows."""
        val = evaluate(parts.eval_model, make_loader(self.batches, 0, 0, False), self.targets, parts.cfg,
                       parts.device, parts.loss_fn)
        return val, val.pop("probs")


class _StepHook:
    """The engine's call after each optimizer step: a timed last.pt (`checkpoint_minutes`), then
    the caller's `on_step`, whose time is kept out of the training time."""

    def __init__(self, fold: int, epoch: int, state: FoldState, files: Checkpointer, parts: TrainParts,
                 on_step=None):
        self.fold, self.epoch, self.state, self.files, self.parts, self.on_step = fold, epoch, state, files, parts, on_step
        self.start_step, self.done_seconds, self.done_samples = state.step, state.train_seconds, state.samples
        self.seconds = 0.0  # spent in on_step
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the epoch started, the hook's own excluded."""
        return time.perf_counter() - self.t0 - self.seconds

    def __call__(self, step: int) -> None:
        self.state.step = step
        self.files.save_if_due(self.state)
        if self.on_step is None:
            return
        h0, cfg = time.perf_counter(), self.parts.cfg
        info = StepInfo(self.fold, self.epoch, step, self.done_seconds + self.elapsed(),
                        self.done_samples + (step - self.start_step) * cfg.batch_size, self.parts.eval_model, cfg)
        stop = self.on_step(info)
        self.seconds += time.perf_counter() - h0
        if stop:
            self.files.save_last(self.state)
            raise StopTraining(f"stopped by a hook at epoch {self.epoch + 1} step {step}")


def _log_epoch(fold: int, n_epochs: int, row: dict, better: bool) -> None:
    log.info("fold %d epoch %d/%d: train_loss %.4f val_loss %.4f label_acc %.4f exact %.3f "
             "(%.0f samples/s, %.0fs)%s", fold, row["epoch"], n_epochs, row["train_loss"], row["val_loss"],
             row["label_acc"], row["exact_match"], row["samples_per_s"], row["seconds"], " *" if better else "")
