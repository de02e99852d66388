"""Multilabel-stratified K-fold splits saved as a readable `index,fold` CSV, with a quality report.

Iterative stratification (the `iterative-stratification` package) alone is no better than a
random split on this data: every letter is in ~46% of images, and the algorithm is built for
rare labels (measured: max letter deviation 12.8 pp on 500 rows, 1.0 pp on 50,000; KFold gives
about the same). So its split is the starting point of a local search that swaps images between
folds while that brings every fold's letter counts closer to its share of the whole set
(after it: 1.6 pp on 500 rows, 0.01 pp on 50,000), keeping fold sizes equal.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist.arrays import positions
from dirtymnist.atomic import atomic_write_text
from dirtymnist.data.dataset import DataPaths, read_label_csv
from dirtymnist.errors import ConfigError, DataError

log = logging.getLogger(__name__)

METHODS = ("stratified", "kfold")
_MAX_NAMED = 5


@dataclass(frozen=True)
class FoldReport:
    """How well each fold (and a subset) matches the letter frequencies it should have."""

    path: Path
    method: str
    k: int
    seed: int
    counts: tuple[int, ...]  # images per fold
    dev_pp: np.ndarray  # (k, 26) fold letter frequency minus the folded set's, in % points
    n_full: int  # images in the answer CSV
    subset_dev_pp: np.ndarray | None  # (26,) subset frequency minus the full set's; None if no subset
    letters: tuple[str, ...]
    reused: bool = False

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    @property
    def max_dev_pp(self) -> float:
        """Largest |deviation| of any letter in any fold, percentage points."""
        return float(np.abs(self.dev_pp).max())

    def table(self) -> str:
        what = f"{self.n} images" if self.n == self.n_full else f"a subset of {self.n} of {self.n_full} images"
        lines = [f"{self.path.name}: {self.k} folds of {what} ({self.method}, seed {self.seed})"
                 + (" [reused]" if self.reused else ""),
                 "fold  images  max letter dev (pp)"]
        for f, (count, dev) in enumerate(zip(self.counts, np.abs(self.dev_pp).max(axis=1))):
            lines.append(f"{f:>4}  {count:>6}  {dev:>19.2f}")
        if self.subset_dev_pp is not None:
            worst = int(np.abs(self.subset_dev_pp).argmax())
            lines.append(f"subset vs full set: max letter dev {abs(self.subset_dev_pp[worst]):.2f} pp "
                         f"(letter {self.letters[worst]})")
        return "\n".join(lines)

    __str__ = table


def default_folds_path(root: Path, k: int, seed: int, method: str, subset: int | None) -> Path:
    """`folds_k{k}_seed{seed}[_{method}][_subset{N}].csv`: only non-default parts in the name."""
    name = f"folds_k{k}_seed{seed}"
    name += f"_{method}" if method != "stratified" else ""
    name += f"_subset{subset}" if subset else ""
    return root / f"{name}.csv"


def make_folds(
    paths: DataPaths | str | os.PathLike,
    k: int = 5,
    seed: int = 42,
    subset: int | None = None,
    method: str = "stratified",
    out: str | os.PathLike | None = None,
) -> tuple[Path, FoldReport]:
    """Split the training set (or a label-balanced subset of `subset` images) into `k` folds.

    Writes `index,fold` (sorted by index) to `out` or the default name in DATA_DIR; an existing
    file is reused when it fits the dataset, refused with a clear message when it does not.
    """
    if not isinstance(paths, DataPaths):
        paths = DataPaths.from_root(paths)
    if method not in METHODS:
        raise ConfigError(f"unknown fold method {method!r}; choose one of {', '.join(METHODS)}")
    table = read_label_csv(paths.train_csv)
    n_full = len(table)
    if subset is not None and not 0 < subset < n_full:
        raise ConfigError(f"subset {subset} must be between 1 and {n_full - 1} "
                          f"({paths.train_csv.name} has {n_full} rows)")
    n = subset or n_full
    if not 2 <= k <= n:
        raise ConfigError(f"k={k} folds impossible for {n} images (need 2 <= k <= {n})")
    out = Path(out).expanduser().absolute() if out else default_folds_path(
        paths.root, k, seed, method, subset)

    if out.exists():
        index, fold = _check_existing(out, table.index, k, subset)
        reused = True
        log.info("folds file up to date, reused: %s", out)
    else:
        rows = np.arange(n_full)
        if subset:
            rows = _select_subset(table.labels, subset, seed)
        index = table.index[rows]
        fold = _split(table.labels[rows], k, seed, method)
        order = np.argsort(index, kind="stable")
        index, fold = index[order], fold[order]
        _write_folds(out, index, fold)
        reused = False
        log.info("folds written: %s", out)

    pos = positions(table.index, index)
    y = table.labels[pos].astype(np.float64)
    freq = y.mean(axis=0)
    dev = np.stack([y[fold == f].mean(axis=0) - freq for f in range(k)]) * 100.0
    subset_dev = (freq - table.labels.mean(axis=0)) * 100.0 if subset else None
    report = FoldReport(path=out, method=method, k=k, seed=seed,
                        counts=tuple(int(c) for c in np.bincount(fold, minlength=k)),
                        dev_pp=dev, n_full=n_full, subset_dev_pp=subset_dev,
                        letters=table.letters, reused=reused)
    return out, report


def read_folds(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A folds CSV as (index, fold) int64 arrays in file order; folds must be 0..K-1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: folds file not found")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected header index,fold)")
    if [h.strip() for h in rows[0]] != ["index", "fold"]:
        raise DataError(f"{path}: header must be index,fold, got {','.join(rows[0])}")
    values = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            i, f = (int(cell) for cell in row)
        except ValueError:
            raise DataError(f"{path}: line {line}: expected two integers, got {','.join(row)}") from None
        values.append((i, f))
    if not values:
        raise DataError(f"{path}: header only, no rows")
    index, fold = (np.array(col, dtype=np.int64) for col in zip(*values))
    uniq, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: duplicate indices {_name_some(uniq[counts > 1].tolist())}")
    found = np.unique(fold)
    if found[0] != 0 or not np.array_equal(found, np.arange(len(found))):
        raise DataError(f"{path}: fold numbers {_name_some(found.tolist())} are not 0..K-1")
    return index, fold


def load_folds(path: str | os.PathLike, index: np.ndarray, k: int | None = None) -> np.ndarray:
    """Fold of each entry of `index` (int64, aligned with it), from a folds CSV that must list
    exactly these indices (and `k` folds when given)."""
    path = Path(path)
    file_index, file_fold = read_folds(path)
    index = np.asarray(index, dtype=np.int64)
    _check_same_indices(path, file_index, index)
    _check_k(path, file_fold, k)
    return file_fold[positions(file_index, index)]


# --- helpers ----------------------------------------------------------------------------


def _name_some(items: list) -> str:
    shown = ", ".join(str(x) for x in items[:_MAX_NAMED])
    return shown + (f", ... ({len(items)} in total)" if len(items) > _MAX_NAMED else "")



def _check_same_indices(path: Path, file_index: np.ndarray, index: np.ndarray) -> None:
    missing = np.setdiff1d(index, file_index)
    extra = np.setdiff1d(file_index, index)
    if len(missing) or len(extra):
        parts = []
        if len(missing):
            parts.append(f"{len(missing)} dataset indices missing ({_name_some(missing.tolist())})")
        if len(extra):
            parts.append(f"{len(extra)} indices not in the dataset ({_name_some(extra.tolist())})")
        raise DataError(f"{path}: does not match the dataset: {'; '.join(parts)}")


def _check_k(path: Path, fold: np.ndarray, k: int | None) -> None:
    found = int(fold.max()) + 1
    if k is not None and found != k:
        raise DataError(f"{path}: has {found} folds, expected {k}")


def _check_existing(path: Path, dataset_index: np.ndarray, k: int,
                    subset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate an existing folds file for reuse; refuse (DataError) when it does not fit."""
    hint = "delete it to have the folds made again (`dirtymnist folds --out FILE` writes them elsewhere)"
    try:
        index, fold = read_folds(path)
        if subset:
            extra = np.setdiff1d(index, dataset_index)
            if len(extra):
                raise DataError(f"{path}: {len(extra)} indices not in the dataset "
                                f"({_name_some(extra.tolist())})")
            if len(index) != subset:
                raise DataError(f"{path}: holds {len(index)} indices, expected a subset of {subset}")
        else:
            _check_same_indices(path, index, dataset_index)
        _check_k(path, fold, k)
    except DataError as exc:
        raise DataError(f"{exc}; {hint}") from None
    return index, fold


