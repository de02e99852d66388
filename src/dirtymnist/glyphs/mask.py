"""Ink-mask helpers shared by the glyph sources: tight crop, resize, stroke width, thickening."""

from __future__ import annotations

import cv2
import numpy as np

# A glyph "draws ink" when its mask holds at least this much ink (in pixels of full ink).
MIN_INK = 4.0


def tight_crop(mask: np.ndarray, level: float = 0.02) -> np.ndarray:
    """Crop a (H, W) float mask to the box of pixels above `level`; (0, 0) when empty."""
    ys, xs = np.nonzero(mask > level)
    if ys.size == 0:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def has_ink(mask: np.ndarray) -> bool:
    return mask.size > 0 and float(mask.sum()) >= MIN_INK


def stroke_width(mask: np.ndarray) -> float:
    """Estimated stroke width (px) of a binary-ish mask: 2 * area / perimeter.

    A stroke of length L and width w has area ~ L*w and perimeter ~ 2*L.
    """
    binary = (mask > 0.5).astype(np.uint8)
    area = float(binary.sum())
    if area == 0:
        return 0.0
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    return 2.0 * area / max(perimeter, 1.0)


def scale_to(mask: np.ndarray, size: float) -> tuple[np.ndarray, float]:
    """Resize a tight mask so its longer side is `size` px; returns (mask, scale factor)."""
    h, w = mask.shape
    scale = float(size) / max(h, w)
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(mask, (out_w, out_h), interpolation=interp)
    return np.clip(out, 0.0, 1.0, out=out), scale  # INTER_AREA can round to 1 + eps


def set_thickness(mask: np.ndarray, have: float, want: float) -> np.ndarray:
    """Grow (dilate) or thin (erode) strokes from width `have` to about `want` px.

    Pads first so grown strokes are not cut; thinning that would erase the glyph is skipped.
    Returns a tight crop.
    """
    delta = round(want - have)
    if delta == 0:
        return mask
    k = abs(delta) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    if delta > 0:
        pad = k // 2 + 1
        padded = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        return tight_crop(cv2.dilate(padded, kernel))
    thinned = tight_crop(cv2.erode(mask, kernel))
    return thinned if has_ink(thinned) and thinned.sum() > 0.3 * mask.sum() else mask
