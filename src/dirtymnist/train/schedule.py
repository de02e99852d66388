"""A fold's plan of epochs (curriculum stages) and the one object that sets its learning rate.

    plan = build_plan(cfg, data_batches)        # one EpochPlan per epoch: stage, source, steps, peak lr
    schedule = Schedule(cfg, optimizer, plan)
    schedule.resume(ckpt["scheduler"], lrs)     # a resumed fold: where the schedule had got to
    for epoch in ...:
        schedule.start_epoch(epoch, start_step) # a stage's first epoch: its schedule from its peak lr
        ... schedule.after_step()               # the engine, after each optimizer step
        schedule.after_epoch(val_loss)
        schedule.refit(epoch, steps)            # a time budget: the stage's later epochs set again

`scheduler`, per stage (each stage starts again from its own peak lr, `lr` or the stage's):
  cosine    linear warmup over `warmup_epochs`, then cosine down to `min_lr_ratio` x the peak
  constant  the same warmup, then flat
  step      StepLR(step_size, gamma), per epoch
  plateau   ReduceLROnPlateau(plateau_patience, plateau_factor) on the validation loss, per epoch
`scheduler_interval` (cosine, constant): step (the lr moves after each optimizer step) or epoch.
The torch scheduler's own state is what checkpoints keep (key `scheduler`).

A time-budgeted run (`run --minutes`) sets the length of a stage's later epochs again after each of
its epochs, from the rate the fold really ran at (`refit_steps`, `Schedule.refit`): a per-step
cosine is then bent where it is, its lr unchanged, to reach its floor at the stage's new end. The
refit (the steps and the bend) is kept in the fold's checkpoints, so a resumed fold runs the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class EpochPlan:
    """One epoch of the curriculum: which stage, its source, how many batches, its peak lr."""

    stage: int
    stage_epoch: int  # epoch number inside the stage
    stage_epochs: int
    source: str  # data | synth | dense | glyphs (stages.SOURCES)
    steps: int  # batches in this epoch
    lr: float
    knobs: dict
    pool: int = 0
    dense_weight: float = 1.0
    hard_share: float = 0.0  # share of each batch drawn with knobs + hard_knobs (sources.SynthBatches)
    hard_knobs: dict | None = None


def build_plan(cfg, data_batches: int) -> list[EpochPlan]:
    """Every epoch of the run: `cfg.stages` in order (one data stage of `cfg.epochs` when none).

    `data_batches`: batches of one full pass over the fold's training rows; a data-stage epoch
    takes `cfg.epoch_fraction` of them (at least one)."""
    if data_batches > 0 and cfg.epoch_fraction < 1:
        data_batches = max(1, math.floor(data_batches * cfg.epoch_fraction))
    stages = cfg.stages or [{"name": "main", "source": "data", "epochs": 0, "steps": 0, "lr": 0.0, "knobs": {}}]
    plan = []
    for i, s in enumerate(stages):
        epochs = s["epochs"] or (cfg.epochs if s["source"] == "data" else 1)
        steps = data_batches if s["source"] == "data" else s["steps"]
        for e in range(epochs):
            plan.append(EpochPlan(i, e, epochs, s["source"], steps, s["lr"] or cfg.lr, s["knobs"],
                                  s.get("pool", 0), s.get("dense_weight", 1.0),
                                  s.get("hard_share", 0.0), s.get("hard_knobs") or None))
    return plan


class Schedule:
    """Every learning-rate decision of one fold: a stage's start, each step, each epoch, resume."""

    def __init__(self, cfg, optimizer: torch.optim.Optimizer, plan: list[EpochPlan]):
        self.cfg, self.optimizer, self.plan = cfg, optimizer, plan
        self.scheduler = None  # torch's scheduler of the current stage
        self.bend: tuple[int, int, float] | None = None  # (stage, t0, progress at t0) of the last refit
        self._resumed: tuple[dict, list[float]] | None = None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def resume(self, state: dict | None, lrs: list[float]) -> None:
        """A checkpoint's scheduler state and the lr of each parameter group, for `start_epoch`
        to restore when the run resumes inside a stage (a stage that starts afresh ignores it)."""
        self._resumed = (state, lrs) if state is not None else None

    def start_epoch(self, epoch: int, start_step: int) -> None:
        """Before epoch `epoch` trains from batch `start_step`: at a stage's start (or the first
        epoch of this process) build the stage's schedule; mid-stage, restore the resumed one."""
        spec = self.plan[epoch]
        stage_start = spec.stage_epoch == 0 and start_step == 0
        if self.scheduler is not None and not stage_start:
            return
        self.scheduler = self._build(spec.stage)
        if self._resumed is not None and not stage_start:
            state, lrs = self._resumed
            self.scheduler.load_state_dict(state)
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
        self._resumed = None

    @property
    def per_step(self) -> bool:
        """Whether the lr moves after each optimizer step (else after each epoch)."""
        return self.cfg.scheduler in ("cosine", "constant") and self.cfg.scheduler_interval == "step"

    def after_step(self) -> None:
        """After an optimizer step (the engine calls this)."""
        if self.scheduler is not None and self.per_step:
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        """After an epoch's validation."""
        if self.scheduler is None or self.per_step:
            return
        if self.cfg.scheduler == "plateau":
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def refit(self, epoch: int, steps: int) -> dict | None:
        """After epoch `epoch`: the later epochs of its stage take `steps` batches each. A per-step
        cosine goes on from where it is (same lr, same progress) to its floor at the new end.
        Returns the refit to keep in the checkpoint (`apply_refit` restores it), None when no
        epoch of the stage is left."""
        stage = self.plan[epoch].stage
        later = [p for p in self.plan[epoch + 1:] if p.stage == stage]
        if not later:
            return None
        for p in later:
            p.steps = steps
        bend = None
        if self.scheduler is not None and self.per_step and self.cfg.scheduler == "cosine":
            t0 = self.scheduler.last_epoch
            old = self.scheduler.lr_lambdas[0]
            if t0 >= old.warm:  # inside the warmup the new length needs no bend
                bend = [t0, old.progress(t0)]
                self.bend = (stage, *bend)
            new = warmup_cosine(self.cfg, [p for p in self.plan if p.stage == stage], self._bend_of(stage))
            self.scheduler.lr_lambdas = [new] * len(self.optimizer.param_groups)
        return {"stage": stage, "after_epoch": epoch, "steps": steps, "bend": bend}

    def apply_refit(self, refit: dict | None) -> None:
        """A resumed fold: the refit its checkpoint kept (`refit`'s return), before `start_epoch`."""
        if not refit:
            return
        for p in self.plan[refit["after_epoch"] + 1:]:
            if p.stage == refit["stage"]:
                p.steps = refit["steps"]
        if refit["bend"]:
            self.bend = (refit["stage"], int(refit["bend"][0]), float(refit["bend"][1]))

    def _bend_of(self, stage: int) -> tuple[int, float] | None:
        return self.bend[1:] if self.bend is not None and self.bend[0] == stage else None

    def _build(self, stage: int):
        """The stage's torch scheduler, starting from its peak lr."""
        cfg, optimizer = self.cfg, self.optimizer
        epochs = [p for p in self.plan if p.stage == stage]
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = epochs[0].lr
        if cfg.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        if cfg.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg, epochs, self._bend_of(stage)))


