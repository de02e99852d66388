"""A run folder's paths and their readers, in one place (every module goes through these).

    RUN/config.yaml            the config the run was made with
    RUN/run.json               the data folder (and cache, weights, averaged checkpoints) it used
    RUN/.lock                  held for a moment while a train records the run
    RUN/thresholds.json        per-letter thresholds fitted on the OOF rows (`dirtymnist thresholds`)
    RUN/oof.npy, oof_index.npy, oof_fold.npy   every fold's OOF rows gathered (several workers)
    RUN/report/report.html     `dirtymnist report`
    RUN/fold{k}/               one FoldDir per fold:
        best.pt last.pt averaged.pt swa.pt epoch{NNN}.pt   checkpoints
        oof.npy oof_index.npy oof.set.json                 its validation probabilities (a set)
        metrics.jsonl  tb/  .lock  .claim                  history, TensorBoard, writer lock, claim

Nothing here imports torch: the look commands and the data folder lookup stay light.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dirtymnist.errors import DataError

CHECKPOINT_NAMES = ("best", "last", "averaged", "swa")  # fold{k}/NAME.pt that predict can pick
_FOLD = re.compile(r"fold(\d+)$")


def fold_number(name: str) -> int:
    """A run folder's `fold3` -> 3 (anything else sorts last)."""
    m = _FOLD.match(name)
    return int(m.group(1)) if m else 1 << 30


@dataclass(frozen=True)
class FoldDir:
    """RUN/fold{k}: one fold's checkpoints, OOF set, metrics and locks."""

    path: Path
    fold: int

    def checkpoint(self, name: str = "best") -> Path:
        """best | last | averaged | swa -> fold{k}/NAME.pt"""
        return self.path / f"{name}.pt"

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    def epoch_checkpoint(self, epoch: int) -> Path:
        """The checkpoint kept after `epoch` finished epochs (`keep_last`)."""
        return self.path / f"epoch{epoch:03d}.pt"

    def epoch_checkpoints(self) -> list[Path]:
        """Kept epoch checkpoints, oldest first."""
        return sorted(self.path.glob("epoch*.pt"))

    oof = property(lambda self: self.path / "oof.npy")  # (N, 26) float32 validation probabilities
    oof_index = property(lambda self: self.path / "oof_index.npy")  # (N,) image index of each row
    oof_set = property(lambda self: self.path / "oof.set.json")  # manifest tying the two (outputs.write_set)
    metrics = property(lambda self: self.path / "metrics.jsonl")  # one JSON row per epoch
    tensorboard = property(lambda self: self.path / "tb")
    lock = property(lambda self: self.path / ".lock")  # held by the one process writing the fold
    claim = property(lambda self: self.path / ".claim")  # taken by the worker that trains the fold

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl rows ([] when absent; written whole and atomically by the train)."""
        if not self.metrics.is_file():
            return []
        rows = []
        for n, line in enumerate(self.metrics.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise DataError(f"{self.metrics}: line {n} is not JSON") from None
        return rows

    def read_oof(self):
        """(probs (N, C) float32, index (N,) int64) of the fold's validation rows, checked."""
        import numpy as np

        try:
            probs = np.load(self.oof, allow_pickle=False)
            index = np.load(self.oof_index, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable oof.npy / oof_index.npy ({exc})") from None
        if probs.ndim != 2 or index.shape != (len(probs),):
            raise DataError(f"{self.oof}: shape {probs.shape} does not match oof_index.npy {index.shape}")
        return probs, index


@dataclass(frozen=True)
class RunDir:
    """RUN: a run folder. `RunDir(path).fold(k)` is fold k; `.folds()` lists those present."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    config = property(lambda self: self.path / "config.yaml")
    record = property(lambda self: self.path / "run.json")
    lock = property(lambda self: self.path / ".lock")
    thresholds = property(lambda self: self.path / "thresholds.json")
    report = property(lambda self: self.path / "report" / "report.html")
    oof = property(lambda self: self.path / "oof.npy")  # gathered OOF of every fold
    oof_index = property(lambda self: self.path / "oof_index.npy")
    oof_fold = property(lambda self: self.path / "oof_fold.npy")

    def fold(self, k: int) -> FoldDir:
        return FoldDir(self.path / f"fold{int(k)}", int(k))

    def folds(self) -> list[FoldDir]:
        """The fold{k}/ folders present, in fold order."""
        if not self.path.is_dir():
            return []
        found = [self.fold(fold_number(p.name)) for p in self.path.iterdir()
                 if p.is_dir() and _FOLD.match(p.name)]
        return sorted(found, key=lambda f: f.fold)

    def checkpoints(self, name: str = "best") -> list[Path]:
        """Every fold's NAME.pt that exists, in fold order."""
        return [f.checkpoint(name) for f in self.folds() if f.checkpoint(name).is_file()]

    def read_config(self) -> dict:
        """config.yaml as a dict; a DataError naming the file when it is missing or unreadable."""
        import yaml

        if not self.config.is_file():
            raise DataError(f"{self.path}: not a run folder (no config.yaml)")
        try:
            config = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"{self.config}: unreadable YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(config, dict):
            raise DataError(f"{self.config}: expected a mapping of key: value")
        return config

    def read_record(self) -> dict:
        """run.json as a dict ({} when absent); a DataError naming the file when unreadable."""
        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.record}: not a readable JSON file ({exc}); delete it to record "
                            "the data folder again") from None
        return record if isinstance(record, dict) else {}

    def data_dir(self, override: str | os.PathLike | None = None) -> Path:
        """`override` if given, else the data folder the run recorded (run.json, or config.yaml of
        older runs); a DataError asking for --data when neither exists."""
        data_dir = override
        if data_dir is None:
            data_dir = self.read_record().get("data_dir")
        if data_dir is None and self.config.is_file():
            try:
                data_dir = self.read_config().get("data_dir")
            except DataError:
                data_dir = None
        if data_dir is None:
            raise DataError(f"{self.path}: the run does not record its data folder; pass --data DATA_DIR")
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataError(f"{data_dir}: data folder not found")
        return data_dir
