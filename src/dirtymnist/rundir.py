"""A run folder's paths and their readers, in one place (every module goes through these).

    RUN/config.yaml            the config the run was made with
    RUN/run.json               the data folder (and cache, weights, averaged checkpoints) it used
    RUN/.lock                  held for a moment while a train records the run
    RUN/thresholds.json        per-letter thresholds fitted on the OOF rows (`dirtymnist thresholds`)
    RUN/tracking.json          the MLflow run it logs to (`tracking: mlflow`)
    RUN/oof.npy, oof_index.npy, oof_fold.npy   every fold's OOF rows gathered (several workers)
    RUN/report/report.html     `dirtymnist report`
    RUN/fold{k}/               one FoldDir per fold:
        best.pt last.pt averaged.pt swa.pt epoch{NNN}.pt   checkpoints
        oof.npy oof_index.npy oof.set.json                 its validation probabilities (a set)
        metrics.jsonl  tb/  .lock  .claim                  history, TensorBoard, writer lock, claim

A RUN argument of the inference commands is a run folder or one model file: `model_files`
turns it into the model files to load (`fold{k}/NAME.pt`, the `.onnx` export beside each, or
an `export --out` folder of `fold{k}[_NAME].onnx`); `model_name` names a checkpoint outside
its run (`fold0`, `fold0_swa`).

Nothing here imports torch: the look commands and the data folder lookup stay light.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dirtymnist.errors import ConfigError, DataError

CHECKPOINT_NAMES = ("best", "last", "averaged", "swa")  # fold{k}/NAME.pt that predict can pick
_CONFIG = "config.yaml"
_FOLD = re.compile(r"fold(\d+)$")
_EPOCH = re.compile(r"epoch(\d+)\.pt$")
_HINTS = {"averaged": "; run `dirtymnist average` first", "swa": "; train with --set swa_epochs=N"}


def fold_number(name: str) -> int:
    """A run folder's `fold3` -> 3 (anything else sorts last)."""
    m = _FOLD.match(name)
    return int(m.group(1)) if m else 1 << 30


