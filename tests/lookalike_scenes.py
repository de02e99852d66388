"""An independent look-alike scene renderer: the scenes `bench/lookalike.py` scores checkpoints on.

It shares no code with `dirtymnist.data` or `dirtymnist.glyphs` (Pillow draws the letters, OpenCV
thickens, scales and rotates them, numpy adds the noise) and draws from handwriting fonts the
package does not ship, following DATA.md's description of the real images: 10-14 distinct letters
of mixed case, 17-55 px high, any angle, thick bright strokes (some semi-transparent), slight
overlaps, 0-3 Hangul distractors, i.i.d. uniform noise. One font per image, so a score splits by
font. A check on generalisation, not a copy of the real data. It lives in tests/ because the
tests check it (tests/test_lookalike.py); `bench/lookalike.py` is its command line.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# The fonts of the measured look-alike set (BENCHMARKS.md, rounds 6-8): none may ever be bundled
# (tests/test_lookalike.py checks), or the set would stop measuring hands we never trained on.
LOOKALIKE_FONTS = (
    "gaegu", "poor-story", "nanum-brush-script", "caveat-brush", "cedarville-cursive",
    "comic-neue", "dancing-script", "itim", "marck-script", "playpen-sans", "shantell-sans",
    "sriracha", "amatic-sc",
)  # fmt: skip
# 38 more hands for the 51-font folder (BENCHMARKS, "A time budget"; npm @fontsource, OFL / Apache; the
# hairline formal scripts and a font with missing glyphs left out), and TESTC's 12, in no folder
MORE_FONTS = (
    "amita", "bilbo", "charmonman", "chewy", "damion", "delicious-handrawn", "dr-sugiyama", "dynalight",
    "freckle-face", "grechen-fuemen", "henny-penny", "hurricane", "italianno", "jim-nightshade", "knewave",
    "lakki-reddy", "leckerli-one", "meow-script", "moon-dance", "niconne", "norican", "playball",
    "playwrite-de-grund", "playwrite-dk-loopet", "playwrite-it-moderna", "playwrite-us-trad", "pompiere",
    "puppies-play", "rochester", "sail", "sedgwick-ave-display", "send-flowers", "twinkle-star", "vibur",
    "water-brush", "yesteryear", "yusei-magic", "zcool-kuaile",
)  # fmt: skip
TESTC_FONTS = (
    "cherry-bomb-one", "darumadrop-one", "engagement", "felipa", "fondamento", "macondo", "mouse-memoirs",
    "princess-sofia", "quintessential", "sofia", "vujahday-script", "yuji-boku",
)  # fmt: skip
SIZE = 256
DRAW_PX = 96  # the font size glyphs are drawn at before scaling


class Font:
    """One font file: its covered characters (cmap) and glyph masks drawn on demand."""

    def __init__(self, path: Path):
        from fontTools.ttLib import TTFont

        self.path = path
        self.cmap = set(TTFont(str(path)).getBestCmap())
        self._pil = ImageFont.truetype(str(path), DRAW_PX)

    def has(self, ch: str) -> bool:
        return ord(ch) in self.cmap

    def mask(self, ch: str) -> np.ndarray | None:
        """The glyph's ink in [0, 1], cropped to its bounding box (None if it draws nothing)."""
        img = Image.new("L", (DRAW_PX * 3, DRAW_PX * 3), 0)
        ImageDraw.Draw(img).text((DRAW_PX, DRAW_PX // 2), ch, fill=255, font=self._pil)
        a = np.asarray(img, dtype=np.float32) / 255.0
        ys, xs = np.nonzero(a > 0.1)
        if len(ys) == 0:
            return None
        return a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def load_fonts(folder: Path, only: list[str] | None = None) -> tuple[dict[str, Font], list[Font]]:
    """Latin fonts by family (folder name; `only` these, if given) and the Hangul subset files
    (of every family), from fetch_fonts.py's layout."""
    latin, hangul = {}, []
    for family in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(family.glob("*.woff2")) + sorted(family.glob("*.ttf")):
            font = Font(f)
            if "-latin-" in f.name or f.suffix == ".ttf":
                if only and family.name not in only:
                    continue
                if all(font.has(c) and font.has(c.upper()) for c in LETTERS):
                    latin[family.name] = font
                else:
                    print(f"skip {f}: not every letter a-z, A-Z is in it", file=sys.stderr)
            elif any(0xAC00 <= c <= 0xD7A3 for c in font.cmap):
                hangul.append(font)
    if only and set(only) - set(latin):
        raise SystemExit(f"{folder}: no usable font folder {sorted(set(only) - set(latin))}")
    if not latin:
        raise SystemExit(f"{folder}: no font with all 52 letters (fetch them with scripts/fetch_fonts.py)")
    return latin, hangul


MIN_INK = 30  # px of solid ink a shape keeps, else it is left out (and unlabelled)
MAX_OVERLAP = 0.1  # max share of any shape's solid ink covered by another's


def _shape(mask: np.ndarray, height: float, angle: float, thicken: int) -> np.ndarray | None:
    """Scale the glyph to `height` px, thicken its strokes by `thicken` px, rotate by `angle`
    (None if fewer than MIN_INK solid pixels are left: too faint to label)."""
    scale = height / mask.shape[0]
    w = max(2, round(mask.shape[1] * scale))
    m = cv2.resize(mask, (w, max(2, round(height))), interpolation=cv2.INTER_AREA)
    m = np.pad(m, thicken + 2 + round(0.5 * max(m.shape)))  # room for the strokes and the turn
    if thicken:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thicken + 1, 2 * thicken + 1))
        m = cv2.dilate(m, kernel)
    h, w = m.shape
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m = cv2.warpAffine(m, rot, (w, h), flags=cv2.INTER_LINEAR)
    m = np.clip((m - 0.25) * 2.0, 0, 1)  # bright, blobby strokes: most ink pixels saturate
    if (m > 0.5).sum() < MIN_INK:
        return None
    ys, xs = np.nonzero(m > 0.05)
    return m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


