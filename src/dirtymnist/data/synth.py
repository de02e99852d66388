"""Realistic synthetic scenes (handwritten letters over noise) and the competition folder layout.

    dirtymnist synth data/ --train 50000 --test 5000 --seed 0

Each image depends only on (seed, index): `np.random.default_rng([seed, index])`, so the
files are byte-identical whatever the number of workers. Letters are added onto uniform
noise and clip at 255 (see shared/docs/DATA.md for the measured look).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from dirtymnist import layout
from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.glyphs import GlyphBank, load_bank
from dirtymnist.glyphs.mask import tight_crop
from dirtymnist.parallel import process_pool

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SceneKnobs:
    """Difficulty knobs; the defaults reproduce the competition's look.

    Ranges are (low, high), drawn uniformly per letter (counts: inclusive integers).
    """

    canvas: int = layout.IMAGE_SIZE
    letters: tuple[int, int] = (layout.MIN_LETTERS, layout.MAX_LETTERS)  # distinct, per image
    height: tuple[float, float] = (17.0, 55.0)  # longer side of the upright glyph, px
    rotation: tuple[float, float] = (0.0, 360.0)  # degrees
    noise: float = 1.0  # 1 = uniform 0..255 background, 0 = black
    transparent: float = 0.25  # share of semi-transparent letters (and distractors)
    opacity: tuple[float, float] = (0.35, 0.65)  # ink strength of semi-transparent ones
    speckle: float = 0.0  # share of the semi-transparent ones drawn as specks instead (0 = none)
    speckle_keep: tuple[float, float] = (0.4, 0.9)  # share of a speckled glyph's ink pixels kept
    solid: tuple[float, float] = (0.78, 1.0)  # ink strength of the others (<1: a few specks)
    distractors: tuple[int, int] = (0, 2)  # Hangul syllables per image, never labelled
    families: tuple[str, ...] | None = None  # glyph families to draw from; None = all
    thickness: tuple[float, float] = (0.10, 0.22)  # stroke width as a fraction of height
    upper: float = 0.5  # share of upper-case letters
    jitter: float = 1.0  # scale of the per-letter aspect / shear jitter (0 = none)
    max_overlap: float = 0.1  # max share of any glyph's ink covered by another glyph
    tries: int = 30  # placement attempts per glyph before it is left out (and unlabelled)

    def __post_init__(self) -> None:
        def pair(name: str, lo: float, hi: float) -> None:
            a, b = getattr(self, name)
            if not lo <= a <= b <= hi:
                raise ConfigError(f"knob {name}={(a, b)}: need {lo} <= low <= high <= {hi}")

        if self.canvas < 32:
            raise ConfigError(f"knob canvas={self.canvas}: need >= 32")
        pair("letters", 0, len(layout.LETTERS))
        pair("height", 4, self.canvas)
        pair("rotation", -360, 720)
        pair("opacity", 0, 1)
        pair("speckle_keep", 0, 1)
        pair("solid", 0, 1)
        pair("distractors", 0, 100)
        pair("thickness", 0, 1)
        for name in ("noise", "transparent", "speckle", "upper", "max_overlap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"knob {name}={getattr(self, name)}: need 0 <= value <= 1")
        if self.jitter < 0 or self.tries < 1:
            raise ConfigError(f"knobs jitter={self.jitter}, tries={self.tries}: need >= 0, >= 1")
        if self.families is not None and not self.families:
            raise ConfigError("knob families: empty list (use None for all families)")


class Placed(NamedTuple):
    """One glyph on the canvas: its letter (lower case), the centre of its ink box, its size
    (longer side of the upright glyph, px) and rotation (degrees, counter-clockwise)."""

    letter: str
    cx: float
    cy: float
    height: float
    angle: float


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # (H, W) uint8
    labels: np.ndarray  # (26,) uint8, 1 = letter present
    letters: list[Placed]  # the labelled letters, in drawing order
    distractors: list[Placed]  # Hangul syllables (letter = "hangul"), never labelled


def render_scene(
    seed: int, index: int, knobs: SceneKnobs = SceneKnobs(), bank: GlyphBank | None = None
) -> Scene:
    """Render image `index` of dataset `seed`; depends only on (seed, index, knobs, bank)."""
    bank = bank if bank is not None else load_bank()
    rng = np.random.default_rng([seed, index])
    size = knobs.canvas
    alpha = np.zeros((size, size), np.float32)  # ink strength per pixel, max over glyphs
    owner = np.zeros((size, size), np.int16)  # 1 + id of the glyph inking each pixel, 0 = none
    ink_counts: list[int] = []  # solid-ink pixel count per glyph id

    def place(mask: np.ndarray, angle: float, ink: tuple[float, float]) -> tuple[float, float] | None:
        glyph = _transform(mask, angle, knobs.jitter, rng)
        pos = _find_spot(glyph, owner, ink_counts, knobs, rng)
        if pos is None:
            return None
        y0, x0 = pos
        h, w = glyph.shape
        solid = glyph > 0.5  # the whole glyph counts for overlaps, specks or not
        strength, keep = ink
        drawn = glyph * strength
        if keep < 1.0:
            drawn *= rng.random(glyph.shape) < keep
        np.maximum(alpha[y0 : y0 + h, x0 : x0 + w], drawn, out=alpha[y0 : y0 + h, x0 : x0 + w])
        owner[y0 : y0 + h, x0 : x0 + w][solid] = len(ink_counts) + 1
        ink_counts.append(int(solid.sum()))
        return x0 + w / 2, y0 + h / 2

    def opacity() -> tuple[float, float]:
        """(ink strength, share of ink pixels kept): a semi-transparent glyph is either faint
        everywhere or, with `speckle`, full strength on a random share of its pixels (the noise
        shows through the rest). No extra draws when speckle is 0, so older scenes stay the same."""
        if rng.random() < knobs.transparent:
            if knobs.speckle and rng.random() < knobs.speckle:
                return 1.0, float(rng.uniform(*knobs.speckle_keep))
            return rng.uniform(*knobs.opacity), 1.0
        return rng.uniform(*knobs.solid), 1.0

    def stroke(height: float) -> float:
        return max(1.5, rng.uniform(*knobs.thickness) * height)

    count = int(rng.integers(knobs.letters[0], knobs.letters[1] + 1))
    labels = np.zeros(len(layout.LETTERS), np.uint8)
    letters: list[Placed] = []
    for k in rng.choice(len(layout.LETTERS), size=count, replace=False):
        letter = layout.LETTERS[k]
        char = letter.upper() if rng.random() < knobs.upper else letter
        height = rng.uniform(*knobs.height)
        mask, _ = bank.render_letter(char, height, stroke(height), rng, knobs.families)
        angle = float(rng.uniform(*knobs.rotation))
        centre = place(mask, angle, opacity())
        if centre is not None:
            labels[k] = 1
            letters.append(Placed(letter, *centre, float(height), angle))

    distractors: list[Placed] = []
    for _ in range(int(rng.integers(knobs.distractors[0], knobs.distractors[1] + 1))):
        height = rng.uniform(*knobs.height)
        mask = bank.render_hangul(height, stroke(height), rng)
        angle = float(rng.uniform(*knobs.rotation))
        centre = place(mask, angle, opacity())
        if centre is not None:
            distractors.append(Placed("hangul", *centre, float(height), angle))

    noise = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    return Scene(_composite(noise, alpha, knobs.noise), labels, letters, distractors)


def _composite(noise: np.ndarray, alpha: np.ndarray, level: float) -> np.ndarray:
    """Ink adds light onto the noise and clips at 255: (H, W) uint8.

    This gives the real look: solid strokes are mostly exactly 255 with a few darker specks
    where the noise was low; semi-transparent strokes show the noise, brightened.
    """
    out = alpha * 255.0
    out += noise if level == 1.0 else noise * np.float32(level)
    np.clip(out, 0, 255, out=out)
    return np.rint(out).astype(np.uint8)


def _transform(
    mask: np.ndarray, angle: float, jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """Rotate a tight mask by `angle` degrees with a little aspect and shear jitter (one warp)."""
    h, w = mask.shape
    aspect = float(np.exp(rng.normal(0.0, 0.12 * jitter)))
    shear = float(rng.normal(0.0, 0.15 * jitter))
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    lin = rot @ np.array([[aspect, shear], [0.0, 1.0 / aspect]])
    corners = (np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - [w / 2, h / 2]) @ lin.T
    out_w, out_h = (np.ceil(corners.max(0) - corners.min(0)) + 2).astype(int)
    matrix = np.hstack([lin, (np.array([out_w, out_h]) / 2 - lin @ [w / 2, h / 2])[:, None]])
    warped = cv2.warpAffine(
        mask, matrix, (int(out_w), int(out_h)), flags=cv2.INTER_LINEAR, borderValue=0
    )
    return tight_crop(warped)


def _find_spot(
    glyph: np.ndarray,
    owner: np.ndarray,
    ink_counts: list[int],
    knobs: SceneKnobs,
    rng: np.random.Generator,
) -> tuple[int, int] | None:
    """Top-left (y, x) inside the canvas where the glyph covers at most `max_overlap` of any
    placed glyph's ink and of its own; None after `tries` failed draws."""
    h, w = glyph.shape
    size = owner.shape[0]
    solid = glyph > 0.5
    own = int(solid.sum())
    if h > size or w > size or own == 0:
        return None
    limits = np.asarray(ink_counts + [0], np.float64) * knobs.max_overlap
    for _ in range(knobs.tries):
        y0 = int(rng.integers(0, size - h + 1))
        x0 = int(rng.integers(0, size - w + 1))
        under = owner[y0 : y0 + h, x0 : x0 + w][solid]
        hit = np.bincount(under, minlength=len(ink_counts) + 1)[1:]
        if hit.sum() <= knobs.max_overlap * own and np.all(hit <= limits[: len(hit)]):
            return y0, x0
    return None


