"""Thresholds: fitting never loses OOF accuracy, count-aware decoding, files, specs and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_labels, write_label_csv

from dirtymnist import layout
from dirtymnist.cli import main as cli_main
from dirtymnist.errors import ConfigError
from dirtymnist.infer.thresholds import (
    GRID,
    decode,
    decode_count,
    fit,
    fit_thresholds,
    load_thresholds,
    parse_thresholds,
)


def biased_probs(rng, labels):
    """Probabilities whose best threshold differs per letter (each letter has its own bias)."""
    bias = rng.uniform(-0.3, 0.3, labels.shape[1])
    noise = rng.normal(0, 0.25, labels.shape)
    return np.clip(0.5 + 0.2 * (labels * 2 - 1) + bias + noise, 0.001, 0.999).astype(np.float32)


def fake_run(tmp_path, rng, n=60, k=3):
    """A run directory holding only OOF files of k folds, and an answer CSV for its rows."""
    labels = random_labels(rng, n)
    probs = biased_probs(rng, labels)
    index = rng.permutation(n)
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    write_label_csv(data / layout.TRAIN_CSV, range(n), labels)
    for f, part in enumerate(np.array_split(np.arange(n), k)):
        (run / f"fold{f}").mkdir(parents=True)
        np.save(run / f"fold{f}" / "oof.npy", probs[index[part]])
        np.save(run / f"fold{f}" / "oof_index.npy", index[part].astype(np.int64))
    return run, data


def test_fitting_improves_or_keeps_oof_accuracy():
    rng = np.random.default_rng(0)
    labels = random_labels(rng, 400)
    report = fit(biased_probs(rng, labels), labels)
    assert report.acc_fitted >= report.acc_at_half
    assert report.acc_fitted > report.acc_at_half + 0.01  # the biases are real, fitting finds them
    assert set(np.round(report.thresholds.values, 2)) <= set(GRID)
    assert report.acc_chosen == max(report.acc_fitted, report.acc_count_fitted)
    # already calibrated probabilities: 0.5 stays (ties go to 0.5), nothing is lost
    calibrated = np.where(labels == 1, 0.9, 0.1)
    again = fit(calibrated, labels)
    assert np.all(again.thresholds.values == 0.5) and again.acc_fitted == again.acc_at_half == 1.0


def test_count_decoding_keeps_counts_in_range():
    rng = np.random.default_rng(1)
    probs = rng.uniform(0, 1, (200, 26))
    probs[0], probs[1] = 0.01, 0.99  # nothing above, everything above
    counts = decode_count(probs, 0.5).sum(1)
    assert counts.min() >= 10 and counts.max() <= 14
    assert counts[0] == 10 and counts[1] == 14
    # rows already holding 10-14 letters above threshold are decoded as plain thresholding
    plain = decode(probs, 0.5)
    ok = (plain.sum(1) >= 10) & (plain.sum(1) <= 14)
    assert ok.any() and np.array_equal(decode(probs, 0.5, "count")[ok], plain[ok])
    # the letters kept are the most probable ones
    top = np.argsort(-probs[0])[:10]
    assert set(np.flatnonzero(decode_count(probs[:1], 0.5)[0])) == set(top)


def test_fit_thresholds_writes_json_and_specs_parse(tmp_path):
    run, data = fake_run(tmp_path, np.random.default_rng(2))
    report = fit_thresholds(run, data)
    saved = json.loads((run / "thresholds.json").read_text())
    assert sorted(saved["thresholds"]) == list(layout.LETTERS) and saved["decode"] in ("threshold", "count")
    assert saved["oof_rows"] == 60 and "method" in saved
    assert saved["oof_label_acc"]["threshold_fitted"] >= saved["oof_label_acc"]["threshold_0.5"]
    loaded = load_thresholds(run / "thresholds.json")
    np.testing.assert_allclose(loaded.values, report.thresholds.values)
    assert loaded.decode == report.thresholds.decode
    assert np.all(parse_thresholds("0.5").values == 0.5)
    assert parse_thresholds("0.3:count").decode == "count"
    np.testing.assert_allclose(parse_thresholds("fit", [run], data).values, report.thresholds.values)
    for bad in ("1.5", "nope.json"):
        with pytest.raises(ConfigError):
            parse_thresholds(bad)


def test_thresholds_cli(tmp_path, capsys):
    run, data = fake_run(tmp_path, np.random.default_rng(3))
    assert cli_main(["thresholds", str(run), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "label_acc at 0.5" in out and "count-aware" in out and (run / "thresholds.json").is_file()
    missing = tmp_path / "missing"
    assert cli_main(["thresholds", str(missing), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(missing) in err and len(err.strip().splitlines()) == 1
