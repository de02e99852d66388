"""Glyph bank: handwritten letters (fonts, Hershey strokes, optional EMNIST) and Hangul distractors.

Every source renders a character into a tight float32 ink mask in [0, 1] given a size (the
longer side, px), a stroke thickness (px) and a numpy Generator. Sources are grouped into
named *families* (one per font / Hershey face / EMNIST) so that handwriting styles can be
held out of training: `split_families(0.2, seed=0)` (families added after FIRST_FAMILIES
always train).

    bank = load_bank()                     # cached per process
    mask = bank.render_letter("g", 40, 6, rng)[0]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from dirtymnist.errors import DataError
from dirtymnist.glyphs.emnist import EmnistSource
from dirtymnist.glyphs.fonts import FontFamily, HangulFont, font_family_names
from dirtymnist.glyphs.hershey import HERSHEY_FACES, HersheyFamily

__all__ = [
    "FIRST_FAMILIES",
    "GlyphBank",
    "GlyphSource",
    "family_names",
    "load_bank",
    "split_families",
]


class GlyphSource(Protocol):
    name: str
    chars: frozenset[str] | tuple[str, ...]

    def render(
        self, char: str, size: float, thickness: float, rng: np.random.Generator
    ) -> np.ndarray: ...


class GlyphBank:
    """Letter families plus one Hangul source; picks a family per letter."""

    def __init__(self, families: Sequence[GlyphSource], hangul: GlyphSource | None = None):
        by_name = {}
        for family in families:
            # A family must draw every letter in at least one case, or it is dropped.
            if all(c in family.chars or c.upper() in family.chars for c in _LOWER):
                by_name[family.name] = family
        if not by_name:
            raise DataError("no glyph family draws all 26 letters")
        self._families = dict(sorted(by_name.items()))
        self.hangul = hangul
        self._choices: dict[tuple[str, tuple[str, ...] | None], list[GlyphSource]] = {}

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self._families)

    def family(self, name: str) -> GlyphSource:
        return self._families[name]

    def render_letter(
        self,
        char: str,
        size: float,
        thickness: float,
        rng: np.random.Generator,
        families: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, str]:
        """Mask of `char` (a-z or A-Z) from a family drawn uniformly among `families`
        (None = all) that draw it; returns (mask, family name). A family lacking one case
        draws the other."""
        options = self._options(char, None if families is None else tuple(families))
        source = options[rng.integers(len(options))]
        drawn = char if char in source.chars else _swapcase(char)
        return source.render(drawn, size, thickness, rng), source.name

    def render_hangul(self, size: float, thickness: float, rng: np.random.Generator) -> np.ndarray:
        if self.hangul is None:
            raise DataError("this glyph bank has no Hangul source")
        chars = self.hangul.chars
        return self.hangul.render(chars[rng.integers(len(chars))], size, thickness, rng)

    def _options(self, char: str, families: tuple[str, ...] | None) -> list[GlyphSource]:
        key = (char, families)
        if key not in self._choices:
            names = self.families if families is None else families
            unknown = sorted(set(names) - set(self._families))
            if unknown:
                raise DataError(f"unknown glyph families {unknown}; known: {list(self.families)}")
            options = [
                self._families[n]
                for n in names
                if char in self._families[n].chars or _swapcase(char) in self._families[n].chars
            ]
            if not options:
                raise DataError(f"no family among {list(names)} draws {char!r}")
            self._choices[key] = options
        return self._choices[key]


_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _swapcase(char: str) -> str:
    return char.lower() if char.isupper() else char.upper()


@functools.lru_cache(maxsize=4)
def load_bank(emnist: str | Path | None = None) -> GlyphBank:
    """All bundled families (fonts + Hershey faces), plus EMNIST when a folder is given.

    Renders and ink-checks every glyph once; cached per process (per `emnist` value).
    """
    families: list[GlyphSource] = [FontFamily(name) for name in font_family_names()]
    families += [HersheyFamily(face) for face in HERSHEY_FACES]
    if emnist is not None:
        families.append(EmnistSource(emnist))
    return GlyphBank(families, HangulFont())


def family_names(emnist: str | Path | None = None) -> tuple[str, ...]:
    """Names of the usable glyph families, sorted."""
    return load_bank(emnist).families


# The families `split_families` splits by default: the 35 bundled when the benchmarks' split was
# drawn. A family added later always lands on the training side, so the learn bench's held-out
# families -- and the ready weights' promise that they never trained on them -- stay the same when
# the glyph bank grows (issue 14, round 8, added 18 fonts for a measurement: BENCHMARKS.md).
FIRST_FAMILIES = (
    "annie-use-your-telescope", "architects-daughter", "caveat", "coming-soon",
    "covered-by-your-grace", "dekko", "delius", "gloria-hallelujah", "gochi-hand", "handlee",
    "hershey-cursive", "hershey-futural", "hershey-rowmans", "hershey-scripts", "homemade-apple",
    "indie-flower", "just-another-hand", "kalam", "la-belle-aurore", "mansalva",
    "nanum-pen-script", "neucha", "nothing-you-could-do", "patrick-hand", "permanent-marker",
    "reenie-beanie", "rock-salt", "schoolbell", "shadows-into-light", "short-stack",
    "sue-ellen-francisco", "swanky-and-moo-moo", "the-girl-next-door", "waiting-for-the-sunrise",
    "zeyada",
)  # fmt: skip


def split_families(
    heldout_fraction: float = 0.2, seed: int = 0, families: Sequence[str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Deterministic split of families into (training, held-out), each sorted.

    `families=None` splits the bundled FIRST_FAMILIES (as the benchmarks always have) and
    puts every family added since on the training side; an explicit list is split whole.
    At least one family lands on each side when 0 < heldout_fraction < 1.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise DataError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    if families is None:
        known = family_names()
        names = sorted(n for n in known if n in FIRST_FAMILIES)
        later = [n for n in known if n not in FIRST_FAMILIES]
    else:
        names, later = sorted(families), []
    n_held = round(heldout_fraction * len(names))
    if heldout_fraction > 0:
        n_held = min(max(n_held, 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    held = {names[i] for i in order[:n_held]}
    return tuple(sorted([n for n in names if n not in held] + later)), tuple(sorted(held))