def write_dataset(
    out: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int,
    workers: int | None = None,
    knobs: SceneKnobs = SceneKnobs(),
    emnist: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the competition layout (shared/docs/DATA.md) under `out`.

    Training images are indices 0..n_train-1, test images continue at n_train. Also writes
    the answer CSV, an all-zero sample submission and `test_answer.csv` (the test labels).
    Stale `NNNNN.png` files from an earlier run in the two image folders are removed.
    Returns `out`.
    """
    if n_train < 0 or n_test < 0 or n_train + n_test > 100_000:
        raise DataError(
            f"need 0 <= n_train, n_test and n_train + n_test <= 100000, got {n_train}, {n_test}"
        )
    out = Path(out)
    emnist = None if emnist is None else str(Path(emnist).resolve())
    workers = max(1, int(workers or os.cpu_count() or 1))
    bank = load_bank(emnist)  # validates sources and families before any worker starts
    if knobs.families is not None:
        bank.render_letter("a", 20, 2, np.random.default_rng(0), knobs.families)

    splits = (
        (layout.TRAIN_DIR, range(n_train)),
        (layout.TEST_DIR, range(n_train, n_train + n_test)),
    )
    for folder, indices in splits:
        _prepare_folder(out / folder, indices)
    jobs = [
        (str(out / folder), chunk, seed, knobs, emnist)
        for folder, indices in splits
        for chunk in _chunks(indices, workers)
    ]
    labels = np.zeros((n_train + n_test, len(layout.LETTERS)), np.uint8)
    from tqdm.auto import tqdm  # a widget in notebooks, a text bar elsewhere

    with tqdm(total=len(labels), unit="img", desc="synth", disable=not progress) as bar:
        for start, chunk_labels in _run(jobs, workers):
            labels[start : start + len(chunk_labels)] = chunk_labels
            bar.update(len(chunk_labels))

    atomic_write_text(out / layout.TRAIN_CSV, _labels_csv(range(n_train), labels[:n_train]))
    test_idx = range(n_train, n_train + n_test)
    atomic_write_text(out / layout.TEST_ANSWER_CSV, _labels_csv(test_idx, labels[n_train:]))
    atomic_write_text(
        out / layout.SAMPLE_CSV, _labels_csv(test_idx, np.zeros_like(labels[n_train:]))
    )
    log.info("wrote %d training + %d test images to %s", n_train, n_test, out)
    return out


def _chunks(indices: range, workers: int) -> Iterator[range]:
    # ~8 chunks per worker balances load; at most 256 images per task keeps the bar moving.
    step = max(8, min(256, -(-len(indices) // (8 * workers))))
    for start in range(indices.start, indices.stop, step):
        yield range(start, min(start + step, indices.stop))


def _run(jobs: list, workers: int) -> Iterator[tuple[int, np.ndarray]]:
    if workers == 1 or len(jobs) <= 1:
        yield from map(_render_chunk, jobs)
        return
    with process_pool(workers) as pool:
        yield from pool.map(_render_chunk, jobs)


def _render_chunk(job: tuple) -> tuple[int, np.ndarray]:
    """Render and write one chunk of images (runs in a worker); returns (first index, labels)."""
    folder, indices, seed, knobs, emnist = job
    bank = load_bank(emnist)  # cached per process
    labels = np.zeros((len(indices), len(layout.LETTERS)), np.uint8)
    for row, index in enumerate(indices):
        scene = render_scene(seed, index, knobs, bank)
        labels[row] = scene.labels
        _write_png(Path(folder) / layout.png_name(index), scene.image)
    return indices.start, labels


def _write_png(path: Path, image: np.ndarray) -> None:
    # Write then rename: a killed run never leaves a torn PNG under a real name. No fsync per
    # image (too slow for 50,000 files); the CSVs, written last and atomically, are the commit.
    # RLE strategy: ~2x faster than the default on noise, and smaller (noise hardly compresses).
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        1,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_RLE,
    ]
    ok, buf = cv2.imencode(".png", image, params)
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


_PNG_NAME = re.compile(r"^\d{5}\.png$")


def _prepare_folder(folder: Path, indices: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {layout.png_name(i) for i in indices}
    stale = [p for p in folder.iterdir() if _PNG_NAME.match(p.name) and p.name not in wanted]
    if stale:
        log.info("%s: removing %d images left from an earlier run", folder, len(stale))
        for p in stale:
            p.unlink()


def _labels_csv(indices: Sequence[int], labels: np.ndarray) -> str:
    lines = ["index," + ",".join(layout.LETTERS)]
    lines += [f"{i}," + ",".join(map(str, row)) for i, row in zip(indices, labels.tolist())]
    return "\n".join(lines) + "\n"
