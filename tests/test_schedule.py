"""The one learning-rate schedule (train/schedule.py): every scheduler, per step and per epoch,
per stage, and the lr after a resume in the middle of a stage."""

from __future__ import annotations

import math

import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.train.schedule import Schedule, build_plan

STAGES = ("stages=[{name: a, source: synth, steps: 10, epochs: 2, lr: 0.01},"
          " {name: b, source: data, epochs: 3, lr: 0.002}]")
DATA_BATCHES = 6  # batches per epoch of the data stage


def _cfg(*overrides):
    return load_config(None, [STAGES, "lr=0.001", "warmup_epochs=0.5", "min_lr_ratio=0.1", *overrides])


def _schedule(cfg):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.lr)
    return Schedule(cfg, optimizer, build_plan(cfg, DATA_BATCHES))


def _run(schedule, val_losses=None, start=(0, 0), stop=None) -> list[float]:
    """The lr of every optimizer step from (epoch, step) `start` to the end (or `stop`)."""
    lrs = []
    plan = schedule.plan
    for epoch in range(start[0], len(plan)):
        first = start[1] if epoch == start[0] else 0
        schedule.start_epoch(epoch, first)
        for step in range(first, plan[epoch].steps):
            if stop == (epoch, step):
                return lrs
            lrs.append(schedule.lr)
            schedule.optimizer.step()
            schedule.after_step()
        schedule.after_epoch(val_losses[epoch] if val_losses else 1.0)
    return lrs


def _cosine(peak, t, warm, total, floor=0.1):
    if t < warm:
        return peak * (t + 1) / warm
    progress = min(1.0, (t - warm) / max(1.0, total - warm))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_cosine_warms_up_and_anneals_each_stage_per_step():
    lrs = _run(_schedule(_cfg("scheduler=cosine")))
    # stage a: 2 epochs x 10 steps from lr 0.01, warmup half an epoch (5 steps); stage b: 3 x 6 from 0.002
    want = [_cosine(0.01, t, 5, 20) for t in range(20)] + [_cosine(0.002, t, 3, 18) for t in range(18)]
    assert lrs == pytest.approx(want, rel=1e-12)
    assert lrs[4] == pytest.approx(0.01) and lrs[0] == pytest.approx(0.002)  # the peak after the warmup
    assert lrs[20] == pytest.approx(0.002 / 3)  # stage b starts its own warmup


def test_constant_is_flat_after_the_warmup():
    lrs = _run(_schedule(_cfg("scheduler=constant")))
    assert lrs[:5] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01])
    assert lrs[5:20] == [pytest.approx(0.01)] * 15 and lrs[23:] == [pytest.approx(0.002)] * 15


def test_epoch_interval_moves_the_lr_only_between_epochs():
    cfg = _cfg("scheduler=cosine", "scheduler_interval=epoch", "warmup_epochs=1")
    lrs = _run(_schedule(cfg))
    per_epoch = [lrs[0], lrs[10], lrs[20], lrs[26], lrs[32]]
    assert lrs[:10] == [per_epoch[0]] * 10 and lrs[20:26] == [per_epoch[2]] * 6
    assert per_epoch == pytest.approx([_cosine(0.01, 0, 1, 2), _cosine(0.01, 1, 1, 2),
                                       _cosine(0.002, 0, 1, 3), _cosine(0.002, 1, 1, 3), _cosine(0.002, 2, 1, 3)])


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_step_decays_by_gamma_every_step_size_epochs(interval):
    """Per epoch whatever `scheduler_interval` says (it once also stepped per batch: the `seed`
    preset's lr then fell by 0.75 every 5 batches instead of every 5 epochs)."""
    cfg = _cfg("scheduler=step", f"scheduler_interval={interval}", "step_size=2", "gamma=0.5", "stages=[]", "epochs=5")
    lrs = _run(_schedule(cfg))
    assert [lrs[e * DATA_BATCHES] for e in range(5)] == pytest.approx([0.001, 0.001, 0.0005, 0.0005, 0.00025])
    assert lrs[:DATA_BATCHES] == [pytest.approx(0.001)] * DATA_BATCHES  # nothing moves inside an epoch


def test_plateau_halves_the_lr_after_patience_epochs_without_a_better_val_loss():
    cfg = _cfg("scheduler=plateau", "plateau_patience=1", "plateau_factor=0.5", "stages=[]", "epochs=7")
    losses = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.9]
    lrs = _run(_schedule(cfg), losses)
    # bad epochs: 3rd (1 <= patience), 4th (2 > patience: halve after it), 6th, 7th (halve after it)
    assert [lrs[e * DATA_BATCHES] for e in range(7)] == pytest.approx(
        [0.001, 0.001, 0.001, 0.001, 0.0005, 0.0005, 0.0005])
    assert len(set(lrs[:DATA_BATCHES])) == 1  # steps never move a plateau schedule


