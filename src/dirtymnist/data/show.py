"""Contact sheet: a grid of dataset images with the letters of each written under it.

dirtymnist show data/ --n 16 --out sheet.png
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dirtymnist import layout
from dirtymnist.atomic import atomic_path
from dirtymnist.errors import DataError

_CAPTION = 16  # px of caption strip under each image
_GAP = 4


def contact_sheet(
    data_dir: str | os.PathLike,
    n: int = 16,
    out: str | os.PathLike = "sheet.png",
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Write a PNG grid of `n` images of `split` (train / test), picked at random with `seed`.

    Captions come from the answer CSV (test: `test_answer.csv` when present, else `?`).
    Returns the path written.
    """
    data_dir = Path(data_dir)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    folder = data_dir / (layout.TRAIN_DIR if split == "train" else layout.TEST_DIR)
    answers = data_dir / (layout.TRAIN_CSV if split == "train" else layout.TEST_ANSWER_CSV)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    if answers.exists():
        captions = _read_captions(answers)
    elif split == "test":
        captions = {int(p.stem): "?" for p in folder.glob("*.png") if p.stem.isdigit()}
    else:
        raise DataError(f"{answers}: answer CSV not found")
    if not captions:
        raise DataError(f"{answers if answers.exists() else folder}: no images listed")
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")

    indices = sorted(captions)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(indices, size=min(n, len(indices)), replace=False).tolist())
    tiles = [_tile(folder / layout.png_name(i), f"{i}: {captions[i]}") for i in picked]

    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape
    sheet = np.full((rows * (th + _GAP) + _GAP, cols * (tw + _GAP) + _GAP), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = _GAP + r * (th + _GAP), _GAP + c * (tw + _GAP)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return out


def _read_captions(path: Path) -> dict[int, str]:
    """index -> present letters (e.g. 'abdz') from a label CSV."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[0] != "index" or tuple(header[1:]) != layout.LETTERS:
            raise DataError(f"{path}: header must be index,a,...,z")
        try:
            return {
                int(row[0]): "".join(c for c, v in zip(layout.LETTERS, row[1:]) if v == "1")
                for row in reader
                if row
            }
        except ValueError as exc:
            raise DataError(f"{path}: bad index ({exc})") from exc


def _tile(path: Path, caption: str) -> np.ndarray:
    if not path.is_file():  # checked first: OpenCV would print its own warning about it
        raise DataError(f"{path}: image not found")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt or not a PNG)")
    h, w = image.shape
    strip = Image.new("L", (w, _CAPTION), 255)
    ImageDraw.Draw(strip).text((2, 2), caption, fill=0, font=ImageFont.load_default())
    return np.vstack([image, np.asarray(strip)])
