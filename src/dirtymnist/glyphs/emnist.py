"""Optional glyph source: real handwriting from the EMNIST letters idx files, if the user has them.

Reads `emnist-letters-train-images-idx3-ubyte.gz` and `...-labels-idx1-ubyte.gz` from a
folder (28x28 images stored transposed, labels 1..26 = a..z; case is not recorded, so an
EMNIST glyph serves both cases).
"""

from __future__ import annotations

import gzip
import string
from pathlib import Path

import numpy as np

from dirtymnist.errors import DataError
from dirtymnist.glyphs.mask import MIN_INK, scale_to, set_thickness, stroke_width, tight_crop

IMAGES_FILE = "emnist-letters-train-images-idx3-ubyte.gz"
LABELS_FILE = "emnist-letters-train-labels-idx1-ubyte.gz"
MAX_PER_LETTER = 3000  # keeps memory ~60 MB per process for the full training file


def read_idx(path: Path) -> np.ndarray:
    """Read one (gzipped) idx file into an array (uint8 data only, as EMNIST uses)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read idx file ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not a uint8 idx file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path}: size does not match its header shape {shape}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load_emnist(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 upright images and (N,) int64 labels 0..25 from an EMNIST folder."""
    folder = Path(folder)
    images = read_idx(folder / IMAGES_FILE)
    labels = read_idx(folder / LABELS_FILE).astype(np.int64) - 1
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{folder}: EMNIST images {images.shape} and labels {labels.shape} disagree"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 25):
        raise DataError(f"{folder / LABELS_FILE}: labels must be 1..26 (letters a..z)")
    return np.ascontiguousarray(images.transpose(0, 2, 1)), labels


class EmnistSource:
    """Real handwritten letters; family name `emnist`."""

    name = "emnist"

    def __init__(self, folder: str | Path, max_per_letter: int = MAX_PER_LETTER):
        images, labels = load_emnist(folder)
        # Every glyph must draw ink: drop near-empty samples, then letters left with none.
        inked = images.reshape(len(images), -1).sum(1, dtype=np.int64) >= MIN_INK * 255
        self._images: dict[str, np.ndarray] = {}
        for k, letter in enumerate(string.ascii_lowercase):
            keep = np.flatnonzero(inked & (labels == k))[:max_per_letter]
            if keep.size:
                self._images[letter] = images[keep]
        if not self._images:
            raise DataError(f"{folder}: no EMNIST letter draws ink")
        self.chars = frozenset(c for letter in self._images for c in (letter, letter.upper()))

    def render(
        self, char: str, size: float, thickness: float, rng: np.random.Generator
    ) -> np.ndarray:
        """A random sample of `char` (either case): tight float32 mask, longer side ~`size`."""
        bank = self._images[char.lower()]
        mask = tight_crop(bank[rng.integers(len(bank))].astype(np.float32) / 255.0)
        width = stroke_width(mask)
        approx_width = width * size / max(mask.shape)
        inner = max(size * 0.5, size - max(0.0, thickness - approx_width))
        scaled, scale = scale_to(mask, inner)
        return set_thickness(scaled, width * scale, thickness)