@pytest.mark.parametrize("scheduler", ["cosine", "constant", "step", "plateau"])
@pytest.mark.parametrize("stop", [(0, 7), (1, 0), (1, 3), (3, 2), (2, 0)])
def test_the_lr_after_a_resume_equals_an_uninterrupted_runs(scheduler, stop):
    """Stop at (epoch, step), save what a checkpoint keeps, resume in a new process-like set-up."""
    cfg = _cfg(f"scheduler={scheduler}", "step_size=1", "gamma=0.7", "plateau_patience=0")
    losses = [1.0, 1.1, 1.2, 0.9, 1.3]
    whole = _run(_schedule(cfg), losses)

    first = _schedule(cfg)
    before = _run(first, losses, stop=stop)
    saved, lrs = first.state_dict(), [g["lr"] for g in first.optimizer.param_groups]
    optimizer_state = first.optimizer.state_dict()

    again = _schedule(cfg)  # the optimizer comes back first (its lr is overwritten by the stage's peak)
    again.optimizer.load_state_dict(optimizer_state)
    again.resume(saved, lrs)
    after = _run(again, losses, start=stop)
    assert before + after == whole


# --------------------------------------------------------------------------- a time budget's refit
def test_a_refit_bends_the_cosine_where_it_is_and_ends_it_at_the_floor():
    """After stage b's first epoch its two later epochs take 10 batches instead of 6: the lr goes on
    from where it was (no jump), falls monotonically and reaches the floor on the new last step."""
    cfg = _cfg("scheduler=cosine")
    schedule = _schedule(cfg)
    lrs, plan = [], schedule.plan
    for epoch in range(len(plan)):
        schedule.start_epoch(epoch, 0)
        for _ in range(plan[epoch].steps):
            lrs.append(schedule.lr)
            schedule.optimizer.step()
            schedule.after_step()
        schedule.after_epoch(1.0)
        if epoch == 2:  # stage b's first epoch: 6 steps done of 18 planned
            before = schedule.lr
            refit = schedule.refit(epoch, 10)
            assert schedule.lr == before and [p.steps for p in plan[3:]] == [10, 10]
            assert refit == {"stage": 1, "after_epoch": 2, "steps": 10, "bend": [6, pytest.approx((6 - 3) / 15)]}
    b = lrs[20:]
    assert len(b) == 26 and b[:6] == pytest.approx([_cosine(0.002, t, 3, 18) for t in range(6)])
    assert all(x >= y for x, y in zip(b[3:], b[4:]))  # after the warmup: down, never up
    assert b[6] == pytest.approx(_cosine(0.002, 6, 3, 18))  # continuous at the bend
    p0 = 3 / 15
    last = p0 + (1 - p0) * (25 - 6) / (26 - 6)
    assert b[-1] == pytest.approx(0.002 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * last))))
    assert schedule.refit(4, 3) is None  # the stage's last epoch: nothing left to set


def test_a_resumed_refit_runs_the_same_lrs():
    cfg = _cfg("scheduler=cosine")
    whole = _schedule(cfg)
    _run(whole, stop=(3, 0))
    refit = whole.refit(2, 10)  # as train does after the epoch's validation (stop=(3, 0): after epoch 2)
    after_whole = _run(whole, start=(3, 0))

    first = _schedule(cfg)
    _run(first, stop=(3, 0))
    first.refit(2, 10)
    _run(first, start=(3, 0), stop=(3, 4))  # then killed at epoch 3 step 4
    saved, lrs = first.state_dict(), [g["lr"] for g in first.optimizer.param_groups]
    again = _schedule(cfg)
    again.optimizer.load_state_dict(first.optimizer.state_dict())
    again.resume(saved, lrs)
    again.apply_refit(refit)  # what the checkpoint kept
    assert [p.steps for p in again.plan[3:]] == [10, 10]
    assert _run(again, start=(3, 4)) == pytest.approx(after_whole[4:], rel=1e-12)


def test_refit_steps_fill_the_budget_at_the_rate_the_epoch_ran():
    from dirtymnist.train.schedule import refit_steps

    # the first epoch: 50 batches of 8 in 20 s (0.4 s a batch) plus 10 s of validation: 30 s
    rows = [{"seconds": 30.0, "samples": 400, "data_time": 2.0, "step_time": 18.0}]
    # 150 s in all: 120 left for 2 epochs, 60 each: 10 s validation + 125 batches ... at most a full pass
    assert refit_steps(150, rows, 2, 8, 1000) == 125
    assert refit_steps(150, rows, 2, 8, 100) == 100  # never past a full pass
    assert refit_steps(20, rows, 2, 8, 100) == 1  # over budget already: the least
