"""Per-letter thresholds fitted on out-of-fold probabilities, and count-aware decoding.

    dirtymnist thresholds RUN --data DATA_DIR     # writes RUN/thresholds.json

Label accuracy is a mean over letters of per-letter accuracies, and letter j's threshold only
moves column j, so a coordinate search over letters is exact after one pass: each letter gets
the grid value that maximises its own OOF accuracy (ties go to the value nearest 0.5, so fitting
never does worse than 0.5 on the OOF rows). Count-aware decoding uses that every image holds
10-14 letters: take the letters above their threshold, but at least 10 and at most 14, ranked
by margin (probability minus threshold; with one threshold that is ranking by probability).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.infer.ensemble import combine
from dirtymnist.outputs import labels_digest
from dirtymnist.rundir import RunDir

log = logging.getLogger(__name__)

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # 0.05, 0.10, ..., 0.95
DECODES = ("threshold", "count")


@dataclass
class Thresholds:
    """One threshold per letter (26,) and how to decode with them."""

    values: np.ndarray  # (26,) float
    decode: str = "threshold"  # threshold | count
    source: str = "0.5"

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """(N, 26) probabilities -> (N, 26) uint8 0/1."""
        return decode(probs, self.values, self.decode)

    def to_dict(self) -> dict:
        """{"thresholds": {letter: value}, "decode": ...}: what `load_thresholds` reads back
        (thresholds.json, a package's settings.json)."""
        return {"thresholds": dict(zip(layout.LETTERS, (float(v) for v in self.values))), "decode": self.decode}


@dataclass
class FitReport:
    thresholds: Thresholds
    rows: int  # OOF rows used
    acc_at_half: float  # OOF label accuracy, threshold 0.5
    acc_fitted: float  # fitted thresholds, threshold decoding
    acc_count_half: float  # threshold 0.5, count-aware decoding
    acc_count_fitted: float  # fitted thresholds, count-aware decoding
    path: Path | None = None

    @property
    def acc_chosen(self) -> float:
        return self.acc_count_fitted if self.thresholds.decode == "count" else self.acc_fitted

    def to_dict(self) -> dict:
        return {
            **self.thresholds.to_dict(),
            "method": f"per-letter grid search over {GRID[0]:.2f}..{GRID[-1]:.2f} step 0.05 on the "
                      "out-of-fold probabilities of all folds (no TTA); decode chosen on the same rows",
            "count_range": [layout.MIN_LETTERS, layout.MAX_LETTERS],
            "oof_rows": self.rows,
            "oof_label_acc": {
                "threshold_0.5": self.acc_at_half,
                "threshold_fitted": self.acc_fitted,
                "count_0.5": self.acc_count_half,
                "count_fitted": self.acc_count_fitted,
                "chosen": self.acc_chosen,
            },
        }


# --------------------------------------------------------------------------- decoding
def decode(probs: np.ndarray, thresholds, mode: str = "threshold") -> np.ndarray:
    """(N, K) probabilities -> (N, K) uint8: p > t per letter (strict), or count-aware decoding."""
    probs = np.asarray(probs)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (probs.shape[1],))
    if mode == "threshold":
        return (probs > t).astype(np.uint8)
    if mode == "count":
        return decode_count(probs, t)
    raise ConfigError(f"decode={mode!r}; choose from {', '.join(DECODES)}")


def decode_count(probs: np.ndarray, thresholds, lo: int = layout.MIN_LETTERS,
                 hi: int = layout.MAX_LETTERS) -> np.ndarray:
    """Letters above threshold, the count clamped into [lo, hi] by margin rank. (N, K) uint8."""
    probs = np.asarray(probs, dtype=np.float64)
    margin = probs - np.asarray(thresholds, dtype=np.float64)  # (N, K); > 0 means above
    n_keep = np.clip((margin > 0).sum(axis=1), lo, hi)  # (N,)
    order = np.argsort(-margin, axis=1, kind="stable")  # best first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(probs.shape[1]), probs.shape), axis=1)
    return (rank < n_keep[:, None]).astype(np.uint8)


