"""Blend weights fitted out of fold: `dirtymnist blend RUN_A RUN_B ... --out blend.json`.

The weights of an ensemble are chosen on the runs' out-of-fold probabilities, for label
accuracy at threshold 0.5, by a search over the simplex (a grid of weights summing to 1;
accuracy is a step function, so gradient optimisers have nothing to follow). Label accuracy is
the mean of 26 per-letter accuracies, so per-letter weights are the same search done column by
column. A fold-wise cross-check fits on k-1 folds' rows and scores the held-out fold, so the
reported gain is not fitted and scored on the same rows. `predict`, `ensemble` and `package`
take the file with `--blend blend.json`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError
from dirtymnist.infer.ensemble import AVERAGES, combine
from dirtymnist.infer.thresholds import decode

log = logging.getLogger(__name__)


@dataclass
class BlendReport:
    runs: list[str]
    average: str  # prob | logit
    per_letter: bool
    weights: list  # (R,) or (R, 26) non-negative, each column summing to 1
    rows: int  # OOF rows every run has
    single: list[float]  # OOF label accuracy of each run alone
    equal: float  # equal weights
    fitted: float  # the fitted weights, on the rows they were fitted on
    crosscheck_equal: float  # equal weights, scored fold by fold (same rows as below)
    crosscheck_fitted: float  # weights fitted on the other folds, scored on the held-out fold
    folds: list[dict] = field(default_factory=list)  # per held-out fold: rows, equal, fitted, weights
    path: str | None = None

    def format(self) -> str:
        lines = [f"OOF rows: {self.rows} ({len(self.runs)} runs, average {self.average}, "
                 f"{'per-letter' if self.per_letter else 'per-run'} weights)"]
        lines += [f"  alone: {acc:.5f}  {run}" for run, acc in zip(self.runs, self.single)]
        w = np.asarray(self.weights)
        shown = w if w.ndim == 1 else w.mean(1)
        lines.append("weights: " + ", ".join(f"{x:.3f}" for x in shown) + (" (mean over letters)" if w.ndim == 2 else ""))
        lines.append(f"label_acc on all OOF rows: equal {self.equal:.5f} -> fitted {self.fitted:.5f} "
                     f"({self.fitted - self.equal:+.5f}, fitted and scored on the same rows)")
        lines.append(f"fold-wise cross-check ({len(self.folds)} folds): equal {self.crosscheck_equal:.5f} -> "
                     f"fitted on the other folds {self.crosscheck_fitted:.5f} "
                     f"({self.crosscheck_fitted - self.crosscheck_equal:+.5f})")
        if self.path:
            lines.append(f"wrote {self.path}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- fitting
def simplex_grid(n_runs: int, steps: int | None = None) -> np.ndarray:
    """(G, R) weight vectors on the simplex with spacing 1/steps, equal weights first."""
    steps = steps or {1: 1, 2: 20, 3: 10, 4: 8}.get(n_runs, 5)
    points = [np.array(c) / steps for c in itertools.product(range(steps + 1), repeat=n_runs)
              if sum(c) == steps]
    grid = np.array([np.full(n_runs, 1 / n_runs), *points])
    # ties go to the point nearest equal weights (argmax takes the first)
    order = np.argsort(np.linalg.norm(grid - 1 / n_runs, axis=1), kind="stable")
    return grid[order]


def letter_accuracy(probs: list[np.ndarray], targets: np.ndarray, weights, average: str) -> np.ndarray:
    """(26,) per-letter accuracy at 0.5 of the blend of (N, 26) `probs` with `weights`."""
    return (decode(combine(probs, weights, average), 0.5) == targets.astype(bool)).mean(0)


def fit_weights(probs: list[np.ndarray], targets: np.ndarray, *, per_letter: bool = False,
                average: str = "prob", grid: np.ndarray | None = None) -> np.ndarray:
    """Weights (R,) or (R, 26) with the best label accuracy of the blend on these rows."""
    grid = simplex_grid(len(probs)) if grid is None else grid
    acc = np.stack([letter_accuracy(probs, targets, w, average) for w in grid])  # (G, 26)
    if per_letter:
        return grid[np.argmax(acc, axis=0)].T.copy()  # (R, 26)
    return grid[np.argmax(acc.mean(1))].copy()


# --------------------------------------------------------------------------- the command
def blend(runs: list[str | os.PathLike], *, out: str | os.PathLike | None = None, data_dir=None,
          per_letter: bool = False, average: str = "prob") -> BlendReport:
    """Fit blend weights of `runs` on their OOF files, cross-check them fold-wise, write `out`."""
    from dirtymnist.infer.thresholds import oof_targets
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.rundir import RunDir
    from dirtymnist.submission import align_to

    if len(runs) < 2:
        raise ConfigError("blend: give at least two runs")
    if average not in AVERAGES:
        raise ConfigError(f"--average {average!r}; choose from {', '.join(AVERAGES)}")
    loaded = [RunDir(run).read_oof() for run in runs]  # (probs, index, fold) of each run
    common = loaded[0][1]
    for _, idx, _ in loaded[1:]:
        common = np.intersect1d(common, idx)
    if len(common) == 0:
        raise ConfigError(f"runs {', '.join(map(str, runs))} share no OOF rows (other folds or data)")
    common = np.sort(common)
    probs = [align_to(idx, p, common) for p, idx, _ in loaded]
    fold_of = align_to(loaded[0][1], loaded[0][2], common)  # the first run's folds group the check
    targets = oof_targets(RunDir(runs[0]).data_dir(data_dir), common)

    weights = fit_weights(probs, targets, per_letter=per_letter, average=average)
    equal = np.ones(len(runs))

    def score(w, rows=slice(None)) -> float:
        return label_accuracy(decode(combine([p[rows] for p in probs], w, average), 0.5), targets[rows])

    fold_rows, held_pred, held_equal = [], np.zeros_like(targets), np.zeros_like(targets)
    for k in np.unique(fold_of):
        held, fit_on = fold_of == k, fold_of != k
        if not fit_on.any():
            continue
        w_k = fit_weights([p[fit_on] for p in probs], targets[fit_on], per_letter=per_letter, average=average)
        held_pred[held] = decode(combine([p[held] for p in probs], w_k, average), 0.5)
        held_equal[held] = decode(combine([p[held] for p in probs], equal, average), 0.5)
        fold_rows.append({"fold": int(k), "rows": int(held.sum()), "equal": score(equal, held),
                          "fitted": score(w_k, held), "weights": w_k.tolist()})
    checked = np.isin(fold_of, [r["fold"] for r in fold_rows])
    report = BlendReport(
        runs=[str(Path(r).absolute()) for r in runs], average=average, per_letter=per_letter,
        weights=weights.tolist(), rows=len(common),
        single=[label_accuracy(decode(p, 0.5), targets) for p in probs],
        equal=score(equal), fitted=score(weights),
        crosscheck_equal=label_accuracy(held_equal[checked], targets[checked]) if checked.any() else float("nan"),
        crosscheck_fitted=label_accuracy(held_pred[checked], targets[checked]) if checked.any() else float("nan"),
        folds=fold_rows)
    if out is not None:
        report.path = str(out)
        atomic_write_text(out, json.dumps(asdict(report), indent=2) + "\n")
    return report


# --------------------------------------------------------------------------- using a blend file
def read_blend(path: str | os.PathLike) -> dict:
    """A blend.json written by `blend`, checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: blend file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a blend file ({exc})") from None
    if not isinstance(data, dict) or not {"runs", "weights", "average"} <= set(data):
        raise ConfigError(f"{path}: not a blend file (needs runs, weights, average)")
    w = np.asarray(data["weights"], dtype=np.float64)
    if w.ndim not in (1, 2) or len(w) != len(data["runs"]) or (w.ndim == 2 and w.shape[1] != 26) \
            or (w < 0).any() or (w.sum(0) <= 0).any():
        raise ConfigError(f"{path}: weights must be one non-negative row per run (or 26 per run)")
    return data


def blend_for_runs(path: str | os.PathLike, inputs, weights=None) -> tuple[np.ndarray, str]:
    """(weights (R,) or (R, 26), average) of a blend file for `inputs` (runs or probability
    files, one per blended run, in the blend's order)."""
    if weights is not None:
        raise ConfigError("give --weights or --blend, not both")
    data = read_blend(path)
    if len(inputs) != len(data["runs"]):
        raise ConfigError(f"{path}: fitted for {len(data['runs'])} runs, got {len(inputs)} inputs "
                          "(give them in the blend's order)")
    for given, fitted in zip(inputs, data["runs"]):
        if Path(given).is_dir() and Path(given).absolute() != Path(fitted):
            log.warning("%s: blend weights were fitted for %s", given, fitted)
    return np.asarray(data["weights"], dtype=np.float64), data["average"]
