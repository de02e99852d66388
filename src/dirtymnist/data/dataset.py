"""Read and validate a competition-layout data folder: paths, label CSVs, PNG lists, images."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dirtymnist import layout
from dirtymnist.arrays import positions
from dirtymnist.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
# Renamed folders are given once (`dirtymnist cache DATA_DIR --train-dir train ...`) and
# remembered here, so every later command finds them from DATA_DIR alone.
LAYOUT_FILE = "dirtymnist_layout.json"
_LAYOUT_KEYS = ("train_dir", "train_csv", "test_dir", "sample_csv", "test_answer_csv")
_MAX_NAMED = 5  # how many offenders an error message names before "... (N in total)"


@dataclass(frozen=True)
class DataPaths:
    """Where each part of a competition-layout folder lives (all absolute)."""

    root: Path
    train_dir: Path
    train_csv: Path
    test_dir: Path
    sample_csv: Path
    test_answer_csv: Path  # synthetic data only; may not exist

    @classmethod
    def from_root(
        cls,
        root: str | os.PathLike,
        train_dir: str | os.PathLike | None = None,
        train_csv: str | os.PathLike | None = None,
        test_dir: str | os.PathLike | None = None,
        sample_csv: str | os.PathLike | None = None,
        test_answer_csv: str | os.PathLike | None = None,
    ) -> DataPaths:
        """Competition names under `root`; any part overridable, relative ones resolved in `root`.

        Parts not given come from `root/dirtymnist_layout.json` when present, else the
        competition's names.
        """
        root = Path(root).expanduser().absolute()
        saved = _read_layout_file(root)
        train_dir = train_dir if train_dir is not None else saved.get("train_dir")
        train_csv = train_csv if train_csv is not None else saved.get("train_csv")
        test_dir = test_dir if test_dir is not None else saved.get("test_dir")
        sample_csv = sample_csv if sample_csv is not None else saved.get("sample_csv")
        test_answer_csv = test_answer_csv if test_answer_csv is not None else saved.get("test_answer_csv")

        def pick(value: str | os.PathLike | None, default: str) -> Path:
            path = Path(value).expanduser() if value is not None else Path(default)
            return path if path.is_absolute() else root / path

        return cls(
            root=root,
            train_dir=pick(train_dir, layout.TRAIN_DIR),
            train_csv=pick(train_csv, layout.TRAIN_CSV),
            test_dir=pick(test_dir, layout.TEST_DIR),
            sample_csv=pick(sample_csv, layout.SAMPLE_CSV),
            test_answer_csv=pick(test_answer_csv, layout.TEST_ANSWER_CSV),
        )


def _read_layout_file(root: Path) -> dict:
    import json

    path = root / LAYOUT_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or set(data) - set(_LAYOUT_KEYS):
        raise DataError(f"{path}: expected an object with keys among {', '.join(_LAYOUT_KEYS)}")
    return data


def save_layout(paths: DataPaths) -> Path | None:
    """Remember non-default part names in DATA_DIR/dirtymnist_layout.json (None if all default)."""
    import json

    from dirtymnist.atomic import atomic_write_text

    custom = {}
    for key, name in zip(_LAYOUT_KEYS, (layout.TRAIN_DIR, layout.TRAIN_CSV, layout.TEST_DIR,
                                        layout.SAMPLE_CSV, layout.TEST_ANSWER_CSV)):
        value = getattr(paths, key)
        if value != paths.root / name:
            custom[key] = str(value.relative_to(paths.root)) if value.is_relative_to(paths.root) else str(value)
    path = paths.root / LAYOUT_FILE
    if not custom:
        return None
    atomic_write_text(path, json.dumps(custom, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class LabelTable:
    """A label CSV: `index` (N,) int64 in file order, `labels` (N, 26) uint8 0/1."""

    index: np.ndarray
    labels: np.ndarray
    letters: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class SplitFiles:
    """One split's images, checked against its CSV; `paths[i]` is the PNG of `index[i]`."""

    split: str
    folder: Path
    csv: Path  # the CSV that lists the split: the answer CSV, or the sample submission
    index: np.ndarray  # (N,) int64, the CSV's row order
    paths: tuple[Path, ...]
    labels: np.ndarray | None  # (N, 26) uint8; None for a test split without test_answer.csv
    letters: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.index)


