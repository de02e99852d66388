"""One progress bar over a whole `run` job, with its ETA: folds, epochs and inference in one unit.

The unit is a step of work: one optimizer step of training, or one batch of one view through one
model at inference. The bar's total is known before training starts (the plan of every fold's
epochs, the inference settings' views), so tqdm's rate gives an ETA for the whole job. Training
advances it at every optimizer step (train's `on_step` hook, which only reads) and sets it at every
epoch's end (a resumed fold starts where its last.pt was); inference advances it when a setting is
done. On a terminal or in a notebook only (tqdm's `disable=None`): the log lines stay as they are.
"""

from __future__ import annotations

import math


class JobProgress:
    """The job-level bar; every method is a no-op when it is disabled (no terminal)."""

    def __init__(self, desc: str = "job"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc=desc, unit="step", disable=None, dynamic_ncols=True, position=0)
        self.fold_start: dict[int, int] = {}  # fold -> bar position of its first step
        self.epoch_steps: list[int] = []  # optimizer steps of each epoch of one fold

    def add(self, units: int) -> None:
        self.bar.total = (self.bar.total or 0) + int(units)
        self.bar.refresh()

    def set_step(self, name: str) -> None:
        self.bar.set_postfix_str(name, refresh=True)

    def advance(self, units: int) -> None:
        self.bar.update(int(units))

    def plan_training(self, folds: list[int], epoch_steps: list[int]) -> None:
        """Each of `folds` trains `epoch_steps` (steps of each epoch) in turn."""
        self.epoch_steps = list(epoch_steps)
        start = self.bar.n
        for i, f in enumerate(folds):
            self.fold_start[f] = start + i * sum(epoch_steps)
        self.add(len(folds) * sum(epoch_steps))

    def on_step(self, info) -> bool:
        """train's `on_step`: one more optimizer step (never stops training)."""
        if self.fold_start and self.bar.n < self._at(info.fold, info.epoch + 1):
            self.bar.update(1)
        return False

    def on_epoch(self, fold: int, epoch: int, row: dict) -> None:
        """train's `on_epoch`: the fold is at the end of `epoch` (0-based). A time budget's refit
        (`next_steps`) sets the epochs after it, of this fold and of the folds not yet started."""
        if "next_steps" in row and self.fold_start:
            self._refit(fold, epoch, int(row["next_steps"]))
        self._jump(self._at(fold, epoch + 1))

    def _refit(self, fold: int, epoch: int, steps: int) -> None:
        start = self.fold_start.get(fold, self.bar.n)
        old = sum(self.epoch_steps)
        self.epoch_steps[epoch + 1:] = [steps] * len(self.epoch_steps[epoch + 1:])
        delta, later = sum(self.epoch_steps) - old, sorted(f for f, s in self.fold_start.items() if s > start)
        for i, f in enumerate(later, 1):
            self.fold_start[f] += i * delta
        self.add(delta * (1 + len(later)))

    def fold_done(self, fold: int) -> None:
        self._jump(self._at(fold, len(self.epoch_steps)))

    def _at(self, fold: int, epochs: int) -> int:
        return self.fold_start.get(fold, self.bar.n) + sum(self.epoch_steps[:epochs])

    def _jump(self, n: int) -> None:
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def finish(self) -> None:
        """The job is done: the bar at its end (settings reserved but not predicted included)."""
        self._jump(self.bar.total or 0)

    def close(self) -> None:
        self.bar.close()


def inference_units(rows: int, views: int, models: int, batch_size: int) -> int:
    """Batches x views x models of one inference setting."""
    return math.ceil(rows / max(batch_size, 1)) * views * models
