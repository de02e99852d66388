"""Glyph sources from the bundled handwriting fonts (woff2): latin letters and Hangul syllables.

Each family renders every character once at a reference size per process (tight float32
masks); a request only resizes that mask and sets the stroke thickness, so no font is
opened per letter. Shape jitter (aspect, shear, rotation) is the scene's job.
"""

from __future__ import annotations

import functools
import io
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dirtymnist.errors import DataError
from dirtymnist.glyphs.mask import has_ink, scale_to, set_thickness, stroke_width, tight_crop

FONTS_DIR = Path(__file__).resolve().parent / "fonts"
LETTER_CHARS = string.ascii_lowercase + string.ascii_uppercase
REF_SIZE = 96  # font size (px) of the cached reference masks
HANGUL_FAMILY = "nanum-pen-script"

# Hangul syllables per bundled nanum-pen-script subset (every 3rd one of its cmap); a syllable
# that turns out missing or empty is dropped at load.
HANGUL_SUBSETS = {
    "113": "갤깨냥놓돈둘떤렸룹몸밤벽봤빨셀솔슨써앙염욱졌죽찍켓큐턴퇴팬폼혀훈",
    "114": "갑궁꽃끼논높델랍럽령먼범쇄십액엄욕윤잠좀쪽첨측캐쿠탁템팀푸픈협효",
    "115": "갈견귀녀답될따램럼릭망머밀벤봉삭손슈씨얼완육접줄참총친텐패핑험황",
    "116": "각겠권김날늘달던때람류린많및백별새션순애열외점준질책커택평학형환",
    "117": "감검광근까년능더된래력말물배본블생실야업예월저집천추침테티페피행히",
    "118": "간게과그는도들록만명문방부서세습안여오우위은의있장제중치타포합화",
}


def font_family_names() -> tuple[str, ...]:
    """Bundled font families (folders holding a latin 400 woff2), sorted."""
    return tuple(
        sorted(
            p.name for p in FONTS_DIR.iterdir() if (p / f"{p.name}-latin-400-normal.woff2").exists()
        )
    )


class FontFamily:
    """One handwriting font: renders a-z / A-Z into ink masks."""

    def __init__(self, name: str, path: Path | None = None, chars: str = LETTER_CHARS):
        self.name = name
        path = path or FONTS_DIR / name / f"{name}-latin-400-normal.woff2"
        self._refs = _render_refs(open_font(path, REF_SIZE), chars)
        self.chars = frozenset(self._refs)

    def render(
        self, char: str, size: float, thickness: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Tight (h, w) float32 mask in [0, 1], longer side ~`size`, strokes ~`thickness` px."""
        return _render_from_ref(self._refs[char], size, thickness, rng)


class HangulFont:
    """Hangul syllables from the bundled Korean subsets (distractors, never labels)."""

    name = HANGUL_FAMILY

    def __init__(self) -> None:
        self._refs: dict[str, tuple[np.ndarray, float]] = {}
        for number, syllables in HANGUL_SUBSETS.items():
            path = FONTS_DIR / HANGUL_FAMILY / f"{HANGUL_FAMILY}-{number}-400-normal.woff2"
            if path.exists():
                self._refs.update(_render_refs(open_font(path, REF_SIZE), syllables))
        if not self._refs:
            raise DataError(f"{FONTS_DIR / HANGUL_FAMILY}: no Hangul syllable draws ink")
        self.chars = tuple(sorted(self._refs))

    def render(
        self, char: str, size: float, thickness: float, rng: np.random.Generator
    ) -> np.ndarray:
        return _render_from_ref(self._refs[char], size, thickness, rng)


@functools.cache
def _font_bytes(path: Path) -> bytes:
    """The font as bytes FreeType can open: woff2 as is if Pillow's FreeType reads it,
    else decompressed to sfnt with fontTools (+brotli), once per process."""
    raw = path.read_bytes()
    try:
        ImageFont.truetype(io.BytesIO(raw), 12)
        return raw
    except OSError:
        pass
    try:
        from fontTools.ttLib import TTFont
    except ImportError as exc:  # pragma: no cover - only without woff2 support in FreeType
        raise DataError(f"{path}: FreeType cannot read woff2 and fontTools is missing") from exc
    out = io.BytesIO()
    font = TTFont(io.BytesIO(raw))
    font.flavor = None
    font.save(out)
    return out.getvalue()


def open_font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    if not path.exists():
        raise DataError(f"{path}: font file missing (run scripts/fetch_fonts.py)")
    return ImageFont.truetype(io.BytesIO(_font_bytes(path)), size)


def _draw(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
    """Tight float32 mask of one character (empty (0, 0) when it draws nothing)."""
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return np.zeros((0, 0), np.float32)
    pad = 4
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), char, font=font, fill=255)
    return tight_crop(np.asarray(img, dtype=np.float32) / 255.0)


def _render_refs(font: ImageFont.FreeTypeFont, chars: str) -> dict[str, tuple[np.ndarray, float]]:
    """Reference mask and stroke width of each char that draws ink and is not the font's
    missing-glyph box (a char absent from the font renders as .notdef, which has ink)."""
    notdef = _draw(font, "\U000f0000")  # private-use plane: in no handwriting font
    refs = {}
    for ch in chars:
        mask = _draw(font, ch)
        if not has_ink(mask):
            continue
        if mask.shape == notdef.shape and np.array_equal(mask, notdef):
            continue
        refs[ch] = (mask, stroke_width(mask))
    return refs


def _render_from_ref(
    ref: tuple[np.ndarray, float], size: float, thickness: float, rng: np.random.Generator
) -> np.ndarray:
    mask, width = ref
    # Dilation grows the box by (thickness - width); shrink the scale so the result is ~size.
    approx_width = width * size / max(mask.shape)
    inner = max(size * 0.5, size - max(0.0, thickness - approx_width))
    scaled, scale = scale_to(mask, inner)
    return set_thickness(scaled, width * scale, thickness)