class Canvas:
    """The ink placed so far, which shape owns each solid pixel (0 = none), and how much of
    each shape the others cover."""

    def __init__(self):
        self.ink = np.zeros((SIZE, SIZE), np.float32)
        self.owner = np.zeros((SIZE, SIZE), np.int16)
        self.areas, self.covered, self.spots = [0], [0], [None]  # per shape id (0 unused)

    def place(self, m: np.ndarray, rng, ink: np.ndarray | None = None) -> bool:
        """Put shape `m` (its ink `ink`, default `m`) at a random spot where, counting every
        shape placed so far, no shape gets more than MAX_OVERLAP of its solid pixels covered."""
        h, w = m.shape
        if h >= SIZE or w >= SIZE:
            return False
        solid = m > 0.5
        area = int(solid.sum())
        for _ in range(60):
            y, x = int(rng.integers(0, SIZE - h)), int(rng.integers(0, SIZE - w))
            owner = self.owner[y:y + h, x:x + w]
            hit = owner[solid & (owner > 0)]
            if len(hit) > MAX_OVERLAP * area:
                continue
            ids, counts = np.unique(hit, return_counts=True)
            if any(self.covered[i] + c > MAX_OVERLAP * self.areas[i] for i, c in zip(ids, counts)):
                continue
            for i, c in zip(ids, counts):
                self.covered[i] += int(c)
            self.ink[y:y + h, x:x + w] = np.maximum(self.ink[y:y + h, x:x + w], m if ink is None else ink)
            owner[solid] = len(self.areas)
            self.areas.append(area)
            self.covered.append(len(hit))
            self.spots.append((y, x, solid))
            return True
        return False