@dataclass(frozen=True)
class FoldDir:
    """RUN/fold{k}: one fold's checkpoints, OOF set, metrics and locks."""

    path: Path
    fold: int

    OOF_SET = "oof.set.json"  # the manifest's name (thresholds.OOF_SET for train/ until it uses oof_set)

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
        return sorted(p for p in self.path.glob("epoch*.pt") if _EPOCH.match(p.name))

    @staticmethod
    def epoch_of(checkpoint: Path) -> int:
        """`epoch007.pt` -> 7: the epochs finished when the kept checkpoint was written."""
        m = _EPOCH.match(Path(checkpoint).name)
        if not m:
            raise ValueError(f"{checkpoint}: not a kept epoch checkpoint")
        return int(m.group(1))

    oof = property(lambda self: self.path / "oof.npy")  # (N, 26) float32 validation probabilities
    oof_index = property(lambda self: self.path / "oof_index.npy")  # (N,) image index of each row
    oof_set = property(lambda self: self.path / self.OOF_SET)  # manifest tying the two (outputs.write_set)
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
        """(probs (N, C) float32, index (N,) int64) of the fold's validation rows, checked: the
        two files must be the pair its manifest committed (not two epochs' halves)."""
        import numpy as np

        from dirtymnist.outputs import verify_set

        verify_set(self.oof_set, f"run the train of {self.path.name} again to finish it")
        try:
            probs = np.load(self.oof, allow_pickle=False)
            index = np.load(self.oof_index, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable {self.oof.name} / {self.oof_index.name} ({exc})") from None
        if probs.ndim != 2 or index.shape != (len(probs),):
            raise DataError(f"{self.oof}: shape {probs.shape} does not match {self.oof_index.name} {index.shape}")
        return probs.astype(np.float32), index.astype(np.int64)


@dataclass(frozen=True)
class RunDir:
    """RUN: a run folder. `RunDir(path).fold(k)` is fold k; `.folds()` lists those present."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # messages name the folder
        return str(self.path)

    config = property(lambda self: self.path / _CONFIG)
    record = property(lambda self: self.path / "run.json")
    lock = property(lambda self: self.path / ".lock")
    thresholds = property(lambda self: self.path / "thresholds.json")
    tracking = property(lambda self: self.path / "tracking.json")  # {"uri", "run_id"} of its MLflow run
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

    def read_oof(self, folds: Iterable[int] | None = None):
        """The OOF rows of `folds` (default: every fold that has them) gathered in fold order:
        (probs (N, C) float32, index (N,) int64, fold (N,) int64 of each row). A ConfigError
        when no fold has them yet, a DataError when two folds share rows or a fold's pair is
        torn or missing (`FoldDir.read_oof`)."""
        import numpy as np

        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: run directory not found")
        if folds is None:
            folds = [f for f in self.folds() if f.oof.is_file()]
        else:
            folds = [self.fold(k) for k in folds]
        if not folds:
            raise ConfigError(f"{self.path}: no fold*/oof.npy files (train at least one fold first)")
        parts = [f.read_oof() for f in folds]
        index = np.concatenate([i for _, i in parts])
        if len(np.unique(index)) != len(index):
            raise DataError(f"{self.path}: OOF files of different folds share rows (folds of another split?)")
        fold_of = np.concatenate([np.full(len(i), f.fold, dtype=np.int64) for f, (_, i) in zip(folds, parts)])
        return np.concatenate([p for p, _ in parts]), index, fold_of

    def model_files(self, checkpoint: str = "best", engine: str = "torch") -> list[Path]:
        """The run's models: every fold's CHECKPOINT.pt (engine="torch") or the `.onnx` file
        `export` wrote beside each (engine="onnx"; an `export --out` folder of `.onnx` files
        also works). A ConfigError naming the folder when there are none.

        checkpoint: best | last | averaged (`dirtymnist average`) | swa (`swa_epochs`).
        """
        if checkpoint not in CHECKPOINT_NAMES:
            raise ConfigError(f"--checkpoint {checkpoint!r}; choose from {', '.join(CHECKPOINT_NAMES)}")
        found = self.checkpoints(checkpoint)
        if not found and engine == "onnx":
            found = self.exported(checkpoint)
        if not found:
            raise ConfigError(f"{self.path}: no fold*/{checkpoint}.pt checkpoints"
                              f"{_HINTS.get(checkpoint, ' (not a run directory?)')}")
        return _onnx_beside(found, self.path) if engine == "onnx" else found

    def exported(self, checkpoint: str = "best") -> list[Path]:
        """An `export --out` folder's models of one checkpoint kind: fold0.onnx, fold1.onnx, ...
        (best) or fold0_swa.onnx, ... (the `model_name`s of the checkpoints), by name."""
        others = tuple(f"_{k}" for k in CHECKPOINT_NAMES if k != "best")
        if checkpoint == "best":
            return sorted(p for p in self.path.glob("*.onnx") if not p.stem.endswith(others))
        return sorted(p for p in self.path.glob("*.onnx") if p.stem.endswith(f"_{checkpoint}"))

    @classmethod
    def find(cls, root: str | os.PathLike) -> list[RunDir]:
        """Every run folder under `root` (itself included): a config.yaml beside fold{k}/ folders."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        found = [cls(p.parent) for p in root.rglob(_CONFIG)]
        return sorted((r for r in found if r.folds()), key=lambda r: r.path)

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
        if not self.record.is_file():  # no record yet, or RUN is one checkpoint file
            return {}
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


# --------------------------------------------------------------------------- a RUN argument
def model_files(run: str | os.PathLike, engine: str = "torch", checkpoint: str = "best") -> list[Path]:
    """The model files of one RUN argument: a run folder's (`RunDir.model_files`) or the file
    itself; with engine="onnx" a `.pt` file stands for the `.onnx` export beside it."""
    run = Path(run)
    if not run.exists():
        raise ConfigError(f"{run}: no such run directory or checkpoint")
    if run.is_dir():
        return RunDir(run).model_files(checkpoint, engine)
    return _onnx_beside([run], run) if engine == "onnx" else [run]


def model_name(checkpoint: Path) -> str:
    """A checkpoint's name outside its run: `fold0/best.pt` -> fold0, `fold0/averaged.pt` ->
    fold0_averaged, `x.pt` -> x (export --out and package name their files so)."""
    checkpoint = Path(checkpoint)
    fold = checkpoint.parent.name
    if not _FOLD.match(fold):
        return checkpoint.stem
    return fold if checkpoint.stem == "best" else f"{fold}_{checkpoint.stem}"


def onnx_file(checkpoint: Path, out_dir: str | os.PathLike | None = None) -> Path:
    """Where `export` writes a checkpoint's ONNX model: beside it (`fold0/best.onnx`), or
    `OUT/<model_name>.onnx` with an out folder (`OUT/fold0.onnx`, `OUT/fold0_swa.onnx`)."""
    checkpoint = Path(checkpoint)
    if out_dir is None:
        return checkpoint.with_suffix(".onnx")
    return Path(out_dir) / f"{model_name(checkpoint)}.onnx"


def _onnx_beside(found: list[Path], run: Path) -> list[Path]:
    onnx = [p if p.suffix == ".onnx" else onnx_file(p) for p in found]
    for p in onnx:
        if not p.is_file():
            raise ConfigError(f"{p}: ONNX model not found; run `dirtymnist export {run}` first")
    return onnx
