"""Train k folds: `dirtymnist train DATA_DIR --preset cpu --folds 0,1,2,3,4 [--set key=value]`.

`train` checks and records the run folder, then trains each fold with `train_fold`, which
reads top to bottom: seed -> data and plan -> model, optimizer, schedule -> resume -> epochs
(train, validate, checkpoint) -> SWA. Running the same command again resumes from `last.pt`
bit-exactly. Per-batch work is `engine.train_one_epoch`; files are `checkpointer.Checkpointer`'s.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dirtymnist.arrays import positions
from dirtymnist.config import TrainConfig
from dirtymnist.errors import ConfigError
from dirtymnist.layout import LETTERS
from dirtymnist.model.build import check_input_size, check_weights_fit
from dirtymnist.model.precision import choose_device
from dirtymnist.model.precision import describe as describe_precision
from dirtymnist.model.weights import settle as settle_weights
from dirtymnist.rundir import FoldDir, RunDir
from dirtymnist.train import claims
from dirtymnist.train import distributed as dist
from dirtymnist.train import guards as runfolder
from dirtymnist.train.build import build_parts, seed_everything
from dirtymnist.train.checkpointer import Checkpointer, FoldState
from dirtymnist.train.engine import TrainParts, evaluate, train_one_epoch
from dirtymnist.train.pseudo import load_pseudo, settle_pseudo
from dirtymnist.train.schedule import build_plan
from dirtymnist.train.sources import CachedBatches, make_loader
from dirtymnist.train.stages import TrainData, build_stage

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


def train(data_dir, cfg: TrainConfig, *, folds: list[int] | None = None, run_dir=None,
          force: bool = False, cache_dir=None, on_epoch=None, on_step=None) -> dict[int, dict]:
    """Train each fold in turn (each resumable). Returns {fold: best validation metrics}.

    Hooks for tools built on top (tune, benchmarks): `on_epoch(fold, epoch, row)` after each
    epoch's checkpoint is written (it may raise, e.g. to prune a trial); `on_step(StepInfo)`
    at optimizer steps -- returning True saves last.pt and stops the fold there.
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
    split, rows, fold_of = _load_training_data(data_dir, cfg, cache_dir)
    pseudo = load_pseudo(cfg, data_dir, cache_dir)  # confident test images, or None
    with contextlib.ExitStack() as held:
        if dist.world_size() == 1 and len(folds) == 1:
            # one fold asked for: claim it before anything is written, so a refused train changes nothing
            held.enter_context(claims.claim(run, folds[0]))
        if dist.is_main():  # config.yaml, run.json: written only now that every check passed
            runfolder.record_run(run, cfg, data_dir, cache_dir, force=force)
        return _train_folds(cfg, split, rows, fold_of, run, folds, device, force=force,
                            on_epoch=on_epoch, on_step=on_step, pseudo=pseudo)


def _train_folds(cfg, split, rows, fold_of, run: RunDir, folds: list[int], device, *, force, on_epoch,
                 on_step, pseudo) -> dict[int, dict]:
    """Each fold once (claimed when several workers share the run), with tracking around it."""
    from dirtymnist.train.tracking import chain, start_tracking

    tracker = start_tracking(cfg, run.path) if dist.is_main() else None  # tracking: mlflow
    hook = chain(tracker.on_epoch, on_epoch) if tracker else on_epoch
    results: dict[int, dict] = {}

    def train_one(f: int) -> dict:
        # one writer per fold: a second train of it is refused, naming this one's PID and host
        with runfolder.lock_fold(run.fold(f)) if dist.is_main() else contextlib.nullcontext():
            return train_fold(cfg, split, rows[fold_of != f], rows[fold_of == f], run.fold(f), device,
                              force=force, on_epoch=hook, on_step=on_step, pseudo=pseudo)

    try:
        if dist.world_size() > 1 or len(folds) == 1:  # a torchrun group trains its folds in order
            results = {f: train_one(f) for f in folds}
        else:  # other processes or hosts may share this run folder: each fold is trained once
            results = claims.train_claimed(run, folds, train_one)
        if len(folds) > 1 and dist.is_main():
            claims.gather_oof(run, folds)
    finally:
        dist.barrier()
        if tracker:
            tracker.finish(ok=len(results) == len(folds))
    return results


def train_fold(cfg: TrainConfig, split, train_rows: np.ndarray, val_rows: np.ndarray, fold_dir: FoldDir,
               device: torch.device, *, force: bool = False, on_epoch=None, on_step=None, pseudo=None) -> dict:
    """Train one fold (resuming from its last.pt); returns its best validation metrics."""
    main, fold, letters = dist.is_main(), fold_dir.fold, list(split.letters)
    seed_everything(cfg.seed, cfg.deterministic)

    # data: the training rows (and pseudo labels), the plan of epochs, the validation batches
    data = TrainData(split, train_rows, pseudo)
    if data.batches_per_epoch(cfg.batch_size) < 1 and not cfg.stages:
        raise ConfigError(f"fold {fold}: {len(train_rows)} training images is less than one batch of {cfg.batch_size}")
    plan = build_plan(cfg, data.batches_per_epoch(cfg.batch_size))
    validation = _Validation.of(split, val_rows, cfg)

    # model, loss, optimizer, schedule, EMA / SWA; then where an earlier run of this fold stopped
    parts = build_parts(cfg, len(letters), plan, device)
    if main:
        log.info("fold %d: %s on %s", fold, describe_precision(cfg, device), device.type)
    files = Checkpointer(fold_dir, parts, letters, main=main)
    state = files.resume(force=force)
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
        better = state.end_epoch(row, cfg.best_metric)
        if better:
            files.save_best(state, probs, validation.index, validation.targets)
        stop = state.stop_reason(cfg)
        state.stopped = stop is not None
        files.save_epoch(state, row)  # last.pt, epoch{N}.pt, metrics.jsonl, TensorBoard
        if main:
            _log_epoch(fold, len(plan), row, better)
        dist.barrier()
        if on_epoch is not None:
            on_epoch(fold, epoch, row)
        if stop:
            if main:
                log.info("fold %d: %s", fold, stop)
            break
    if main:
        parts.swa.finish(split, train_rows, val_rows, fold_dir, len(state.history))
    return state.best


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
        batches = CachedBatches(split.images, split.labels, rows, batch, shuffle=False, drop_last=False,
                                rank=dist.rank(), world=world)
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


def _load_training_data(data_dir, cfg: TrainConfig, cache_dir=None):
    """Cache (built once, reused) and folds. Returns (split, fold per row, rows in the subset)."""
    from dirtymnist.data.cache import build_cache, open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.data.folds import make_folds, read_folds

    paths = DataPaths.from_root(data_dir)
    if dist.is_main():
        cache = build_cache(paths, cache_dir=cache_dir, splits=("train",))
        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed,
                                   subset=cfg.subset or None, method=cfg.folds_method)
    dist.barrier()
    if not dist.is_main():
        cache = build_cache(paths, cache_dir=cache_dir, splits=("train",))
        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed,
                                   subset=cfg.subset or None, method=cfg.folds_method)
    split = open_split(cache, "train")
    if split.labels is None:
        raise ConfigError(f"{data_dir}: the training split has no labels")
    fold_index, fold_of = read_folds(folds_path)
    pos = positions(split.index, fold_index)
    if np.any(pos < 0):
        raise ConfigError(f"{folds_path}: holds indices that are not in the dataset; delete it to rebuild")
    return split, pos, fold_of