def _write_folds(path: Path, index: np.ndarray, fold: np.ndarray) -> None:
    lines = ["index,fold"] + [f"{i},{f}" for i, f in zip(index.tolist(), fold.tolist())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _split(labels: np.ndarray, k: int, seed: int, method: str) -> np.ndarray:
    """Fold number (0..k-1) of each row of `labels` (N, 26)."""
    n = len(labels)
    fold = np.empty(n, dtype=np.int64)
    dummy = np.zeros((n, 1))
    if method == "kfold":  # the 9th-place team's split
        from sklearn.model_selection import KFold

        for f, (_, held) in enumerate(KFold(k, shuffle=True, random_state=seed).split(dummy)):
            fold[held] = f
        return fold
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(dummy, labels)):
        fold[held] = f
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return _refine(labels, fold, sizes, np.random.default_rng(seed))


def _select_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Rows (sorted) of a subset of exactly `size` rows whose letter frequencies match the whole."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n = len(labels)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, train_size=size, test_size=n - size,
                                                random_state=seed)
    chosen, _ = next(splitter.split(np.zeros((n, 1)), labels))
    group = np.ones(n, dtype=np.int64)
    group[chosen] = 0  # iterstrat's size is approximate; _refine makes it exact
    group = _refine(labels, group, np.array([size, n - size]), np.random.default_rng(seed))
    return np.flatnonzero(group == 0)


