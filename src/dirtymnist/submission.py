"""The files inference hands over: the submission CSV and the probability files behind it.

This is the only module that knows the submission format: the sample submission's rows in its
order, header `index,a,...,z`, 0/1 ints. Probability files are a pair of `.npy` arrays,
`NAME.npy` float32 (N, 26) and `NAME_index.npy` int64 (N,) competition indices (no pickle).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.arrays import positions
from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.data.dataset import LabelTable, read_label_csv
from dirtymnist.errors import DataError


def read_submission(path: str | os.PathLike) -> LabelTable:
    """A submission, sample or answer CSV; bad headers, values and duplicates name the file."""
    return read_label_csv(path)


def row_mismatch(index: np.ndarray, expected: np.ndarray) -> str | None:
    """None when `index` holds exactly the `expected` indices (any order), else what differs."""
    index, expected = np.asarray(index, dtype=np.int64), np.asarray(expected, dtype=np.int64)
    if len(index) == len(expected) and np.array_equal(np.sort(index), np.sort(expected)):
        return None
    missing = np.setdiff1d(expected, index).tolist()
    extra = np.setdiff1d(index, expected).tolist()
    if not missing and not extra:
        return f"{len(index)} rows for {len(expected)} indices (repeated indices)"
    return f"{len(missing)} indices missing ({_some(missing)}), {len(extra)} extra ({_some(extra)})"


def check_same_rows(index: np.ndarray, template: LabelTable, template_path: str | os.PathLike,
                    what: str = "predictions") -> None:
    """Raise DataError naming the template unless `index` holds exactly its indices."""
    problem = row_mismatch(index, template.index)
    if problem:
        raise DataError(f"{template_path}: {what} do not match its rows: {problem}")


def align_to(index: np.ndarray, values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows of `values` (indexed by `index`) rearranged into `order` (same set of indices)."""
    return values[positions(index, order)]


def format_submission(index: np.ndarray, pred01: np.ndarray) -> str:
    """CSV text: header `index,a,...,z`, one row per image, 0/1 ints."""
    pred01 = np.asarray(pred01)
    if pred01.ndim != 2 or pred01.shape != (len(index), len(layout.LETTERS)):
        raise ValueError(f"predictions must be ({len(index)}, {len(layout.LETTERS)}), got {pred01.shape}")
    if not np.isin(pred01, (0, 1)).all():
        raise ValueError("predictions must be 0/1 (threshold probabilities first)")
    body = np.column_stack([np.asarray(index, dtype=np.int64), pred01.astype(np.int64)])
    buf = io.StringIO()
    buf.write(",".join(["index", *layout.LETTERS]) + "\n")
    np.savetxt(buf, body, fmt="%d", delimiter=",")
    return buf.getvalue()


def write_submission(path: str | os.PathLike, index: np.ndarray, pred01: np.ndarray,
                     template_csv: str | os.PathLike) -> Path:
    """Write `pred01` (N, 26) of images `index` in the template's (sample submission's) row order.

    Refuses (DataError naming the template) unless the indices are exactly the template's.
    Written atomically: a killed run leaves the old file or the new one, never half of one.
    """
    path = Path(path)
    atomic_write_text(path, submission_text(index, pred01, template_csv))
    return path


def submission_text(index: np.ndarray, pred01: np.ndarray, template_csv: str | os.PathLike) -> str:
    """The CSV text of `pred01` in the template's row order; DataError unless the rows match."""
    template = read_submission(template_csv)
    index = np.asarray(index, dtype=np.int64)
    check_same_rows(index, template, template_csv)
    return format_submission(template.index, align_to(index, np.asarray(pred01), template.index))


def write_submission_set(path: str | os.PathLike, index: np.ndarray, pred01: np.ndarray,
                         probs: np.ndarray, template_csv: str | os.PathLike) -> tuple[Path, Path]:
    """The CSV and its probability files as one set: probabilities first, the CSV last, then
    `NAME.set.json` tying them by hash (see `outputs`). Returns (CSV, probabilities) paths."""
    from dirtymnist.outputs import write_set

    path = Path(path)
    text = submission_text(index, pred01, template_csv)  # refuses other rows, writing nothing
    probs = np.asarray(probs, dtype=np.float32)
    index = np.asarray(index, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != len(index):
        raise ValueError(f"probs {probs.shape} do not match index ({len(index)},)")
    probs_path = probs_path_for(path)
    write_set(set_path_for(path), {"probs": (probs_path, probs),
                                   "probs_index": (index_path(probs_path), index),
                                   "csv": (path, text)})
    return path, probs_path


def set_path_for(path: str | os.PathLike) -> Path:
    """The manifest of a submission's set: `sub.csv` or `sub.probs.npy` -> `sub.set.json`."""
    p = Path(path)
    stem = p.name.removesuffix(".probs.npy") if p.name.endswith(".probs.npy") else p.stem
    return p.with_name(stem + ".set.json")


# --------------------------------------------------------------------------- probability files
def index_path(probs_path: str | os.PathLike) -> Path:
    """`probs.npy` -> `probs_index.npy` (its competition indices)."""
    p = Path(probs_path)
    return p.with_name(p.name.removesuffix(".npy") + "_index.npy")


def probs_path_for(submission_path: str | os.PathLike) -> Path:
    """Where the probabilities of a submission go: `sub.csv` -> `sub.probs.npy` (+ `_index`)."""
    p = Path(submission_path)
    return p.with_name(p.stem + ".probs.npy")


def save_probs(path: str | os.PathLike, probs: np.ndarray, index: np.ndarray) -> tuple[Path, Path]:
    """Save float32 (N, 26) probabilities and their int64 (N,) indices, atomically."""
    probs = np.asarray(probs, dtype=np.float32)
    index = np.asarray(index, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != len(index):
        raise ValueError(f"probs {probs.shape} do not match index ({len(index)},)")
    path = Path(path)
    for target, array in ((path, probs), (index_path(path), index)):
        with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return path, index_path(path)


def load_probs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(probs float32 (N, 26), index int64 (N,)) of a file written by `save_probs`."""
    from dirtymnist.outputs import verify_set

    path = Path(path)
    idx_path = index_path(path)
    for p in (path, idx_path):
        if not p.is_file():
            raise DataError(f"{p}: probability file not found")
    if path.name.endswith(".probs.npy"):  # written by predict: must match the rest of its set
        verify_set(set_path_for(path), "run the predict that wrote it again")
    try:
        probs = np.load(path, allow_pickle=False)
        index = np.load(idx_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy probability file ({exc})") from None
    if probs.ndim != 2 or probs.shape[1] != len(layout.LETTERS):
        raise DataError(f"{path}: shape {probs.shape}, expected (N, {len(layout.LETTERS)})")
    if index.shape != (probs.shape[0],) or not np.issubdtype(index.dtype, np.integer):
        raise DataError(f"{idx_path}: expected {probs.shape[0]} integer indices, got {index.dtype} {index.shape}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise DataError(f"{path}: values are not probabilities in [0, 1]")
    if len(np.unique(index)) != len(index):
        raise DataError(f"{idx_path}: duplicate indices")
    return probs.astype(np.float32), index.astype(np.int64)


def _some(items: list, n: int = 5) -> str:
    if not items:
        return "none"
    return ", ".join(map(str, items[:n])) + (", ..." if len(items) > n else "")
