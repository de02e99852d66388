"""Scene generator and dataset writer: format round trip, determinism, label stats, knobs."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from dirtymnist import layout
from dirtymnist.cli import main
from dirtymnist.data.synth import SceneKnobs, render_scene, write_dataset
from dirtymnist.errors import ConfigError
from dirtymnist.glyphs import split_families


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.int64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, 12, 5, seed=7, workers=1, progress=False)
    return out


def test_layout_round_trip(dataset):
    header, train = _read_csv(dataset / layout.TRAIN_CSV)
    assert header == ["index", *layout.LETTERS]
    assert train[:, 0].tolist() == list(range(12))
    assert set(np.unique(train[:, 1:])) <= {0, 1}
    for index, *labels in train.tolist():
        image = cv2.imread(
            str(dataset / layout.TRAIN_DIR / f"{index:05d}.png"), cv2.IMREAD_UNCHANGED
        )
        assert image.shape == (256, 256) and image.dtype == np.uint8  # 8-bit grayscale
        scene = render_scene(7, index)
        assert np.array_equal(scene.image, image)
        assert scene.labels.tolist() == labels
    assert sorted(p.name for p in (dataset / layout.TRAIN_DIR).iterdir()) == [
        layout.png_name(i) for i in range(12)
    ]

    header, test = _read_csv(dataset / layout.TEST_ANSWER_CSV)
    assert header == ["index", *layout.LETTERS]
    assert test[:, 0].tolist() == list(range(12, 17))  # test indices continue
    assert sorted(p.name for p in (dataset / layout.TEST_DIR).iterdir()) == [
        layout.png_name(i) for i in range(12, 17)
    ]
    header, sample = _read_csv(dataset / layout.SAMPLE_CSV)
    assert header == ["index", *layout.LETTERS]
    assert sample[:, 0].tolist() == list(range(12, 17)) and not sample[:, 1:].any()


def test_workers_give_byte_identical_files(dataset, tmp_path):
    write_dataset(tmp_path, 12, 5, seed=7, workers=2, progress=False)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_rerun_removes_stale_images(dataset, tmp_path):
    write_dataset(tmp_path, 6, 2, seed=1, workers=1, progress=False)
    write_dataset(tmp_path, 3, 1, seed=1, workers=1, progress=False)
    assert len(list((tmp_path / layout.TRAIN_DIR).iterdir())) == 3
    assert [p.name for p in (tmp_path / layout.TEST_DIR).iterdir()] == ["00003.png"]


def test_seed_and_index_change_the_image():
    a, b, c = render_scene(0, 0), render_scene(0, 1), render_scene(1, 0)
    assert not np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert np.array_equal(a.image, render_scene(0, 0).image)


def test_label_stats_follow_the_competition():
    counts = []
    for i in range(30):
        scene = render_scene(3, i)
        letters = [p.letter for p in scene.letters]
        assert len(set(letters)) == len(letters)  # distinct
        assert sorted(letters) == [layout.LETTERS[k] for k in np.flatnonzero(scene.labels)]
        for p in scene.letters:
            assert 0 <= p.cx < 256 and 0 <= p.cy < 256 and 17 <= p.height <= 55
        counts.append(int(scene.labels.sum()))
    assert min(counts) >= 10 and max(counts) <= 14
    assert len(set(counts)) >= 4  # spread over the range


def test_letters_knob_sets_the_count_histogram():
    knobs = SceneKnobs(letters=(2, 3), distractors=(0, 0))
    counts = [int(render_scene(5, i, knobs).labels.sum()) for i in range(40)]
    assert set(counts) == {2, 3}
    one = SceneKnobs(letters=(5, 5))
    assert {int(render_scene(5, i, one).labels.sum()) for i in range(10)} == {5}


def test_noise_zero_gives_black_background():
    scene = render_scene(2, 0, SceneKnobs(noise=0.0))
    image = scene.image
    assert (image == 0).mean() > 0.7  # background black, letters bright
    assert image.max() >= 0.78 * 255  # solid letters: ink 0.78..1
    assert (image[image > 0] >= 255 * 0.3).mean() > 0.5


def test_default_look_matches_the_real_statistics():
    image = render_scene(0, 3).image
    med = cv2.medianBlur(image, 5)
    strokes = med >= 220
    background = cv2.dilate(strokes.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert 120 < image[background].mean() < 135 and 68 < image[background].std() < 80
    assert 0.6 < (image[strokes] == 255).mean() < 0.9  # real sample: 0.68 with this measure
    assert (image[strokes] >= 200).mean() > 0.8  # real sample: 0.88


def test_transparent_knob_dims_letters():
    def bright_share(knobs):
        return np.mean([(render_scene(4, i, knobs).image == 255).mean() for i in range(6)])

    opaque = bright_share(SceneKnobs(transparent=0.0, noise=0.5))
    see_through = bright_share(SceneKnobs(transparent=1.0, noise=0.5))
    assert see_through < 0.5 * opaque


def test_speckle_knob_draws_see_through_letters_as_specks():
    dim = SceneKnobs(transparent=1.0, noise=0.0)
    specks = SceneKnobs(transparent=1.0, noise=0.0, speckle=1.0, speckle_keep=(0.5, 0.5))
    solid = SceneKnobs(transparent=0.0, noise=0.0, solid=(1.0, 1.0))
    a, b, c = (render_scene(4, 0, k).image for k in (dim, specks, solid))
    assert (a == 255).sum() == 0  # faint everywhere: opacity <= 0.65
    assert (b == 255).sum() > 0.3 * (c == 255).sum()  # full strength where kept ...
    assert (b == 255).sum() < 0.7 * (c == 255).sum()  # ... on about half of the ink


def test_scenes_without_speckle_are_unchanged():
    # sha256 of these scenes before the speckle knob existed (from FIRST_FAMILIES, so the pin holds
    # if fonts are added): pools, caches and seeded figures hold
    import hashlib

    from dirtymnist.glyphs import FIRST_FAMILIES

    h = hashlib.sha256()
    for i in range(3):
        h.update(render_scene(7, i, SceneKnobs(transparent=0.5, families=FIRST_FAMILIES)).image.tobytes())
    assert h.hexdigest()[:16] == "51350bd544d7bdf0"


def test_families_knob_limits_the_fonts():
    train, held = split_families(0.3, seed=0)
    scene = render_scene(0, 0, SceneKnobs(families=held))
    assert scene.labels.sum() >= 10
    with pytest.raises(Exception, match="unknown glyph families"):
        render_scene(0, 0, SceneKnobs(families=("nope",)))


def test_bad_knobs_raise():
    with pytest.raises(ConfigError):
        SceneKnobs(letters=(5, 30))
    with pytest.raises(ConfigError):
        SceneKnobs(noise=1.5)
    with pytest.raises(ConfigError):
        SceneKnobs(speckle=2.0)
    with pytest.raises(ConfigError):
        SceneKnobs(speckle_keep=(0.9, 0.4))


def test_cli_synth_and_show(tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["synth", str(out), "--train", "4", "--test", "2", "--seed", "3", "--workers", "1"]
    assert main([*argv, "--letters", "3,4", "--distractors", "0,0"]) == 0
    _, train = _read_csv(out / layout.TRAIN_CSV)
    assert set(train[:, 1:].sum(1).tolist()) <= {3, 4}
    assert main(["show", str(out), "--n", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()
    assert main([*argv, "--letters", "3"]) == 2
    assert "--letters" in capsys.readouterr().err
