"""dataset.py: paths, label CSVs, split listing and image decoding, with every bad input."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from dirtymnist import layout
from dirtymnist.data.dataset import DataPaths, list_split, read_image, read_label_csv
from dirtymnist.errors import DataError

HEADER = "index," + ",".join(layout.LETTERS)


def _row(i, ones=()):
    return ",".join([str(i)] + ["1" if j in ones else "0" for j in range(26)])


def test_from_root_defaults_and_overrides(tmp_path):
    p = DataPaths.from_root(tmp_path)
    assert p.train_dir == tmp_path / layout.TRAIN_DIR
    assert p.sample_csv == tmp_path / layout.SAMPLE_CSV
    q = DataPaths.from_root(tmp_path, train_dir="train", test_dir="/elsewhere/test",
                            train_csv="labels.csv")
    assert q.train_dir == tmp_path / "train"
    assert str(q.test_dir) == "/elsewhere/test"
    assert q.train_csv == tmp_path / "labels.csv"


def test_read_label_csv_ok(tmp_path, make_dataset):
    root = make_dataset(tmp_path, n_train=12, n_test=3)
    t = read_label_csv(root / layout.TRAIN_CSV)
    assert t.index.dtype == np.int64 and t.index.tolist() == list(range(12))
    assert t.labels.shape == (12, 26) and t.labels.dtype == np.uint8
    assert ((t.labels.sum(1) >= 10) & (t.labels.sum(1) <= 14)).all()
    assert t.letters == layout.LETTERS


def test_read_label_csv_reordered_columns(tmp_path):
    cols = ["index", *reversed(layout.LETTERS)]
    path = tmp_path / "x.csv"
    path.write_text(",".join(cols) + "\n7," + ",".join("1" if c == "a" else "0" for c in cols[1:]) + "\n")
    t = read_label_csv(path)
    assert t.labels[0, 0] == 1 and t.labels[0].sum() == 1


@pytest.mark.parametrize("text, expect", [
    (None, "not found"),
    ("", "empty file"),
    (HEADER + "\n", "no data rows"),
    ("index," + ",".join(layout.LETTERS[:-1]) + "\n", "missing columns ['z']"),
    (HEADER + ",extra\n", "extra columns ['extra']"),
    (HEADER + "\n" + _row(0) + "\n" + _row(1).replace("0", "2", 2) + "\n", "line 3, column 'a': value '2' is not 0 or 1"),
    (HEADER + "\n" + _row(0) + "\n" + _row(0) + "\n", "duplicate indices 0"),
    (HEADER + "\n" + _row("x") + "\n", "index 'x' is not an integer"),
    (HEADER + "\n" + _row(0) + ",1\n", "line 2 has 28 fields"),
])
def test_read_label_csv_errors(tmp_path, text, expect):
    path = tmp_path / "labels.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError) as err:
        read_label_csv(path)
    msg = str(err.value)
    assert str(path) in msg and expect in msg and "\n" not in msg


def test_list_split_ok(tmp_path, make_dataset):
    paths = DataPaths.from_root(make_dataset(tmp_path, n_train=6, n_test=4))
    train = list_split(paths, "train")
    assert len(train) == 6 and train.paths[3].name == "00003.png" and train.labels.shape == (6, 26)
    test = list_split(paths, "test")
    assert test.index.tolist() == [50000, 50001, 50002, 50003] and test.labels is not None
    (tmp_path / layout.TEST_ANSWER_CSV).unlink()
    assert list_split(paths, "test").labels is None


def test_list_split_test_labels_follow_sample_order(tmp_path, make_dataset):
    root = make_dataset(tmp_path, n_train=2, n_test=3)
    answer = read_label_csv(root / layout.TEST_ANSWER_CSV)
    lines = (root / layout.TEST_ANSWER_CSV).read_text().splitlines()
    (root / layout.TEST_ANSWER_CSV).write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    test = list_split(DataPaths.from_root(root), "test")
    assert np.array_equal(test.labels, answer.labels)


def test_list_split_missing_folder(tmp_path, make_dataset):
    paths = DataPaths.from_root(make_dataset(tmp_path, n_train=2, n_test=1), train_dir="train")
    with pytest.raises(DataError, match="train image folder not found") as err:
        list_split(paths, "train")
    assert str(tmp_path / "train") in str(err.value)


def test_list_split_missing_csv(tmp_path, make_dataset):
    root = make_dataset(tmp_path, n_train=2, n_test=1)
    (root / layout.SAMPLE_CSV).unlink()
    with pytest.raises(DataError, match="sample_submission.csv: label file not found"):
        list_split(DataPaths.from_root(root), "test")


def test_list_split_index_without_png_and_png_without_index(tmp_path, make_dataset):
    root = make_dataset(tmp_path, n_train=8, n_test=1)
    paths = DataPaths.from_root(root)
    (root / layout.TRAIN_DIR / "00003.png").unlink()
    with pytest.raises(DataError, match=r"1 indices of dirty_mnist_2nd_answer.csv have no PNG: 00003.png"):
        list_split(paths, "train")
    (root / layout.TRAIN_DIR / "00009.png").write_bytes((root / layout.TRAIN_DIR / "00001.png").read_bytes())
    (root / layout.TRAIN_DIR / "00003.png").write_bytes((root / layout.TRAIN_DIR / "00001.png").read_bytes())
    with pytest.raises(DataError, match=r"1 PNGs have no row in dirty_mnist_2nd_answer.csv: 00009.png") as err:
        list_split(paths, "train")
    assert str(root / layout.TRAIN_DIR) in str(err.value)


def test_list_split_many_offenders_are_counted(tmp_path, make_dataset):
    root = make_dataset(tmp_path, n_train=9, n_test=1)
    for i in range(8):
        (root / layout.TRAIN_DIR / layout.png_name(i)).unlink()
    with pytest.raises(DataError, match=r"00000.png, .*00004.png, \.\.\. \(8 in total\)"):
        list_split(DataPaths.from_root(root), "train")


def test_read_image_ok(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and np.array_equal(out, img)


def test_read_image_rgb_converted_with_warning(tmp_path, caplog):
    img = np.full((256, 256, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), img)
    with caplog.at_level(logging.WARNING, logger="dirtymnist.data.dataset"):
        out = read_image(tmp_path / "c.png")
    assert out.shape == (256, 256) and int(out[0, 0]) == 200
    assert "c.png" in caplog.text and "converted to grayscale" in caplog.text
    cv2.imwrite(str(tmp_path / "d.png"), np.full((256, 256, 4), 9, np.uint8))
    assert read_image(tmp_path / "d.png").shape == (256, 256)


@pytest.mark.parametrize("make, expect", [
    (lambda p: cv2.imwrite(str(p), np.zeros((100, 120), np.uint8)), "size 120x100, expected 256x256"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "not a readable image"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: cv2.imwrite(str(p), np.zeros((256, 256), np.uint16)), "16-bit"),
    (lambda p: None, "image not found"),
])
def test_read_image_errors(tmp_path, make, expect):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_truncated_png(tmp_path):
    path = tmp_path / "t.png"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match="t.png: not a readable image"):
        read_image(path)


def test_renamed_folders_are_remembered_after_cache(tmp_path, make_dataset):
    from dirtymnist.cli import main
    from dirtymnist.data.dataset import DataPaths

    root = make_dataset(tmp_path / "data", n_train=6, n_test=2)
    (root / "dirty_mnist_2nd").rename(root / "train")
    (root / "test_dirty_mnist_2nd").rename(root / "test")
    assert main(["cache", str(root), "--train-dir", "train", "--test-dir", "test", "--workers", "1"]) == 0
    paths = DataPaths.from_root(root)  # no overrides: read back from dirtymnist_layout.json
    assert paths.train_dir == root / "train" and paths.test_dir == root / "test"
    assert main(["folds", str(root), "--k", "2"]) == 0
