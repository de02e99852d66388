"""cache.py: build, reuse, rebuild on change, crash safety, opening."""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest

from dirtymnist import cache, layout
from dirtymnist.cache import build_cache, open_split
from dirtymnist.dataset import DataPaths, read_image, read_label_csv
from dirtymnist.errors import DataError


@pytest.fixture
def paths(tmp_path, make_dataset):
    return DataPaths.from_root(make_dataset(tmp_path / "data", n_train=10, n_test=4))


def test_build_and_open(paths):
    cache_dir = build_cache(paths, workers=1)
    assert cache_dir == paths.root / ".dirtymnist_cache"
    train = open_split(cache_dir, "train")
    assert train.images.shape == (10, 256, 256) and train.images.dtype == np.uint8
    assert np.array_equal(train.images[3], read_image(paths.train_dir / "00003.png"))
    assert np.array_equal(train.labels, read_label_csv(paths.train_csv).labels)
    assert train.index.tolist() == list(range(10)) and train.letters == layout.LETTERS
    with pytest.raises(ValueError):  # read-only
        train.images[0, 0, 0] = 1
    test = open_split(paths, "test")  # a DataPaths works too, and so does the data folder
    assert test.index.tolist() == [50000, 50001, 50002, 50003] and test.labels.shape == (4, 26)
    assert len(open_split(paths.root, "test")) == 4
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["splits"]["train"]["files"][3] == "00003.png"
    assert manifest["splits"]["train"]["csv"]["csv"]["name"] == layout.TRAIN_CSV


def test_without_test_answer_has_no_test_labels(paths, tmp_path):
    paths.test_answer_csv.unlink()
    cache_dir = build_cache(paths, cache_dir=tmp_path / "elsewhere", workers=1)
    assert cache_dir == tmp_path / "elsewhere"
    assert open_split(cache_dir, "test").labels is None


def test_reuse_and_rebuild_on_change(paths, caplog):
    caplog.set_level(logging.INFO, logger="dirtymnist.cache")
    cache_dir = build_cache(paths, workers=1)
    stamp = (cache_dir / "manifest.json").stat().st_mtime_ns
    caplog.clear()
    build_cache(paths, workers=1)
    assert "cache up to date" in caplog.text
    assert (cache_dir / "manifest.json").stat().st_mtime_ns == stamp

    new = np.full((256, 256), 77, np.uint8)
    cv2.imwrite(str(paths.train_dir / "00002.png"), new)
    st = (paths.train_dir / "00002.png").stat()
    os.utime(paths.train_dir / "00002.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    caplog.clear()
    build_cache(paths, workers=1)
    assert "rebuilding" in caplog.text and "train: 1 images modified (00002.png)" in caplog.text
    assert np.array_equal(open_split(cache_dir, "train").images[2], new)

    lines = paths.train_csv.read_text().splitlines()
    paths.train_csv.write_text("\n".join(lines[:-1]) + "\n")  # drop the last row ...
    (paths.train_dir / "00009.png").unlink()  # ... and its image
    caplog.clear()
    build_cache(paths, workers=1)
    assert "dirty_mnist_2nd_answer.csv changed" in caplog.text and "1 images removed" in caplog.text
    assert len(open_split(cache_dir, "train")) == 9

    caplog.clear()
    build_cache(paths, workers=1, force=True)
    assert "forced" in caplog.text


def test_open_split_without_cache(paths):
    with pytest.raises(DataError, match=r"run `dirtymnist cache DATA_DIR` first"):
        open_split(paths, "train")


def test_crash_mid_build_leaves_no_valid_cache(paths, monkeypatch):
    cache_dir = build_cache(paths, workers=1)  # a valid old cache, then a crashing rebuild
    real = cache._write_split
    calls = []

    def crash_after_first(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # as if killed after the train arrays were written
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "_write_split", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, workers=1, force=True)
    assert (cache_dir / "train_images.npy").exists()
    for split in ("train", "test"):
        with pytest.raises(DataError, match="cache incomplete"):
            open_split(cache_dir, split)
    monkeypatch.setattr(cache, "_write_split", real)
    build_cache(paths, workers=1)
    assert len(open_split(cache_dir, "test")) == 4


def test_crash_while_decoding_removes_partial(paths, monkeypatch):
    real = cache.dataset.decode_image
    seen = []

    def crash(path):
        seen.append(path)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(cache.dataset, "decode_image", crash)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, workers=1)
    cache_dir = paths.root / ".dirtymnist_cache"
    assert not (cache_dir / "manifest.json").exists()
    assert not list(cache_dir.glob("*.partial")) and not (cache_dir / "train_images.npy").exists()


def test_process_pool_and_bad_image(paths, monkeypatch, caplog):
    monkeypatch.setattr(cache, "_CHUNK", 3)  # several chunks for 2 workers
    cv2.imwrite(str(paths.train_dir / "00004.png"), np.full((256, 256, 3), 50, np.uint8))
    caplog.set_level(logging.WARNING)
    cache_dir = build_cache(paths, workers=2)
    train = open_split(cache_dir, "train")
    for i in (0, 4, 9):
        assert np.array_equal(train.images[i], read_image(paths.train_dir / layout.png_name(i)))
    assert "1 colour images converted to grayscale (first: 00004.png)" in caplog.text

    cv2.imwrite(str(paths.train_dir / "00007.png"), np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match=r"00007.png: size 64x64, expected 256x256"):
        build_cache(paths, workers=2)
    with pytest.raises(DataError, match="cache incomplete"):
        open_split(cache_dir, "train")


def test_damaged_array_is_refused(paths):
    cache_dir = build_cache(paths, workers=1)
    np.save(cache_dir / "train_index.npy", np.arange(3))
    with pytest.raises(DataError, match="do not match manifest.json"):
        open_split(cache_dir, "train")
