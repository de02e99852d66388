"""Training samples the generator can label richly: scenes with per-letter position maps, and
single-glyph crops. Each depends only on (seed, index, knobs), like `synth.render_scene`.

Position maps ("dense targets"): for every labelled letter, a disk of radius
max(MIN_RADIUS, RADIUS_FRAC * height) around its centre on a (26, GRID, GRID) grid over the
canvas. A fully-convolutional net's class maps are trained on them (after max-pooling the grid
down to the map size), so each image gives ~12 located positives and thousands of located
negatives instead of 26 image-level bits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dirtymnist import layout
from dirtymnist.data.synth import Placed, SceneKnobs, render_scene

GRID = 32  # target grid side: 8 px cells on a 256 canvas (stride 4 at 128 px input)
RADIUS_FRAC = 0.3  # disk radius as a fraction of the letter height
MIN_RADIUS = 4.0  # px on the canvas
CROP_CANVAS = 64  # side of a single-glyph crop (letters up to 55 px fit in any rotation)
CROP_DEFAULTS = {"canvas": CROP_CANVAS, "letters": (1, 1), "distractors": (0, 0), "height": (17.0, 44.0)}


def make_knobs(overrides: dict | None = None, base: dict | None = None) -> SceneKnobs:
    """SceneKnobs from a stage's `knobs` mapping (lists become tuples, as YAML gives lists)."""
    values = {**(base or {}), **(overrides or {})}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return SceneKnobs(**values)


def letter_maps(letters: list[Placed], canvas: int, grid: int = GRID) -> np.ndarray:
    """(26, grid, grid) uint8: 1 inside a disk around each letter's centre, in its class plane."""
    out = np.zeros((len(layout.LETTERS), grid, grid), np.uint8)
    cell = canvas / grid
    centres = (np.arange(grid) + 0.5) * cell  # cell centres in canvas px
    for p in letters:
        r = max(MIN_RADIUS, RADIUS_FRAC * p.height, 0.5 * cell)
        inside = (centres[:, None] - p.cy) ** 2 + (centres[None, :] - p.cx) ** 2 <= r * r
        out[layout.LETTERS.index(p.letter)][inside] = 1
    return out


def render_dense(seed: int, index: int, knobs: SceneKnobs, bank=None, grid: int = GRID):
    """Scene `index` with its position maps: (image (H, W) uint8, labels (26,) uint8, maps (26, g, g) uint8)."""
    scene = render_scene(seed, index, knobs, bank)
    return scene.image, scene.labels, letter_maps(scene.letters, knobs.canvas, grid)


def render_glyph_crop(seed: int, index: int, knobs: SceneKnobs | None = None, bank=None):
    """One letter over noise on a small canvas: (image (C, C) uint8, one-hot labels (26,) uint8).

    `knobs` defaults to CROP_DEFAULTS; a letter that does not fit is redrawn with the next
    sub-seed, so every crop holds exactly one letter.
    """
    knobs = knobs or make_knobs(CROP_DEFAULTS)
    if knobs.letters != (1, 1):
        knobs = dataclasses.replace(knobs, letters=(1, 1))
    for attempt in range(8):
        scene = render_scene(seed * 1000 + attempt, index, knobs, bank)
        if scene.labels.sum() == 1:
            return scene.image, scene.labels
    raise RuntimeError(f"no letter fits a {knobs.canvas}px crop with heights {knobs.height}")
