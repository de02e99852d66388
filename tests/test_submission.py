"""Submission files: sample order and columns, 0/1, refusal of other rows, probability files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_labels

from dirtymnist import layout
from dirtymnist.data.dataset import read_label_csv
from dirtymnist.errors import DataError
from dirtymnist.infer.evaluate import evaluate_submission
from dirtymnist.submission import load_probs, save_probs, write_submission


def test_round_trip_in_sample_order(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=1, n_test=8)
    sample = read_label_csv(data / layout.SAMPLE_CSV)
    answer = read_label_csv(data / layout.TEST_ANSWER_CSV)
    shuffle = np.random.default_rng(0).permutation(len(answer))
    out = write_submission(tmp_path / "sub.csv", answer.index[shuffle], answer.labels[shuffle],
                           data / layout.SAMPLE_CSV)
    lines = out.read_text().splitlines()
    assert lines[0] == (data / layout.SAMPLE_CSV).read_text().splitlines()[0]
    assert [int(line.split(",")[0]) for line in lines[1:]] == sample.index.tolist()
    assert all(set(line.split(",")[1:]) <= {"0", "1"} for line in lines[1:])
    assert evaluate_submission(out, data / layout.TEST_ANSWER_CSV).label_acc == 1.0
    assert not list(tmp_path.glob(".*.tmp"))


def test_refuses_rows_that_differ_from_the_sample(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=1, n_test=5)
    labels = random_labels(np.random.default_rng(0), 5)
    for index in (np.arange(50_000, 50_004), np.arange(50_001, 50_006), np.array([50_000] * 5)):
        with pytest.raises(DataError, match=layout.SAMPLE_CSV):
            write_submission(tmp_path / "sub.csv", index, labels[: len(index)], data / layout.SAMPLE_CSV)
    with pytest.raises(ValueError, match="0/1"):
        write_submission(tmp_path / "sub.csv", np.arange(50_000, 50_005), labels * 0.7, data / layout.SAMPLE_CSV)
    assert not (tmp_path / "sub.csv").exists()


def test_probability_files_round_trip_and_errors(tmp_path):
    probs = np.random.default_rng(0).uniform(0, 1, (4, 26)).astype(np.float32)
    path, index_file = save_probs(tmp_path / "p.npy", probs, np.arange(10, 14))
    assert index_file.name == "p_index.npy"
    got, index = load_probs(path)
    np.testing.assert_array_equal(got, probs)
    assert index.tolist() == [10, 11, 12, 13]
    index_file.unlink()
    with pytest.raises(DataError, match="p_index.npy"):
        load_probs(path)
    np.save(tmp_path / "q.npy", probs * 3)
    np.save(tmp_path / "q_index.npy", np.arange(4))
    with pytest.raises(DataError, match="q.npy.*probabilities"):
        load_probs(tmp_path / "q.npy")