def refit_steps(budget_s: float, rows: list[dict], epochs_left: int, batch_size: int, full_steps: int) -> int:
    """Batches of each of a stage's `epochs_left` later epochs so that the stage ends at `budget_s`
    seconds: `rows` are its finished epochs' metrics rows (seconds, samples, data_time, step_time);
    the last one gives the rate (seconds a batch) and what an epoch costs beside its batches
    (validation). Between one batch and a full pass (`full_steps`)."""
    last = rows[-1]
    train_s = last["data_time"] + last["step_time"]
    step_s = train_s / max(last["samples"] / batch_size, 1)
    other_s = max(0.0, last["seconds"] - train_s)
    per_epoch = (budget_s - sum(r["seconds"] for r in rows)) / max(epochs_left, 1)
    return int(min(full_steps, max(1, math.floor((per_epoch - other_s) / max(step_s, 1e-9)))))


def warmup_cosine(cfg, epochs: list[EpochPlan], bend: tuple[int, float] | None = None):
    """The lr factor of a cosine / constant stage at schedule position t (steps or epochs).

    `bend` (t0, p0): from step t0 the cosine's progress goes linearly from p0 to 1 at the stage's
    end (a refit length; the factor is continuous at t0). The function carries `warm` and
    `progress` for `Schedule.refit`."""
    per_step = cfg.scheduler_interval == "step"
    opt_steps = [math.ceil(p.steps / cfg.accum_steps) for p in epochs]
    total = sum(opt_steps) if per_step else len(epochs)
    warm = cfg.warmup_epochs * (opt_steps[0] if per_step else 1)
    floor = cfg.min_lr_ratio

    def progress(t: int) -> float:
        if bend is not None and t >= bend[0]:
            t0, p0 = bend
            return min(1.0, p0 + (1 - p0) * (t - t0) / max(1.0, total - t0))
        return min(1.0, max(0.0, t - warm) / max(1.0, total - warm))

    def factor(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        if cfg.scheduler == "constant":
            return 1.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress(t)))

    factor.warm, factor.progress = warm, progress
    return factor