def _name_some(items: list) -> str:
    shown = ", ".join(str(x) for x in items[:_MAX_NAMED])
    return shown + (f", ... ({len(items)} in total)" if len(items) > _MAX_NAMED else "")


def read_label_csv(path: str | os.PathLike) -> LabelTable:
    """Read a label CSV with header `index,a,...,z` and 0/1 values (answer, sample, test answer).

    Columns may come in any order; `labels` is returned in a..z order.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a label CSV (index,a,...,z)")
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected header index,a,...,z)")

    header = [h.strip() for h in rows[0]]
    expected = ["index", *layout.LETTERS]
    if header != expected:
        dups = sorted({h for h in header if header.count(h) > 1})
        missing = [h for h in expected if h not in header]
        extra = [h for h in header if h not in expected]
        if dups or missing or extra:
            parts = [f"duplicate columns {dups}" if dups else "",
                     f"missing columns {missing}" if missing else "",
                     f"extra columns {extra}" if extra else ""]
            raise DataError(f"{path}: header must be index,a,...,z; " + "; ".join(p for p in parts if p))
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]  # tolerate blank lines
    if not body:
        raise DataError(f"{path}: header only, no data rows")
    for line, row in enumerate(rows[1:], start=2):
        if any(cell.strip() for cell in row) and len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")

    cells = np.array(body, dtype=str)  # (N, 27)
    line_no = [i for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    idx_col = header.index("index")
    try:
        index = np.array([int(v) for v in cells[:, idx_col]], dtype=np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(cells[:, idx_col]) if not _is_int(v))
        raise DataError(
            f"{path}: line {line_no[bad]}: index {str(cells[bad, idx_col]).strip()!r} is not an integer"
        ) from None
    if (index < 0).any():
        bad = int(np.flatnonzero(index < 0)[0])
        raise DataError(f"{path}: line {line_no[bad]}: index {index[bad]} is negative")

    order = [header.index(letter) for letter in layout.LETTERS]
    values = cells[:, order]  # (N, 26) str, a..z
    ok = (values == "0") | (values == "1")
    if not ok.all():  # maybe only padded with spaces
        values = np.char.strip(values)
        ok = (values == "0") | (values == "1")
    if not ok.all():
        r, c = map(int, np.argwhere(~ok)[0])
        raise DataError(
            f"{path}: line {line_no[r]}, column {layout.LETTERS[c]!r}: "
            f"value {str(values[r, c])!r} is not 0 or 1"
        )

    uniq, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        dups = uniq[counts > 1].tolist()
        raise DataError(f"{path}: duplicate indices {_name_some(dups)}")
    return LabelTable(index=index, labels=(values == "1").astype(np.uint8), letters=layout.LETTERS)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def list_split(paths: DataPaths, split: str, labels: bool = True) -> SplitFiles:
    """The PNGs of `split` ("train" or "test"), checked one-to-one against its CSV.

    Train indices come from the answer CSV, test indices (and their order) from the sample
    submission; test labels come from test_answer.csv when it exists (synthetic data) and
    `labels` is true (False: the test answers are not read).
    """
    folder, csv_path = split_sources(paths, split)
    if not folder.exists() and not csv_path.exists():
        raise DataError(f"{paths.root}: the {split} split is missing ({folder.name}/ and "
                        f"{csv_path.name} not found here); this command needs it")
    table = read_label_csv(csv_path)
    if split == "train":
        labels = table.labels
    else:
        labels = _test_labels(paths, table.index) if labels else None
    if not folder.is_dir():
        raise DataError(f"{folder}: {split} image folder not found")

    present = {e.name for e in os.scandir(folder) if e.name.lower().endswith(".png")}
    names = [layout.png_name(i) for i in table.index]
    missing = [n for n in names if n not in present]
    if missing:
        raise DataError(f"{folder}: {len(missing)} indices of {_csv_of(paths, split).name} "
                        f"have no PNG: {_name_some(missing)}")
    extra = sorted(present.difference(names))
    if extra:
        raise DataError(f"{folder}: {len(extra)} PNGs have no row in "
                        f"{_csv_of(paths, split).name}: {_name_some(extra)}")
    return SplitFiles(split=split, folder=folder, csv=csv_path, index=table.index,
                      paths=tuple(folder / n for n in names), labels=labels,
                      letters=table.letters)


def split_sources(paths: DataPaths, split: str) -> tuple[Path, Path]:
    """(image folder, the CSV listing it) of `split`: the answer CSV or the sample submission."""
    if split == "train":
        return paths.train_dir, paths.train_csv
    if split == "test":
        return paths.test_dir, paths.sample_csv
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _csv_of(paths: DataPaths, split: str) -> Path:
    return split_sources(paths, split)[1]


def _test_labels(paths: DataPaths, index: np.ndarray) -> np.ndarray | None:
    # test_answer.csv may list the rows in another order: align it to the sample submission.
    if not paths.test_answer_csv.is_file():
        return None
    answer = read_label_csv(paths.test_answer_csv)
    if len(answer) != len(index) or not np.array_equal(np.sort(answer.index), np.sort(index)):
        only_answer = np.setdiff1d(answer.index, index).tolist()
        only_sample = np.setdiff1d(index, answer.index).tolist()
        raise DataError(f"{paths.test_answer_csv}: indices differ from {paths.sample_csv.name} "
                        f"(only here: {_name_some(only_answer) or 'none'}; "
                        f"missing: {_name_some(only_sample) or 'none'})")
    return answer.labels[positions(answer.index, index)]  # same set of indices: checked above


def decode_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode one PNG to (256, 256) uint8 grayscale; also return its channel count (1, 3 or 4).

    The shared decoder of `read_image` and the cache (which reports colour images once,
    instead of one warning per image).
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_bytes(data, path)


def decode_bytes(data: np.ndarray, path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """`decode_image` of bytes already read (1-D uint8, e.g. an upload); `path` names them in errors."""
    if data.size == 0:
        raise DataError(f"{path}: empty file, not an image")
    try:
        with _quiet_stderr():
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt or not a PNG)")
    if img.dtype != np.uint8:
        raise DataError(f"{path}: {img.dtype} pixels ({8 * img.itemsize}-bit), expected 8-bit grayscale")
    height, width = img.shape[:2]
    if (height, width) != (layout.IMAGE_SIZE, layout.IMAGE_SIZE):
        raise DataError(f"{path}: size {width}x{height}, expected "
                        f"{layout.IMAGE_SIZE}x{layout.IMAGE_SIZE}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:
        img = img.reshape(height, width)
    elif channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif channels == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    else:
        raise DataError(f"{path}: {channels} channels, expected grayscale")
    return np.ascontiguousarray(img), channels


_devnull: int | None = None
_quiet = {"depth": 0, "saved": None}  # threads inside _quiet_stderr; fd 2 as it was before the first
_quiet_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr():
    """libpng and OpenCV print their own complaints about a corrupt PNG on file descriptor 2
    before imdecode returns None; the one line naming the file is ours, so theirs go nowhere.
    Thread-safe: fd 2 is redirected by the first thread in and restored by the last one out
    (two threads each saving and restoring it would leave it on /dev/null for good)."""
    global _devnull
    with _quiet_lock:
        if _quiet["depth"] == 0:
            try:
                saved = os.dup(2)
            except OSError:  # no stderr at all
                saved = None
            if saved is not None:
                if _devnull is None:
                    _devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(_devnull, 2)
            _quiet["saved"] = saved
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0 and _quiet["saved"] is not None:
                os.dup2(_quiet["saved"], 2)
                os.close(_quiet["saved"])
                _quiet["saved"] = None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image as (256, 256) uint8 grayscale; colour images are converted with a warning."""
    img, channels = decode_image(path)
    if channels != 1:
        log.warning("%s: %d-channel colour image converted to grayscale", path, channels)
    return img
