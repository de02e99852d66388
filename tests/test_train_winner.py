"""A tiny run of the `winner` path: plateau scheduler, early stopping that stops, keep_last, TensorBoard.

The preset shrunk to a test backbone at 32 px on a few dozen random images; each check is
computed from the run's own metrics, so it fails if any of these parts does not do its job.
"""

from __future__ import annotations

from importlib.util import find_spec

import pytest
from conftest import write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.config import load_config
from dirtymnist.model.checkpoint import load_checkpoint
from dirtymnist.rundir import RunDir

EPOCHS, PATIENCE, STOP_AFTER, KEEP = 12, 1, 3, 2
SHRINK = ["model=test_resnet", "pretrained=", "image_size=32", "batch_size=8", f"epochs={EPOCHS}",
          f"plateau_patience={PATIENCE}", f"early_stopping={STOP_AFTER}", f"keep_last={KEEP}"]
HAS_TENSORBOARD = find_spec("tensorboard") is not None  # a dev dependency; the run logs to it when there


def _argv(data, run):
    argv = ["train", str(data), "--preset", "winner", "--run-dir", str(run)]
    for item in [*SHRINK, *(["tensorboard=true"] if HAS_TENSORBOARD else [])]:
        argv += ["--set", item]
    return argv


@pytest.fixture(scope="module")
def winner_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("winner")
    data = write_dataset(root / "data", n_train=40, n_test=2)
    run = RunDir(root / "run")
    assert cli_main(_argv(data, run.path)) == 0
    return data, run, run.fold(0).read_metrics()


def _plateau_lrs(losses, lr, factor, patience):
    """ReduceLROnPlateau's rule (mode min, relative threshold 1e-4), epoch by epoch."""
    best, bad, out = float("inf"), 0, []
    for loss in losses:
        if loss < best * (1 - 1e-4):
            best, bad = loss, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = lr * factor, 0
        out.append(lr)
    return out


def test_the_preset_is_the_winner_path():
    cfg = load_config("winner", SHRINK)
    assert (cfg.scheduler, cfg.best_metric, cfg.loss, cfg.optimizer) == ("plateau", "loss", "softmargin", "adam")


def test_early_stopping_stops_after_patience_epochs_without_a_better_val_loss(winner_run):
    data, run, rows = winner_run
    losses = [r["val_loss"] for r in rows]
    stale, stop_at = 0, None
    for epoch, loss in enumerate(losses, 1):
        stale = 0 if loss < min(losses[:epoch - 1], default=float("inf")) else stale + 1
        if stale >= STOP_AFTER:
            stop_at = epoch
            break
    assert stop_at is not None and len(rows) == stop_at < EPOCHS
    last = load_checkpoint(run.fold(0).last)
    assert last["stopped"] and last["epoch"] == len(rows)
    best = load_checkpoint(run.fold(0).best)
    assert best["best"]["epoch"] == losses.index(min(losses)) + 1
    # the same command again: the fold is finished, nothing is trained or rewritten
    before = run.fold(0).metrics.read_bytes()
    assert cli_main(_argv(data, run.path)) == 0
    assert run.fold(0).metrics.read_bytes() == before


def test_the_plateau_scheduler_halves_the_lr_when_val_loss_stalls(winner_run):
    _, _, rows = winner_run
    cfg = load_config("winner", SHRINK)
    want = _plateau_lrs([r["val_loss"] for r in rows], cfg.lr, cfg.plateau_factor, PATIENCE)
    assert [r["lr"] for r in rows] == pytest.approx(want, rel=1e-12)
    assert want[-1] < cfg.lr  # the run did reach a reduction


def test_keep_last_keeps_exactly_the_newest_epoch_checkpoints(winner_run):
    _, run, rows = winner_run
    kept = run.fold(0).epoch_checkpoints()
    n = len(rows)
    assert n > KEEP and [p.name for p in kept] == [f"epoch{e:03d}.pt" for e in range(n - KEEP + 1, n + 1)]
    assert [load_checkpoint(p)["epoch"] for p in kept] == list(range(n - KEEP + 1, n + 1))


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")
def test_tensorboard_holds_every_epochs_metrics(winner_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, rows = winner_run
    events = EventAccumulator(str(run.fold(0).tensorboard))
    events.Reload()
    for key in ("train_loss", "val_loss", "label_acc", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["epoch"] for r in rows]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)