def render(rng, font: Font, hangul: list[Font], thick: float = 1.0,
           transparent: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 256x256 image, 26 0/1 labels of the letters actually placed). `thick`
    scales how much the strokes are thickened; `transparent` is the share of speckled letters."""
    canvas = Canvas()
    labels = np.zeros(26, np.uint8)
    for k in rng.permutation(26)[:int(rng.integers(10, 15))]:
        ch = LETTERS[k].upper() if rng.random() < 0.5 else LETTERS[k]
        height = float(rng.uniform(17, 55))
        thicken = (int(rng.integers(2, 5)) if height > 25 else int(rng.integers(1, 3)))
        thicken = max(1, round(thick * thicken)) if thick > 0 else 0
        opacity = 1.0 if rng.random() < 1 - transparent else float(rng.uniform(0.45, 0.85))
        glyph = font.mask(ch)
        m = None if glyph is None else _shape(glyph, height, float(rng.uniform(0, 360)), thicken)
        if m is None:
            continue
        # semi-transparent: the noise shows through in specks, as in the real images; the
        # overlap rule still counts the whole letter
        ink = m * (rng.random(m.shape) < opacity) if opacity < 1 else None
        if canvas.place(m, rng, ink):
            labels[k] = 1
    for _ in range(int(rng.integers(0, 4)) if hangul else 0):
        f = hangul[int(rng.integers(len(hangul)))]
        syllables = sorted(c for c in f.cmap if 0xAC00 <= c <= 0xD7A3)
        m = f.mask(chr(syllables[int(rng.integers(len(syllables)))]))
        if m is not None:
            m = _shape(m, float(rng.uniform(20, 55)), float(rng.uniform(0, 360)), int(rng.integers(1, 3)))
        if m is not None:
            canvas.place(m, rng)
    noise = rng.integers(0, 256, (SIZE, SIZE)).astype(np.float32)
    return np.round(noise * (1 - canvas.ink) + 255 * canvas.ink).astype(np.uint8), labels


def _write_csv(path: Path, rows: list) -> None:
    """Write `rows` to `path` atomically (the package's temp file + rename; the renderer stays our own)."""
    from dirtymnist.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def make(out: Path, fonts: Path, n: int, seed: int, only: list[str] | None = None,
         thick: float = 1.0, transparent: float = 0.25) -> None:
    latin, hangul = load_fonts(fonts, only)
    families = sorted(latin)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, images = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        family = families[i % len(families)]
        image, labels = render(rng, latin[family], hangul, thick, transparent)
        Image.fromarray(image, "L").save(out / "images" / f"{i:05d}.png")
        rows.append([i, family, *labels.tolist()])
        images.append(image)
    _write_csv(out / "labels.csv", [["index", "font", *LETTERS], *rows])
    if n >= 4:
        sheet = np.vstack([np.hstack(images[r * 4:r * 4 + 4]) for r in range(min(4, n // 4))])
        Image.fromarray(sheet, "L").save(out / "sheet.png")
    print(f"{n} scenes from {len(families)} fonts ({', '.join(families)}), "
          f"{len(hangul)} Hangul files, in {out}; letters per scene {np.mean([sum(r[2:]) for r in rows]):.1f}")


_WORKER: dict = {}


def _folder_init(fonts: Path, only: list[str] | None) -> None:
    _WORKER["latin"], _WORKER["hangul"] = load_fonts(fonts, only)


def _folder_render(job: tuple[Path, int, int]) -> list[int]:
    """Render scene `index` (rng [seed, index], font by index as `make` picks) into `path`."""
    path, seed, index = job
    latin, hangul = _WORKER["latin"], _WORKER["hangul"]
    families = sorted(latin)
    image, labels = render(np.random.default_rng([seed, index]), latin[families[index % len(families)]], hangul)
    Image.fromarray(image, "L").save(path)
    return [index, *labels.tolist()]


def folder(out: Path, fonts: Path, n_train: int, n_test: int, seed: int, workers: int,
           only: list[str] | None = None) -> None:
    """The competition's layout under `out`: train indices 0..n_train-1, test after them (as the
    real data numbers them), every scene from rng [seed, index]."""
    from multiprocessing import Pool

    load_fonts(fonts, only)  # fail here, once, on a bad font folder
    splits = {"dirty_mnist_2nd": range(n_train), "test_dirty_mnist_2nd": range(n_train, n_train + n_test)}
    rows = {}
    with Pool(workers, _folder_init, (fonts, only)) as pool:
        for name, indices in splits.items():
            (out / name).mkdir(parents=True, exist_ok=True)
            jobs = [(out / name / f"{i:05d}.png", seed, i) for i in indices]
            rows[name] = pool.map(_folder_render, jobs, chunksize=64)
    header = ["index", *LETTERS]
    tables = {"dirty_mnist_2nd_answer.csv": rows["dirty_mnist_2nd"],
              "test_answer.csv": rows["test_dirty_mnist_2nd"],
              "sample_submission.csv": [[r[0]] + [0] * 26 for r in rows["test_dirty_mnist_2nd"]]}
    for name, body in tables.items():
        _write_csv(out / name, [header, *body])
    print(f"{n_train} train and {n_test} test scenes in {out} (competition layout, seed {seed})")


def read_set(out: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, font per image) of a `make` set, or of a `folder`'s test split (its
    fonts unnamed: one column)."""
    if not (out / "labels.csv").is_file() and (out / "test_answer.csv").is_file():
        with open(out / "test_answer.csv", newline="") as f:
            rows = list(csv.reader(f))
        if rows[0] != ["index", *LETTERS]:
            raise SystemExit(f"{out / 'test_answer.csv'}: columns are not index,a..z")
        images = np.stack([np.asarray(Image.open(out / "test_dirty_mnist_2nd" / f"{int(r[0]):05d}.png"))
                           for r in rows[1:]])
        return images, np.array([[int(v) for v in r[1:]] for r in rows[1:]], np.uint8), ["test"] * len(images)
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != ["index", "font", *LETTERS]:
        raise SystemExit(f"{out / 'labels.csv'}: columns are not index,font,a..z")
    body = rows[1:]
    images = np.stack([np.asarray(Image.open(out / "images" / f"{int(r[0]):05d}.png")) for r in body])
    return images, np.array([[int(v) for v in r[2:]] for r in body], np.uint8), [r[1] for r in body]
