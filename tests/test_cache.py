"""cache.py: build, reuse, rebuild on change, crash safety, opening."""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest

from dirtymnist import layout
from dirtymnist.data import cache
from dirtymnist.data.cache import build_cache, open_split
from dirtymnist.data.dataset import DataPaths, read_image, read_label_csv
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
    caplog.set_level(logging.INFO, logger="dirtymnist.data.cache")
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


# --- faults: partial folders, space, parallel builders, content hashes ---------------------


def test_a_folder_with_one_split_caches_only_that_split(tmp_path, make_dataset):
    import shutil

    root = make_dataset(tmp_path / "data", n_train=6, n_test=3)
    shutil.rmtree(root / layout.TEST_DIR)
    (root / layout.SAMPLE_CSV).unlink()
    (root / layout.TEST_ANSWER_CSV).unlink()
    paths = DataPaths.from_root(root)
    assert cache.present_splits(paths) == ("train",)
    cache_dir = build_cache(paths, workers=1)
    assert len(open_split(cache_dir, "train")) == 6
    with pytest.raises(DataError, match="no test split in manifest.json"):
        open_split(cache_dir, "test")
    with pytest.raises(DataError, match=r"the test split is missing \(test_dirty_mnist_2nd/ and "
                                        r"sample_submission.csv not found here\)"):
        build_cache(paths, splits=("test",), workers=1)


def test_test_images_and_sample_submission_are_enough_to_predict(tmp_path, make_dataset):
    import shutil

    root = make_dataset(tmp_path / "data", n_train=6, n_test=3)
    shutil.rmtree(root / layout.TRAIN_DIR)
    (root / layout.TRAIN_CSV).unlink()
    cache_dir = build_cache(DataPaths.from_root(root), splits=("test",), workers=1)
    assert open_split(cache_dir, "test").index.tolist() == [50000, 50001, 50002]
    # the train split, added later, is cached beside it; the test split is reused as is
    stamp = (cache_dir / "test_images.npy").stat().st_mtime_ns
    make_dataset(tmp_path / "full", n_train=6, n_test=3)
    shutil.copytree(tmp_path / "full" / layout.TRAIN_DIR, root / layout.TRAIN_DIR)
    shutil.copy(tmp_path / "full" / layout.TRAIN_CSV, root / layout.TRAIN_CSV)
    build_cache(DataPaths.from_root(root), workers=1)
    assert len(open_split(cache_dir, "train")) == 6
    assert (cache_dir / "test_images.npy").stat().st_mtime_ns == stamp


def test_not_enough_space_is_refused_before_the_old_cache_is_touched(paths, monkeypatch):
    from dirtymnist import space

    cache_dir = build_cache(paths, workers=1)
    manifest = (cache_dir / "manifest.json").read_bytes()
    monkeypatch.setattr(space, "free_bytes", lambda path: 100_000)
    with pytest.raises(space.SpaceError) as e:
        build_cache(paths, workers=1, force=True)
    import re

    need = re.match(rf"{re.escape(str(cache_dir))}: the cache needs ([\d.]+) kB, 100.0 kB free there",
                    str(e.value))
    assert need and float(need.group(1)) * 1000 >= 14 * 256 * 256  # 14 images' pixels at least
    assert (cache_dir / "manifest.json").read_bytes() == manifest
    assert len(open_split(cache_dir, "train")) == 10


@pytest.mark.parametrize("workers", [1, 2])
def test_a_disk_that_fills_during_the_build_is_one_line_and_no_partial(paths, monkeypatch, workers):
    from dirtymnist import space

    monkeypatch.setenv("DIRTYMNIST_ENOSPC_AT_WRITE", "3")  # index, labels, then the image array
    monkeypatch.setattr(space, "_counts", {})
    with pytest.raises(space.SpaceError) as e:
        build_cache(paths, workers=workers)
    cache_dir = paths.root / ".dirtymnist_cache"
    assert str(e.value).startswith(f"{cache_dir / 'train_images.npy.partial'}: the cache failed: "
                                   "No space left on device")
    assert not list(cache_dir.glob("*.partial")) and not (cache_dir / "manifest.json").exists()


def test_two_builders_at_once_build_once(paths):
    import subprocess
    import sys

    code = ("import sys, logging; logging.basicConfig(level=logging.INFO);"
            "from dirtymnist.data.dataset import DataPaths; from dirtymnist.data.cache import build_cache;"
            "build_cache(DataPaths.from_root(sys.argv[1]), workers=1)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(paths.root)], stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert sum("cache written" in log for log in logs) == 1  # the other waited, then reused it
    assert len(open_split(paths, "train")) == 10


def test_verify_sees_a_change_that_keeps_size_and_mtime(paths, caplog):
    cache_dir = build_cache(paths, workers=1, verify=True)
    png = paths.train_dir / "00001.png"
    st = png.stat()
    other = (paths.train_dir / "00002.png").read_bytes()
    png.write_bytes(other[:st.st_size].ljust(st.st_size, b"\0") if len(other) >= st.st_size else
                    other + b"\0" * (st.st_size - len(other)))
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))
    caplog.set_level(logging.INFO, logger="dirtymnist.data.cache")
    build_cache(paths, workers=1)
    assert "cache up to date" in caplog.text  # sizes and times alone cannot see it
    caplog.clear()
    build_cache(paths, workers=1, verify=True)
    assert "train: 1 images changed in content (00001.png)" in caplog.text
    assert np.array_equal(open_split(cache_dir, "train").images[1], read_image(png))
    assert not np.array_equal(read_image(png), read_image(paths.train_dir / "00000.png"))


def test_a_corrupt_png_is_one_line_without_libpng_noise(paths):
    import subprocess
    import sys

    png = paths.train_dir / "00003.png"
    data = bytearray(png.read_bytes())
    data[40:60] = b"\0" * 20
    png.write_bytes(bytes(data))
    p = subprocess.run([sys.executable, "-m", "dirtymnist", "cache", str(paths.root), "--workers", "1"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[-1] == f"dirtymnist cache: error: {png}: not a readable image (corrupt or not a PNG)"
    assert not [x for x in lines if "libpng" in x or "WARN" in x or "Traceback" in x], lines


def test_files_left_by_a_killed_build_are_removed(paths):
    cache_dir = build_cache(paths, workers=1)
    left = [cache_dir / ".manifest.json.abc123.tmp", cache_dir / "train_images.npy.partial"]
    for p in left:
        p.write_bytes(b"half")
    build_cache(paths, workers=1)  # up to date: only the leftovers go
    assert not any(p.exists() for p in left) and len(open_split(cache_dir, "train")) == 10
