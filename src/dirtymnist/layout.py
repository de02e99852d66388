"""The competition's file layout and class list (see shared/docs/DATA.md)."""

from __future__ import annotations

import string

# The competition's names; every path is overridable where the data is read.
TRAIN_DIR = "dirty_mnist_2nd"
TRAIN_CSV = "dirty_mnist_2nd_answer.csv"
TEST_DIR = "test_dirty_mnist_2nd"
SAMPLE_CSV = "sample_submission.csv"
TEST_ANSWER_CSV = "test_answer.csv"  # synthetic data only: the hidden test labels

LETTERS: tuple[str, ...] = tuple(string.ascii_lowercase)
IMAGE_SIZE = 256
MIN_LETTERS, MAX_LETTERS = 10, 14


def png_name(index: int) -> str:
    """File name of image `index`: 5-digit zero-padded, e.g. 00042.png."""
    return f"{int(index):05d}.png"
