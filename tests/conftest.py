"""Shared test fixtures.

`make_dataset(root, n_train=..., n_test=..., seed=...)` writes a tiny folder in the
competition's layout and returns `root`:

    root/dirty_mnist_2nd/00000.png ...        random-noise 256x256 grayscale PNGs
    root/dirty_mnist_2nd_answer.csv           index,a..z; 10-14 ones per row
    root/test_dirty_mnist_2nd/50000.png ...   test images (indices start at 50000)
    root/sample_submission.csv                test indices, all zeros
    root/test_answer.csv                      test labels (as synthetic data has)

Example:
    def test_x(tmp_path, make_dataset):
        root = make_dataset(tmp_path / "data", n_train=20, n_test=5)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dirtymnist import layout

TEST_START = 50_000  # the competition's first test index


def random_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 26) uint8 with 10-14 distinct letters per row, like the competition's."""
    labels = np.zeros((n, len(layout.LETTERS)), dtype=np.uint8)
    for row in labels:
        row[rng.choice(len(layout.LETTERS), rng.integers(10, 15), replace=False)] = 1
    return labels


def write_label_csv(path: Path, index, labels) -> None:
    lines = [",".join(["index", *layout.LETTERS])]
    lines += [",".join([str(int(i)), *map(str, row.tolist())]) for i, row in zip(index, labels)]
    path.write_text("\n".join(lines) + "\n")


def write_dataset(root: Path, n_train: int = 20, n_test: int = 5, seed: int = 0) -> Path:
    """Write a tiny competition-layout folder at `root` (created) and return `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for folder, start, n in ((layout.TRAIN_DIR, 0, n_train), (layout.TEST_DIR, TEST_START, n_test)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            img = rng.integers(0, 256, (layout.IMAGE_SIZE, layout.IMAGE_SIZE), dtype=np.uint8)
            assert cv2.imwrite(str(root / folder / layout.png_name(i)), img)
    write_label_csv(root / layout.TRAIN_CSV, range(n_train), random_labels(rng, n_train))
    test_index = range(TEST_START, TEST_START + n_test)
    write_label_csv(root / layout.SAMPLE_CSV, test_index,
                    np.zeros((n_test, len(layout.LETTERS)), dtype=np.uint8))
    write_label_csv(root / layout.TEST_ANSWER_CSV, test_index, random_labels(rng, n_test))
    return root


@pytest.fixture
def make_dataset():
    """The `write_dataset(root, n_train=20, n_test=5, seed=0) -> root` function."""
    return write_dataset


def train_argv(data, run, overrides, *extra: str) -> list[str]:
    """argv of `dirtymnist train DATA --preset cpu --run-dir RUN [extra] --set ...` for tests."""
    argv = ["train", str(data), "--preset", "cpu", "--run-dir", str(run), *extra]
    for item in overrides:
        argv += ["--set", item]
    return argv