# --------------------------------------------------------------------------- fitting
def fit_per_letter(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """(26,) thresholds: per letter, the grid value with the best OOF accuracy (ties: nearest 0.5)."""
    probs, targets = np.asarray(probs), np.asarray(targets).astype(bool)
    # (G, N, K) would be big for 50,000 rows; loop over the grid instead, (G, K) accuracies.
    from tqdm.auto import tqdm

    # a terminal bar only (disable=None): 50,000 rows take a while per grid value
    acc = np.stack([((probs > t) == targets).mean(axis=0)
                    for t in tqdm(grid, desc="thresholds", unit="value", leave=False, disable=None)])
    # prefer the best accuracy, then the smallest distance to 0.5 (argmax takes the first)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")
    best = order[np.argmax(acc[order], axis=0)]
    return grid[best].astype(np.float64)


def fit(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray = GRID) -> FitReport:
    """Fit thresholds on (N, 26) OOF probabilities and pick the decoding that scores best."""
    from dirtymnist.metrics import label_accuracy

    targets = np.asarray(targets).astype(np.uint8)
    t = fit_per_letter(probs, targets, grid)
    half = np.full(probs.shape[1], 0.5)
    acc = {
        "half": label_accuracy(decode(probs, half), targets),
        "fitted": label_accuracy(decode(probs, t), targets),
        "count_half": label_accuracy(decode(probs, half, "count"), targets),
        "count_fitted": label_accuracy(decode(probs, t, "count"), targets),
    }
    mode = "count" if acc["count_fitted"] > acc["fitted"] else "threshold"
    return FitReport(Thresholds(t, mode, "fit"), len(probs), acc["half"], acc["fitted"],
                     acc["count_half"], acc["count_fitted"])


# --------------------------------------------------------------------------- OOF files
def load_oof(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """All folds' OOF files of a run: (probs float32 (N, 26), index int64 (N,))."""
    probs, index, _ = RunDir(run_dir).read_oof()
    if probs.shape[1] != len(layout.LETTERS):
        raise DataError(f"{run_dir}: out-of-fold probabilities of shape {probs.shape}, expected (N, {len(layout.LETTERS)})")
    return probs, index


def ensemble_oof(run_dirs: Sequence[str | os.PathLike], weights: Sequence[float] | None = None,
                 average: str = "prob") -> tuple[np.ndarray, np.ndarray]:
    """OOF probabilities of an ensemble of runs, on the rows every run has, ordered by index."""
    loaded = [load_oof(r) for r in run_dirs]
    common = loaded[0][1]
    for _, idx in loaded[1:]:
        common = np.intersect1d(common, idx)
    common = np.sort(common)
    if len(common) == 0:
        raise ConfigError(f"runs {', '.join(map(str, run_dirs))} share no OOF rows (other folds or data)")
    from dirtymnist.submission import align_to

    aligned = [align_to(idx, p, common) for p, idx in loaded]
    return combine(aligned, weights, average), common


def oof_targets(data_dir: str | os.PathLike, index: np.ndarray) -> np.ndarray:
    """Labels (N, 26) uint8 of training images `index`, from the answer CSV."""
    from dirtymnist.data.dataset import DataPaths, read_label_csv
    from dirtymnist.submission import align_to

    paths = DataPaths.from_root(data_dir)
    table = read_label_csv(paths.train_csv)
    unknown = np.setdiff1d(index, table.index)
    if len(unknown):
        raise DataError(f"{paths.train_csv}: has no labels for {len(unknown)} OOF rows "
                        f"(e.g. {unknown[:3].tolist()}); is this the run's data folder?")
    return align_to(table.index, table.labels, index)


def check_oof_labels(run_dir: str | os.PathLike, data_dir: str | os.PathLike) -> None:
    """Refuse a data folder whose labels for a fold's OOF rows are not those it was trained on."""
    for fold in RunDir(run_dir).folds():
        try:
            digest = json.loads(fold.oof_set.read_text(encoding="utf-8")).get("labels_sha256")
        except (OSError, ValueError):
            continue  # none (older runs), or unreadable: load_oof names it
        if not digest:
            continue
        index = np.load(fold.oof_index, allow_pickle=False)
        if labels_digest(oof_targets(data_dir, index)) != digest:
            raise DataError(f"{fold.oof_set}: {data_dir} labels this fold's out-of-fold rows differently "
                            "from the data it was trained on; pass the run's own --data, or retrain the fold")


def fit_thresholds(run_dir: str | os.PathLike, data_dir: str | os.PathLike,
                   out: str | os.PathLike | None = None) -> FitReport:
    """Fit a run's thresholds on its OOF rows; write `RUN/thresholds.json` (or `out`)."""
    if out:
        from dirtymnist.outputs import check_output_path

        check_output_path(out)
    probs, index = load_oof(run_dir)
    check_oof_labels(run_dir, data_dir)
    report = fit(probs, oof_targets(data_dir, index))
    report.path = Path(out) if out else RunDir(run_dir).thresholds
    save_thresholds(report.path, report)
    return report


# --------------------------------------------------------------------------- files and specs
def save_thresholds(path: str | os.PathLike, report: FitReport) -> None:
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")


def load_thresholds(path: str | os.PathLike) -> Thresholds:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: thresholds file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from None
    table = data.get("thresholds") if isinstance(data, dict) else None
    if not isinstance(table, dict) or sorted(table) != sorted(layout.LETTERS):
        raise ConfigError(f"{path}: needs 'thresholds' with one number per letter a-z")
    values = np.array([table[letter] for letter in layout.LETTERS], dtype=np.float64)
    if not ((values > 0) & (values < 1)).all():
        raise ConfigError(f"{path}: thresholds must lie strictly between 0 and 1")
    mode = data.get("decode", "threshold")
    if mode not in DECODES:
        raise ConfigError(f"{path}: decode={mode!r}; choose from {', '.join(DECODES)}")
    return Thresholds(values, mode, str(path))


def run_thresholds(run: str | os.PathLike) -> Thresholds:
    """The thresholds a submission of RUN uses by default: RUN/thresholds.json when the run
    has one (`dirtymnist thresholds`), else 0.5 for every letter (also for a checkpoint file)."""
    path = RunDir(run).thresholds
    return load_thresholds(path) if path.is_file() else Thresholds(np.full(len(layout.LETTERS), 0.5))


def parse_thresholds(spec: str | float | Thresholds, runs: Sequence[str | os.PathLike] = (),
                     data_dir: str | os.PathLike | None = None, weights=None,
                     average: str = "prob") -> Thresholds:
    """`0.5` / any number / a thresholds.json path / `fit` (on the runs' OOF files) -> Thresholds.

    A number may carry `:count` for count-aware decoding, e.g. `0.5:count`.
    """
    if isinstance(spec, Thresholds):
        return spec
    text = str(spec).strip()
    mode = "threshold"
    if text.endswith(":count"):
        text, mode = text.removesuffix(":count"), "count"
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not 0 < value < 1:
            raise ConfigError(f"--thresholds {spec}: a threshold must lie strictly between 0 and 1")
        return Thresholds(np.full(len(layout.LETTERS), value), mode, text)
    if text == "fit":
        run_dirs = [Path(r) for r in runs]
        if not run_dirs or not all(r.is_dir() for r in run_dirs):
            raise ConfigError("--thresholds fit needs run directories (with OOF files); "
                              "pass a thresholds.json instead")
        if data_dir is None:
            raise ConfigError("--thresholds fit needs the data folder (its training labels)")
        probs, index = ensemble_oof(run_dirs, weights, average)
        for r in run_dirs:
            check_oof_labels(r, data_dir)
        report = fit(probs, oof_targets(data_dir, index))
        log.info("thresholds fitted on %d OOF rows: label_acc %.4f at 0.5 -> %.4f (%s decoding)",
                 report.rows, report.acc_at_half, report.acc_chosen, report.thresholds.decode)
        return report.thresholds
    return load_thresholds(text)
