"""`evaluate`: the competition score of a submission CSV, and one-line errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_labels, write_label_csv

from dirtymnist import layout
from dirtymnist.cli import main as cli_main
from dirtymnist.infer.evaluate import evaluate_submission


@pytest.fixture
def answer(tmp_path):
    labels = random_labels(np.random.default_rng(0), 10)
    path = tmp_path / "answer.csv"
    write_label_csv(path, range(100, 110), labels)
    return path, labels


def test_scores_and_row_order(tmp_path, answer):
    path, labels = answer
    pred = labels.copy()
    pred[0, 0] ^= 1  # one wrong cell of 260
    pred[3, :] = 1 - pred[3, :]  # one image all wrong
    order = np.arange(10)[::-1]  # rows in another order: matched by index
    sub = tmp_path / "sub.csv"
    write_label_csv(sub, (np.arange(100, 110))[order], pred[order])
    report = evaluate_submission(sub, path)
    assert report.label_acc == pytest.approx(1 - 27 / 260)
    assert report.exact_match == pytest.approx(0.8)
    assert report.per_letter["a"]["accuracy"] == pytest.approx(0.8)
    assert "| a |" in report.format() and report.rows == 10


def test_cli_prints_table(tmp_path, answer, capsys):
    path, _ = answer
    assert cli_main(["evaluate", str(path), str(path)]) == 0
    out = capsys.readouterr().out
    assert "label_acc 1.00000" in out and "| z | 1.0000 |" in out


@pytest.mark.parametrize("case", ["columns", "indices", "missing", "folder"])
def test_bad_submissions_are_one_line_errors(tmp_path, answer, capsys, case):
    path, labels = answer
    sub = tmp_path / "sub.csv"
    if case == "columns":
        text = path.read_text().replace(",z\n", ",zz\n", 1)
        sub.write_text(text)
        needle = "zz"
    elif case == "indices":
        write_label_csv(sub, range(101, 111), labels)
        needle = "110"
    elif case == "missing":
        sub = tmp_path / "nope.csv"
        needle = "not found"
    else:  # a data folder given where the submission goes
        sub = tmp_path / "data"
        sub.mkdir()
        needle = "is a folder, expected a label CSV"
    assert cli_main(["evaluate", str(sub), str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(sub) in err and needle in err


def test_wrong_columns_in_the_answer_name_the_answer(tmp_path, answer, capsys):
    path, labels = answer
    bad = tmp_path / "bad_answer.csv"
    bad.write_text(path.read_text().replace("index,a,", "index,A,", 1))
    assert cli_main(["evaluate", str(path), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and layout.LETTERS[0] in err
