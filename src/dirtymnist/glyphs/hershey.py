"""Glyph source from the Hershey single-stroke vector fonts, perturbed to look handwritten.

Letters are stroke polylines, so each request jitters the control points, bends the glyph
and redraws the strokes at the requested thickness: no two renders are alike.
"""

from __future__ import annotations

import cv2
import numpy as np

from dirtymnist.glyphs.fonts import LETTER_CHARS
from dirtymnist.glyphs.mask import has_ink, tight_crop

# Only the single-stroke faces survive perturbation (multi-stroke ones turn to scribble).
HERSHEY_FACES = ("futural", "rowmans", "scripts", "cursive")
_SHIFT = 3  # cv2 fixed-point bits: sub-pixel stroke coordinates


class HersheyFamily:
    """One Hershey face; family name `hershey-<face>`."""

    def __init__(self, face: str, chars: str = LETTER_CHARS):
        from HersheyFonts import HersheyFonts

        fonts = HersheyFonts()
        fonts.load_default_font(face)
        self.name = f"hershey-{face}"
        self._strokes: dict[str, list[np.ndarray]] = {}
        for ch in chars:
            strokes = [np.asarray(s, np.float32) for s in fonts.strokes_for_text(ch) if len(s) >= 2]
            if not strokes:
                continue
            pts = np.concatenate(strokes)
            extent = pts.max(0) - pts.min(0)
            if extent.max() <= 0:
                continue
            # Normalise: top-left at 0, longer side 1 (y grows downward, as in images).
            self._strokes[ch] = [(s - pts.min(0)) / extent.max() for s in strokes]
        # Every glyph must draw ink at a small size, or it is dropped.
        probe = np.random.default_rng(0)
        for ch in list(self._strokes):
            if not has_ink(self.render(ch, 20, 2, probe)):
                del self._strokes[ch]
        self.chars = frozenset(self._strokes)

    def render(
        self, char: str, size: float, thickness: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Tight (h, w) float32 mask in [0, 1], longer side ~`size`, strokes ~`thickness` px."""
        t = max(1, round(thickness))
        inner = max(2.0, size - t)
        pad = t + 2
        bend = rng.normal(0.0, 0.06)  # sideways bow, fraction of the glyph size
        phase = rng.uniform(0, np.pi)
        strokes = []
        for stroke in self._strokes[char]:
            pts = stroke.copy()
            pts[:, 0] += bend * np.sin(np.pi * pts[:, 1] + phase)
            pts += rng.normal(0.0, 0.025, pts.shape).astype(np.float32)
            strokes.append(pts)
        low = np.concatenate(strokes).min(0)  # perturbation may push points below 0
        lines = [
            np.round(((s - low) * inner + pad) * (1 << _SHIFT)).astype(np.int32) for s in strokes
        ]
        hi = np.concatenate(lines).max(0) >> _SHIFT
        canvas = np.zeros((int(hi[1]) + pad + 1, int(hi[0]) + pad + 1), np.uint8)
        cv2.polylines(canvas, lines, False, 255, t, cv2.LINE_AA, _SHIFT)
        return tight_crop(canvas.astype(np.float32) / 255.0)
