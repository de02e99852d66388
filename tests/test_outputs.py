"""outputs.py: sets committed together and refused when mixed; output paths checked first."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dirtymnist.errors import ConfigError, DataError
from dirtymnist.infer.predict import ensemble
from dirtymnist.infer.thresholds import load_oof
from dirtymnist.outputs import check_output_path, verify_set, write_set
from dirtymnist.submission import set_path_for, write_submission_set


def _probs(seed: int, n: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 26)).astype(np.float32)


def test_set_round_trip_and_a_mixed_member_is_refused(tmp_path):
    manifest = tmp_path / "x.set.json"
    write_set(manifest, {"a": (tmp_path / "a.npy", np.arange(3)), "b": (tmp_path / "b.txt", "hello")}, epoch=2)
    record = verify_set(manifest, "rerun it")
    assert record["epoch"] == 2 and set(record["files"]) == {"a", "b"}
    assert not list(tmp_path.glob(".*.tmp"))
    old_a = (tmp_path / "a.npy").read_bytes()
    write_set(manifest, {"a": (tmp_path / "a.npy", np.arange(4)), "b": (tmp_path / "b.txt", "bye")})
    (tmp_path / "a.npy").write_bytes(old_a)  # as if killed between two members
    with pytest.raises(DataError, match=r"a.npy: not the a file committed.*a mixed set.*rerun it"):
        verify_set(manifest, "rerun it")
    assert verify_set(tmp_path / "none.set.json", "") is None  # no manifest: nothing to check


def test_a_first_write_killed_half_way_is_incomplete(tmp_path):
    manifest = tmp_path / "x.set.json"
    manifest.write_text(json.dumps({"complete": False}))
    with pytest.raises(DataError, match="were being written when their writer stopped"):
        verify_set(manifest, "")


def test_a_killed_writes_temp_file_is_removed_by_the_next(tmp_path):
    stale = tmp_path / ".sub.csv.abc123.csv.tmp"
    stale.write_text("half")
    write_set(tmp_path / "sub.set.json", {"csv": (tmp_path / "sub.csv", "index\n")})
    assert not stale.exists()


def test_ensemble_refuses_probabilities_of_another_csv(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=4, n_test=5)
    index = np.arange(50_000, 50_005)
    out = tmp_path / "sub.csv"
    write_submission_set(out, index, np.zeros((5, 26), np.uint8), _probs(0), data / "sample_submission.csv")
    probs = tmp_path / "sub.probs.npy"
    assert set_path_for(out) == set_path_for(probs) == tmp_path / "sub.set.json"
    assert ensemble([probs], data).probs.shape == (5, 26)
    old = probs.read_bytes()
    write_submission_set(out, index, np.ones((5, 26), np.uint8), _probs(1), data / "sample_submission.csv")
    probs.write_bytes(old)  # a new CSV beside an old .probs.npy
    with pytest.raises(DataError, match="sub.probs.npy: not the probs file committed"):
        ensemble([probs], data)


def test_thresholds_refuse_a_mixed_oof_pair(tmp_path):
    fold = tmp_path / "run" / "fold0"
    fold.mkdir(parents=True)
    write_set(fold / "oof.set.json", {"oof": (fold / "oof.npy", _probs(0, 4)),
                                      "oof_index": (fold / "oof_index.npy", np.arange(4))})
    assert load_oof(tmp_path / "run")[0].shape == (4, 26)
    np.save(fold / "oof.npy", _probs(1, 4))  # another epoch's probabilities
    with pytest.raises(DataError, match="oof.npy: not the oof file committed.*train of fold0 again"):
        load_oof(tmp_path / "run")


def test_output_paths_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="names a folder"):
        check_output_path(tmp_path)
    assert check_output_path(tmp_path / "new" / "sub.csv") == tmp_path / "new" / "sub.csv"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_path(tmp_path / "file" / "sub.csv")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            check_output_path(locked / "sub.csv")


def test_predict_checks_out_and_batch_size_first(tmp_path, capsys):
    from dirtymnist.cli import main

    # no run exists: the argument errors come first, before any model or data is touched
    assert main(["predict", str(tmp_path / "norun"), "--data", str(tmp_path), "--out", str(tmp_path),
                 "--batch-size", "1"]) == 2
    assert "names a folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "norun"), "--data", str(tmp_path), "--out",
                 str(tmp_path / "s.csv"), "--batch-size", "0"]) == 2
    assert "--batch-size 0: must be at least 1" in capsys.readouterr().err
