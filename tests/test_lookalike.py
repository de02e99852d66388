"""tests/lookalike_scenes.py (bench/lookalike.py's renderer): the independent look-alike set is drawn
by its own code, deterministically, in the real images' format, with labels that are exactly the
letters it placed."""

from __future__ import annotations

import ast
from pathlib import Path

import lookalike_scenes as lookalike
import numpy as np
import pytest
from PIL import Image

FONTS = Path(__file__).resolve().parents[1] / "src/dirtymnist/glyphs/fonts"


def test_the_renderer_shares_no_code_with_the_generator():
    tree = ast.parse(Path(lookalike.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            imported |= {n.module or ""} | {f"{n.module}.{a.name}" for a in n.names}
    assert "dirtymnist.atomic" in imported  # its CSVs are written as the package writes them
    assert not any(m.startswith(("dirtymnist.data", "dirtymnist.glyphs")) for m in imported)


def test_make_writes_a_deterministic_set_in_the_real_format(tmp_path):
    for out in ("a", "b"):
        lookalike.make(tmp_path / out, FONTS, 6, seed=3, only=["caveat", "neucha"])
    images, labels, fonts = lookalike.read_set(tmp_path / "a")
    assert images.shape == (6, 256, 256) and images.dtype == np.uint8
    assert Image.open(tmp_path / "a" / "images" / "00000.png").mode == "L"
    assert set(fonts) == {"caveat", "neucha"}
    assert all(8 <= n <= 14 for n in labels.sum(1))  # 10-14 drawn, a rare one may not fit
    again, labels_b, _ = lookalike.read_set(tmp_path / "b")
    assert np.array_equal(images, again) and np.array_equal(labels, labels_b)
    # the background is the uniform noise; the letters are bright
    assert 110 < images.mean() < 160 and (images == 255).mean() > 0.02


def test_labels_are_the_letters_placed(monkeypatch):
    latin, hangul = lookalike.load_fonts(FONTS, ["neucha"])
    assert hangul, "the package's Hangul subsets serve as distractors"
    font = latin["neucha"]
    events = []  # [drawn from the letter font?, char, placed?] per glyph, in drawing order
    mask, place = lookalike.Font.mask, lookalike.Canvas.place

    def spy_mask(self, ch):
        events.append([self is font, ch, None])
        return mask(self, ch)

    def spy_place(self, m, rng, ink=None):
        ok = place(self, m, rng, ink)
        events[-1][2] = ok  # the glyph drawn last is the one being placed
        return ok

    monkeypatch.setattr(lookalike.Font, "mask", spy_mask)
    monkeypatch.setattr(lookalike.Canvas, "place", spy_place)
    for seed in range(4):
        events.clear()
        _, labels = lookalike.render(np.random.default_rng(seed), font, hangul, transparent=0.5)
        placed = {ch.lower() for letter, ch, ok in events if letter and ok}
        assert 10 <= labels.sum() <= 14
        assert {lookalike.LETTERS[k] for k in np.flatnonzero(labels)} == placed
    monkeypatch.setattr(lookalike.Canvas, "place", lambda *a, **k: False)  # nothing fits: no label
    image, labels = lookalike.render(np.random.default_rng(0), font, hangul)
    assert labels.sum() == 0 and (image == 255).mean() < 0.01  # noise only (1/256 of it is 255)


def test_no_shape_is_covered_much_by_the_others():
    canvas = lookalike.Canvas()
    rng = np.random.default_rng(0)
    for _ in range(40):
        canvas.place(np.ones((60, 60), np.float32), rng)
        canvas.place(np.ones((8, 8), np.float32), rng)
    assert len(canvas.areas) > 8
    # from the recorded spots: the pixels of each shape that any other shape also covers
    for i, (y, x, solid) in enumerate(canvas.spots[1:], 1):
        others = np.zeros((256, 256), bool)
        for j, (y2, x2, solid2) in enumerate(canvas.spots[1:], 1):
            if j != i:
                others[y2:y2 + solid2.shape[0], x2:x2 + solid2.shape[1]] |= solid2
        shared = (others[y:y + solid.shape[0], x:x + solid.shape[1]] & solid).sum()
        assert shared <= lookalike.MAX_OVERLAP * solid.sum()


def test_a_set_with_wrong_columns_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("index,a,b\n0,1,0\n")
    with pytest.raises(SystemExit, match="labels.csv: columns are not index,font,a..z"):
        lookalike.read_set(tmp_path)


def test_a_font_without_every_letter_is_skipped(tmp_path, capsys):
    family = tmp_path / "broken"
    family.mkdir()
    src = next((FONTS / "nanum-pen-script").glob("*-1*-400-normal.woff2"))  # a Hangul-only subset
    (family / "broken-latin-400-normal.woff2").write_bytes(src.read_bytes())
    with pytest.raises(SystemExit, match="no font with all 52 letters"):
        lookalike.load_fonts(tmp_path)
    assert "not every letter" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"no usable font folder \['kaveat'\]"):
        lookalike.load_fonts(FONTS, ["caveat", "kaveat"])


def test_no_lookalike_font_is_bundled_or_fetched(monkeypatch):
    # The set measures hands the package never trained on: none of its fonts may be bundled.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import fetch_fonts

    bundled = {p.name for p in FONTS.iterdir() if p.is_dir()}
    assert len(lookalike.LOOKALIKE_FONTS) == 13
    assert not set(lookalike.LOOKALIKE_FONTS) & (bundled | set(fetch_fonts.FAMILIES))
    # the extra hands the ready weights trained on: none a look-alike or a bundled (held-out) family
    extra = set(fetch_fonts.WEIGHTS_FAMILIES)
    assert len(extra) == len(fetch_fonts.WEIGHTS_FAMILIES) == 81
    assert not extra & (set(lookalike.LOOKALIKE_FONTS) | bundled | set(fetch_fonts.FAMILIES))
    # the 51-font folder's 38 more hands and TESTC's 12: in no weights, no bundle, and apart
    more, testc = set(lookalike.MORE_FONTS), set(lookalike.TESTC_FONTS)
    assert (len(more), len(testc)) == (38, 12)
    assert not (more | testc) & (extra | bundled | set(fetch_fonts.FAMILIES) | set(lookalike.LOOKALIKE_FONTS))
    assert not more & testc


def test_folder_is_a_competition_layout_the_package_reads(tmp_path):
    from dirtymnist.data.dataset import DataPaths, list_split

    for out, workers in (("a", 1), ("b", 2)):
        lookalike.folder(tmp_path / out, FONTS, 6, 3, seed=5, workers=workers, only=["caveat", "neucha"])
    paths = DataPaths.from_root(tmp_path / "a")
    train, test = list_split(paths, "train"), list_split(paths, "test")
    assert list(train.index) == list(range(6)) and list(test.index) == [6, 7, 8]
    assert train.labels.shape == (6, 26) and test.labels.shape == (3, 26)
    images, labels, _ = lookalike.read_set(tmp_path / "a")  # the test split, as `score` reads it
    assert images.shape == (3, 256, 256) and np.array_equal(labels, test.labels)
    assert all(8 <= n <= 14 for n in np.concatenate([train.labels, labels]).sum(1))
    again, labels_b, _ = lookalike.read_set(tmp_path / "b")  # any number of workers: the same scenes
    assert np.array_equal(images, again) and np.array_equal(labels, labels_b)
    assert (tmp_path / "a" / "sample_submission.csv").read_text().splitlines()[1] == "6," + ",".join("0" * 26)
