"""Glyph bank: every glyph draws ink, family split, EMNIST loading from a tiny fake idx file."""

from __future__ import annotations

import gzip
import string

import numpy as np
import pytest

from dirtymnist.errors import DataError
from dirtymnist.glyphs import FIRST_FAMILIES, GlyphBank, family_names, load_bank, split_families
from dirtymnist.glyphs.emnist import IMAGES_FILE, LABELS_FILE, EmnistSource, load_emnist
from dirtymnist.glyphs.fonts import FontFamily
from dirtymnist.glyphs.hershey import HERSHEY_FACES


def test_bank_has_many_families_of_each_kind():
    names = family_names()
    assert len(names) >= 24
    assert {f"hershey-{face}" for face in HERSHEY_FACES} <= set(names)
    assert {"caveat", "kalam", "permanent-marker"} <= set(names)
    assert list(names) == sorted(names)


def test_every_glyph_of_every_family_draws_ink():
    bank = load_bank()
    rng = np.random.default_rng(0)
    for name in bank.families:
        family = bank.family(name)
        for letter in string.ascii_lowercase:
            # Every letter is drawable in at least one case; every listed char draws ink.
            assert letter in family.chars or letter.upper() in family.chars, (name, letter)
        for char in family.chars:
            mask = family.render(char, 30, 4, rng)
            assert mask.dtype == np.float32 and mask.ndim == 2, (name, char)
            assert 0.0 <= mask.min() and mask.max() <= 1.0, (name, char)
            assert mask.sum() >= 10, (name, char)
            # Tight crop: ink on every border, longer side near the requested size.
            assert mask[0].max() > 0 and mask[-1].max() > 0 and mask[:, 0].max() > 0
            assert 15 <= max(mask.shape) <= 45, (name, char, mask.shape)
    assert len(bank.hangul.chars) >= 50
    for char in bank.hangul.chars[:20]:
        assert bank.hangul.render(char, 30, 4, rng).sum() >= 10


def test_thickness_thickens():
    bank = load_bank()
    thin = bank.family("caveat").render("a", 40, 2, np.random.default_rng(0))
    thick = bank.family("caveat").render("a", 40, 8, np.random.default_rng(0))
    assert (thick > 0.5).sum() > 1.5 * (thin > 0.5).sum()


def test_hershey_renders_vary_per_rng():
    family = load_bank().family("hershey-futural")
    a = family.render("k", 40, 4, np.random.default_rng(1))
    b = family.render("k", 40, 4, np.random.default_rng(2))
    same = family.render("k", 40, 4, np.random.default_rng(1))
    assert np.array_equal(a, same)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_family_with_missing_letter_is_dropped():
    class Partial:
        name = "partial"
        chars = frozenset("abc")

        def render(self, char, size, thickness, rng):
            return np.ones((5, 5), np.float32)

    full = load_bank().family("caveat")
    bank = GlyphBank([Partial(), full])
    assert bank.families == ("caveat",)
    with pytest.raises(DataError):
        GlyphBank([Partial()])


def test_render_letter_respects_families():
    bank = load_bank()
    rng = np.random.default_rng(0)
    seen = {bank.render_letter("q", 30, 4, rng, families=("kalam", "neucha"))[1] for _ in range(40)}
    assert seen == {"kalam", "neucha"}
    with pytest.raises(DataError, match="unknown glyph families"):
        bank.render_letter("q", 30, 4, rng, families=("no-such-font",))


def test_split_families_is_disjoint_and_deterministic():
    names = family_names()
    train, held = split_families(0.2, seed=3)
    assert set(train).isdisjoint(held)
    assert set(train) | set(held) == set(names)
    assert len(held) == round(0.2 * len(set(names) & set(FIRST_FAMILIES)))
    assert (train, held) == split_families(0.2, seed=3)
    assert held != split_families(0.2, seed=4)[1]
    assert split_families(0.0)[1] == ()
    assert split_families(0.01, families=["a", "b", "c"])[1] != ()  # at least one held out
    with pytest.raises(DataError):
        split_families(1.0)


def test_split_families_keeps_the_benchmark_split_when_fonts_are_added(monkeypatch):
    # The learn bench's held-out families (and the ready weights' promise never to have trained
    # on them) must not move when the glyph bank grows: added families go to training.
    import dirtymnist.glyphs as glyphs

    before = split_families(0.2, seed=0)
    assert before[1] == (
        "caveat", "coming-soon", "covered-by-your-grace", "neucha", "rock-salt",
        "sue-ellen-francisco", "waiting-for-the-sunrise",
    )  # fmt: skip
    grown = (*family_names(), "zz-new-hand", "aa-new-script")
    monkeypatch.setattr(glyphs, "family_names", lambda emnist=None: tuple(sorted(grown)))
    train, held = split_families(0.2, seed=0)
    assert held == before[1]
    assert {"zz-new-hand", "aa-new-script"} <= set(train)
    assert set(train) | set(held) == set(grown)


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_emnist(folder, blank_letter: int | None = None):
    """Two samples per letter: a bar whose position encodes the letter (stored transposed)."""
    images, labels = [], []
    for k in range(26):
        for _ in range(2):
            img = np.zeros((28, 28), np.uint8)
            if k != blank_letter:
                img[4:24, 2 + k // 2 : 6 + k // 2] = 255  # upright: a vertical bar
            images.append(img.T)  # EMNIST stores images transposed
            labels.append(k + 1)
    _write_idx(folder / IMAGES_FILE, np.stack(images))
    _write_idx(folder / LABELS_FILE, np.array(labels))


def test_emnist_loads_fake_idx_files(tmp_path):
    _fake_emnist(tmp_path, blank_letter=25)
    images, labels = load_emnist(tmp_path)
    assert images.shape == (52, 28, 28) and labels.tolist()[:4] == [0, 0, 1, 1]
    # Transposed back: the bar is vertical (tall, narrow).
    ys, xs = np.nonzero(images[0])
    assert np.ptp(ys) > 3 * np.ptp(xs)
    source = EmnistSource(tmp_path)
    assert "z" not in source.chars and "Z" not in source.chars  # empty letter dropped
    assert {"a", "A", "y"} <= source.chars
    mask = source.render("A", 40, 5, np.random.default_rng(0))
    assert mask.shape[0] > mask.shape[1] and 30 <= mask.shape[0] <= 45
    # A bank drops the family: it cannot draw 'z'.
    assert "emnist" not in GlyphBank([source, FontFamily("caveat")]).families


def test_emnist_full_family_in_bank(tmp_path):
    _fake_emnist(tmp_path)
    bank = load_bank(tmp_path)
    assert "emnist" in bank.families
    mask, name = bank.render_letter("m", 30, 4, np.random.default_rng(0), families=["emnist"])
    assert name == "emnist" and mask.sum() > 10


def test_emnist_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_emnist(tmp_path)
    _fake_emnist(tmp_path)
    (tmp_path / LABELS_FILE).write_bytes(gzip.compress(b"\x00\x00\x0d\x01garbage"))
    with pytest.raises(DataError, match="magic"):
        load_emnist(tmp_path)
