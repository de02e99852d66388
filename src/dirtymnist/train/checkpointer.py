"""A fold's state and its files: the checkpoint dict's schema, resume, last / best / epoch files,
the OOF set, metrics.jsonl, TensorBoard and timed saves (timm's CheckpointSaver, one folder).

    fold{k}/last.pt      every checkpoint key; resume starts here (or at the newest readable epoch*.pt)
    fold{k}/best.pt      the best epoch's, without optimizer and SWA state; predict / export read it
    fold{k}/epoch{N}.pt  copies of last.pt after epoch N, the `keep_last` newest kept
    fold{k}/oof.npy, oof_index.npy, oof.set.json   the best epoch's validation probabilities (one set)
    fold{k}/metrics.jsonl, tb/                      one row per epoch; TensorBoard (`tensorboard`)

Checkpoint keys: model, ema, swa, optimizer, scheduler, scaler, the FoldState fields (epoch =
epochs finished, step = batches finished inside the current one, best, best_epoch, history,
stale, stopped, refit), config, letters, rng, fold, precision.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.config import diff_configs
from dirtymnist.errors import ConfigError
from dirtymnist.model.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dirtymnist.model.precision import describe as describe_precision
from dirtymnist.outputs import labels_digest, write_set
from dirtymnist.rundir import FoldDir

log = logging.getLogger(__name__)

BEST_KEYS = ("epoch", "val_loss", "label_acc", "exact_match")  # of a metrics row, kept as `best`


@dataclass
class FoldState:
    """Where a fold's training is: saved in every checkpoint, restored on resume."""

    epoch: int = 0  # epochs finished
    step: int = 0  # batches finished inside epoch `epoch`
    best: dict | None = None  # BEST_KEYS of the best epoch's metrics row
    best_epoch: int = -1  # 0-based
    history: list[dict] = field(default_factory=list)  # every finished epoch's metrics row
    stale: int = 0  # epochs since the best one
    stopped: bool = False  # early stopping or the time limit ended the fold
    refit: dict | None = None  # a time budget's last refit of the stage's later epochs (Schedule.refit)

    def to_checkpoint(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> FoldState:
        return cls(**{f.name: ckpt[f.name] for f in dataclasses.fields(cls) if f.name in ckpt})

    @property
    def train_seconds(self) -> float:
        """Training time of the finished epochs (data + steps; validation and hooks excluded)."""
        return sum(r["data_time"] + r["step_time"] for r in self.history)

    @property
    def samples(self) -> int:
        return sum(r["samples"] for r in self.history)

    def end_epoch(self, row: dict, best_metric: str) -> bool:
        """Record a finished epoch's metrics row; True when it is the best so far."""
        better = self.best is None or (row["val_loss"] < self.best["val_loss"] if best_metric == "loss"
                                       else row["label_acc"] > self.best["label_acc"])
        if better:
            self.best, self.best_epoch, self.stale = {k: row[k] for k in BEST_KEYS}, row["epoch"] - 1, 0
        else:
            self.stale += 1
        self.history.append(row)
        self.epoch, self.step = row["epoch"], 0
        return better

    def stop_reason(self, cfg) -> str | None:
        """Why training ends after this epoch (time limit, early stopping), or None."""
        minutes = self.train_seconds / 60
        if cfg.time_limit > 0 and minutes >= cfg.time_limit:
            return f"stopped at the time limit ({minutes:.1f} min of training)"
        if cfg.early_stopping > 0 and self.stale >= cfg.early_stopping:
            return f"early stop, no better {cfg.best_metric} for {cfg.early_stopping} epochs"
        return None


class Checkpointer:
    """Writes and reads one fold's files (only the main process writes: `main`)."""

    def __init__(self, fold_dir: FoldDir, parts, letters: list[str], *, main: bool = True):
        self.fold_dir, self.parts, self.letters, self.main = fold_dir, parts, list(letters), main
        self.cfg = parts.cfg
        self.saved_at = time.monotonic()
        self.writer = None  # TensorBoard (`tensorboard`), opened at the first epoch written
        if main and self.cfg.tensorboard:
            try:
                import torch.utils.tensorboard  # noqa: F401 - checked before any training
            except ImportError:
                raise ConfigError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
        if main and fold_dir.path.is_dir():
            for stale in fold_dir.path.glob(".*.tmp"):  # temp files of a write that was killed
                stale.unlink()

    # ------------------------------------------------------------------ the schema
    def state_dict(self, state: FoldState) -> dict:
        """The one checkpoint dict (see the module docstring)."""
        p, cfg = self.parts, self.cfg
        return {
            "model": p.model.state_dict(),
            "ema": p.ema.module.state_dict() if p.ema is not None else None,
            "swa": p.swa.state_dict(),
            "optimizer": p.optimizer.state_dict(),
            "scheduler": p.schedule.state_dict(),
            "scaler": p.scaler.state_dict() if p.scaler is not None else None,
            **state.to_checkpoint(),
            "config": cfg.to_dict(), "letters": self.letters, "rng": rng_state(), "fold": self.fold_dir.fold,
            "precision": describe_precision(cfg, p.device),
        }

    def resume(self, *, force: bool = False) -> FoldState:
        """The fold's state: a new one, or last.pt's with weights, optimizer, schedule and RNGs restored."""
        last, fold, p = self.fold_dir.last, self.fold_dir.fold, self.parts
        if not last.exists():
            return FoldState()
        ckpt = load_resume_point(self.fold_dir)
        changed = diff_configs(ckpt["config"], self.cfg.to_dict())
        if changed and not force:
            raise ConfigError(f"{last}: was trained with another config (differs in {', '.join(changed)}); "
                              "use the same settings, another --run-dir, or --force")
        if list(ckpt["letters"]) != self.letters:
            raise ConfigError(f"{last}: class list {ckpt['letters']} differs from the data's")
        p.model.load_state_dict(ckpt["model"])
        p.optimizer.load_state_dict(ckpt["optimizer"])
        if p.ema is not None and ckpt.get("ema") is not None:
            p.ema.module.load_state_dict(ckpt["ema"])
        p.swa.load_state_dict(ckpt.get("swa"))
        if p.scaler is not None and ckpt.get("scaler"):
            p.scaler.load_state_dict(ckpt["scaler"])
        p.schedule.resume(ckpt.get("scheduler"), [g["lr"] for g in ckpt["optimizer"]["param_groups"]])
        set_rng_state(ckpt["rng"])
        state = FoldState.from_checkpoint(ckpt)
        if self.main:
            log.info("fold %d: resuming from %s (epoch %d, step %d)", fold, last, state.epoch + 1, state.step)
            was, now = ckpt.get("precision"), describe_precision(self.cfg, p.device)
            if was and was != now:
                log.warning("fold %d: started with %s, resumes with %s on this machine: the run goes on, "
                            "but not bit-identically to an uninterrupted one", fold, was, now)
        return state

    # ------------------------------------------------------------------ writing
    def save_last(self, state: FoldState) -> None:
        if self.main:
            save_checkpoint(self.state_dict(state), self.fold_dir.last)
        self.saved_at = time.monotonic()

    def save_if_due(self, state: FoldState) -> None:
        """last.pt inside an epoch, every `checkpoint_minutes`."""
        minutes = self.cfg.checkpoint_minutes
        if minutes > 0 and time.monotonic() - self.saved_at >= minutes * 60:
            self.save_last(state)

    def save_best(self, state: FoldState, probs: np.ndarray, index: np.ndarray, targets: np.ndarray) -> None:
        """best.pt, then the best epoch's OOF pair committed as one set (outputs.write_set).
        probs (N, K) float32 validation probabilities, index (N,) their image indices."""
        if not self.main:
            return
        best = self.state_dict(state)
        best.pop("optimizer")
        best.pop("swa")  # only last.pt carries the running average
        save_checkpoint(best, self.fold_dir.best)
        fd = self.fold_dir
        write_set(fd.oof_set, {"oof": (fd.oof, probs.astype(np.float32)), "oof_index": (fd.oof_index, index)},
                  epoch=state.epoch, labels_sha256=labels_digest(targets))

    def save_epoch(self, state: FoldState, row: dict) -> None:
        """After an epoch: last.pt, its kept copy (`keep_last`), metrics.jsonl, TensorBoard."""
        self.saved_at = time.monotonic()
        if not self.main:
            return
        ckpt = self.state_dict(state)
        save_checkpoint(ckpt, self.fold_dir.last)
        keep = self.cfg.keep_last
        if keep > 0:
            save_checkpoint(ckpt, self.fold_dir.epoch_checkpoint(state.epoch))
            for old in self.fold_dir.epoch_checkpoints()[:-keep]:
                old.unlink()
        # rewritten whole from the checkpointed history, so a kill never leaves a torn or doubled line
        atomic_write_text(self.fold_dir.metrics, "".join(json.dumps(r) + "\n" for r in state.history))
        if self.cfg.tensorboard:
            self._tensorboard(row)

    def _tensorboard(self, row: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.fold_dir.tensorboard))
        for key in ("train_loss", "val_loss", "label_acc", "exact_match", "lr", "samples_per_s"):
            self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()


def load_resume_point(fold_dir: FoldDir) -> dict:
    """fold_dir's last.pt; when it is unreadable, the newest readable kept epoch*.pt instead
    (copied over it). When neither exists, the error names exactly which file to delete."""
    last, fold = fold_dir.last, fold_dir.fold
    try:
        return load_checkpoint(last)
    except ConfigError as exc:
        problem = str(exc).removeprefix(f"{last}: ")
    for kept in reversed(fold_dir.epoch_checkpoints()):
        try:
            ckpt = load_checkpoint(kept)
        except ConfigError:
            continue
        log.warning("fold %d: %s is %s; resuming from %s instead (copied over it)", fold, last,
                    problem, kept.name)
        with atomic_path(last) as tmp:
            shutil.copyfile(kept, tmp)
        return ckpt
    raise ConfigError(f"{last}: {problem}, and no readable epoch*.pt is kept beside it; delete "
                      f"{last} to train fold {fold} again from the start")
