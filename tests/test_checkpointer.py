"""FoldState (train/checkpointer.py): what a checkpoint keeps of a fold's progress, the best
epoch, early stopping and the time limit."""

from __future__ import annotations

import pytest

from dirtymnist.config import load_config
from dirtymnist.train.checkpointer import FoldState


def _row(epoch: int, val_loss: float, label_acc: float, minutes: float = 0.5) -> dict:
    return {"epoch": epoch, "val_loss": val_loss, "label_acc": label_acc, "exact_match": 0.0,
            "data_time": 6.0 * minutes, "step_time": 54.0 * minutes, "samples": 100}


def test_the_state_round_trips_through_a_checkpoint_and_ignores_other_keys():
    state = FoldState()
    state.end_epoch(_row(1, 0.7, 0.6), "label_acc")
    state.step = 3
    ckpt = {"model": {}, "config": {}, **state.to_checkpoint()}
    assert list(state.to_checkpoint()) == ["epoch", "step", "best", "best_epoch", "history", "stale", "stopped", "refit"]
    assert FoldState.from_checkpoint(ckpt) == state
    assert FoldState.from_checkpoint({"model": {}, "epoch": 2}) == FoldState(epoch=2)  # an older checkpoint


@pytest.mark.parametrize("metric, best_epoch", [("label_acc", 2), ("loss", 1)])
def test_the_best_epoch_follows_best_metric(metric, best_epoch):
    state = FoldState()
    rows = [_row(1, 0.60, 0.70), _row(2, 0.65, 0.75), _row(3, 0.66, 0.74)]
    better = [state.end_epoch(r, metric) for r in rows]
    assert better == [True, best_epoch == 2, False]
    assert state.best == {k: rows[best_epoch - 1][k] for k in ("epoch", "val_loss", "label_acc", "exact_match")}
    assert (state.best_epoch, state.stale, state.epoch, state.step) == (best_epoch - 1, 3 - best_epoch, 3, 0)
    assert state.history == rows


def test_early_stopping_and_the_time_limit_name_their_reason():
    cfg = load_config(None, ["early_stopping=2", "best_metric=loss", "time_limit=0"])
    state = FoldState()
    reasons = []
    for epoch, loss in enumerate([0.5, 0.6, 0.4, 0.45, 0.47], 1):
        state.end_epoch(_row(epoch, loss, 0.5), cfg.best_metric)
        reasons.append(state.stop_reason(cfg))
    assert reasons[:4] == [None, None, None, None]
    assert reasons[4] == "early stop, no better loss for 2 epochs"
    timed = load_config(None, ["time_limit=1.2"])
    state = FoldState()
    state.end_epoch(_row(1, 0.5, 0.5, minutes=1.0), "label_acc")
    assert state.stop_reason(timed) is None and state.train_seconds == 60.0
    state.end_epoch(_row(2, 0.5, 0.5, minutes=0.5), "label_acc")
    assert state.stop_reason(timed) == "stopped at the time limit (1.5 min of training)"
    assert state.samples == 200


class _Payload:
    """Pickled, it would run `print` when unpickled: what a malicious checkpoint does."""

    def __reduce__(self):
        return (print, ("CODE FROM THE FILE RAN",))


def test_a_pickled_object_in_a_checkpoint_runs_nothing_and_is_one_line(tmp_path, capfd):
    import pickle
    import subprocess
    import sys

    path = tmp_path / "best.pt"
    path.write_bytes(pickle.dumps({"model": _Payload(), "config": {}}, protocol=4))
    proc = subprocess.run([sys.executable, "-m", "dirtymnist", "export", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "CODE FROM THE FILE RAN" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: not a readable checkpoint" in lines[0], proc.stderr