def _refine(labels: np.ndarray, group: np.ndarray, sizes: np.ndarray, rng: np.random.Generator,
            candidates: int = 384, patience: int = 3, max_steps: int = 20_000) -> np.ndarray:
    """Move, then swap, rows between groups until each group g has `sizes[g]` rows and its
    letter counts are as close as local search gets to `sizes[g] * frequency`.

    Objective: sum over groups and letters of (count - target)^2. The change for swapping row a
    (group i) with row b (group j) is 2 * (y_b.D - y_a.D + |y_a| + |y_b| - 2 y_a.y_b) with
    D = residual_i - residual_j, evaluated for `candidates` x `candidates` rows at once.
    """
    y = labels.astype(np.float64)  # (N, L)
    k = len(sizes)
    group = group.copy()
    target = np.outer(sizes, y.mean(axis=0))  # (k, L)
    count = np.stack([y[group == g].sum(axis=0) for g in range(k)])  # (k, L)
    ones = y.sum(axis=1)  # (N,)

    # 1) sizes: move the row whose move helps the objective most from the largest to the smallest group.
    have = np.bincount(group, minlength=k)
    while np.any(have != sizes):
        i, j = int(np.argmax(have - sizes)), int(np.argmin(have - sizes))
        rows = np.flatnonzero(group == i)
        resid = count - target
        a = rows[np.argmin(y[rows] @ (resid[j] - resid[i]) + ones[rows])]
        group[a] = j
        count[i] -= y[a]
        count[j] += y[a]
        have[i] -= 1
        have[j] += 1

    # 2) swaps between random pairs of groups; stop after `patience` fruitless rounds per pair.
    members = [np.flatnonzero(group == g) for g in range(k)]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k) if len(members[i]) and len(members[j])]
    fails, steps = 0, 0
    while pairs and fails < patience * len(pairs) and steps < max_steps:
        steps += 1
        i, j = pairs[rng.integers(len(pairs))]
        mi, mj = members[i], members[j]
        ai = rng.choice(len(mi), min(candidates, len(mi)), replace=False)
        bj = rng.choice(len(mj), min(candidates, len(mj)), replace=False)
        ya, yb = y[mi[ai]], y[mj[bj]]
        d = (count[i] - target[i]) - (count[j] - target[j])
        delta = ((yb @ d)[None, :] - (ya @ d)[:, None]
                 + ones[mi[ai]][:, None] + ones[mj[bj]][None, :] - 2.0 * ya @ yb.T)
        r, c = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if delta[r, c] >= -1e-9:
            fails += 1
            continue
        a, b = mi[ai[r]], mj[bj[c]]
        count[i] += y[b] - y[a]
        count[j] += y[a] - y[b]
        mi[ai[r]], mj[bj[c]] = b, a
        group[a], group[b] = j, i
        fails = 0
    return group
