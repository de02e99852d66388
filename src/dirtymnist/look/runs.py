"""Read training run folders and compare them in one table (replaces hand-kept experiment logs).

    dirtymnist runs runs/ --sort label_acc --format markdown

A run folder holds `config.yaml` and `fold{k}/metrics.jsonl` (+ `oof.npy`, `oof_index.npy`).
`list_runs` returns one dict per run; `format_table` turns rows into text for the terminal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dirtymnist.config import RESUME_SAFE_KEYS
from dirtymnist.errors import DataError
from dirtymnist.rundir import RunDir

# Columns every row has, in display order; the differing config keys go after `preset`.
BASE_COLUMNS = ("run", "preset")
RESULT_COLUMNS = ("folds", "label_acc", "label_acc_std", "epochs_done", "time_s", "samples_per_s")
# Sorted high-to-low by default (the others low-to-high).
_DESCENDING = {"label_acc", "samples_per_s", "folds", "epochs_done"}
# Keys that say nothing about the experiment itself.
_IGNORED_KEYS = RESUME_SAFE_KEYS  # run options: they do not change results


@dataclass
class FoldRecord:
    """One fold's files. `history`: metrics.jsonl rows; `probs` (N, 26) float32 and `index` (N,)
    int64 are the best epoch's out-of-fold predictions (None until loaded / when absent)."""

    fold: int
    path: Path
    history: list[dict] = field(default_factory=list)
    probs: np.ndarray | None = None
    index: np.ndarray | None = None

    def best(self, metric: str = "label_acc") -> dict | None:
        """The logged epoch that is best by `metric` (label_acc: highest; loss: lowest val_loss);
        None before the first epoch."""
        if not self.history:
            return None
        if metric == "loss":
            return min(self.history, key=lambda r: r.get("val_loss", math.inf))
        return max(self.history, key=lambda r: r.get("label_acc", -1.0))


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]
    folds: dict[int, FoldRecord]

    @property
    def name(self) -> str:
        return self.path.name


def load_run(run_dir: str | os.PathLike, with_oof: bool = False) -> RunRecord:
    """Read `config.yaml` and every fold's metrics of a run (and the OOF arrays if asked)."""
    run = RunDir(run_dir)
    config = run.read_config()
    folds = {}
    for fold in run.folds():
        rec = FoldRecord(fold=fold.fold, path=fold.path, history=fold.read_metrics())
        if with_oof and fold.oof.is_file():
            rec.probs, rec.index = fold.read_oof()
        folds[rec.fold] = rec
    return RunRecord(path=run.path, config=config, folds=folds)


def list_runs(root: str | os.PathLike = "runs", sort: str | None = None) -> list[dict]:
    """One row per run under `root`: run, preset, the config keys that differ between the runs,
    folds (with metrics), label_acc / label_acc_std (best epoch, mean and std over folds),
    epochs_done (most epochs logged by a fold), time_s (sum over folds), samples_per_s (mean).

    `sort`: a column name, high-to-low for scores and speeds, else low-to-high; a leading `-`
    reverses that. Default: label_acc, best first.
    """
    root = Path(root)
    runs = [load_run(r) for r in RunDir.find(root)]
    differing = differing_keys([r.config for r in runs])
    rows = []
    for run in runs:
        name = run.path.relative_to(root).as_posix() if run.path != root else run.path.name
        row = {"run": name, "preset": run.config.get("preset", "")}
        # Config keys that clash with a result column are shown as cfg.KEY.
        row.update({(f"cfg.{k}" if k in RESULT_COLUMNS else k): _compact(run.config.get(k))
                    for k in differing})
        row.update(summarize_folds(run))
        rows.append(row)
    return sort_rows(rows, sort or "label_acc")


def summarize_folds(run: RunRecord) -> dict:
    """The result columns of one run (see `list_runs`); NaN where nothing is logged yet."""
    accs = [f.best()["label_acc"] for f in run.folds.values() if f.history]
    epochs = [len(f.history) for f in run.folds.values()]
    rows = [r for f in run.folds.values() for r in f.history]
    speeds = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    return {
        "folds": len(accs),
        "label_acc": statistics.mean(accs) if accs else math.nan,
        "label_acc_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else math.nan),
        "epochs_done": max(epochs, default=0),
        "time_s": sum(r.get("seconds", 0.0) for r in rows),
        "samples_per_s": statistics.mean(speeds) if speeds else math.nan,
    }


def differing_keys(configs: list[dict]) -> list[str]:
    """Config keys whose values are not the same in every config (in first-seen order)."""
    keys: list[str] = []
    for cfg in configs:
        keys += [k for k in cfg if k not in keys and k not in _IGNORED_KEYS]
    if len(configs) < 2:
        return []
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    """Rows sorted by `column` (see `list_runs`); missing/NaN values go last."""
    reverse = column.startswith("-")
    column = column.lstrip("-")
    column = "time_s" if column == "time" else column  # the table shows time_s as `time`
    if rows and column not in rows[0]:
        raise DataError(f"cannot sort by {column!r}; columns: {', '.join(rows[0])}")
    descending = (column in _DESCENDING) != reverse
    present = [r for r in rows if not _missing(r.get(column))]
    absent = [r for r in rows if _missing(r.get(column))]
    numeric = all(isinstance(r[column], (int, float)) for r in present)
    present.sort(key=lambda r: r[column] if numeric else str(r[column]), reverse=descending)
    return present + absent


def _missing(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


# --------------------------------------------------------------------------- formatting
def display_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Rows as strings for people: label_acc as `mean +- std`, time as h:mm:ss."""
    out = []
    for row in rows:
        shown = {}
        for k, v in row.items():
            if k == "label_acc_std":
                continue
            if k == "label_acc" and "label_acc_std" in row:
                std = row["label_acc_std"]
                shown[k] = ("-" if math.isnan(v) else f"{v:.4f}" if row.get("folds", 0) < 2
                            else f"{v:.4f} +- {std:.4f}")
            elif k == "time_s":
                shown["time"] = _hms(v)
            else:
                shown[k] = _fmt(v)
        out.append(shown)
    return out


def format_table(rows: list[dict], fmt: str = "table") -> str:
    """`table` (aligned text), `markdown` or `csv` (raw numbers, every column)."""
    if fmt == "csv":
        if not rows:
            return ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    shown = display_rows(rows)
    if not shown:
        return "(no runs)\n"
    cols = list(shown[0])
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in shown]
        return "\n".join(lines) + "\n"
    if fmt != "table":
        raise DataError(f"unknown format {fmt!r}; use table, csv or markdown")
    widths = {c: max(len(c), *(len(r[c]) for r in shown)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in shown]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.4g}"
    return "" if v is None else str(v)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _compact(value: Any) -> Any:
    # Lists and dicts (e.g. curriculum stages) as short one-line JSON for a table cell.
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value
