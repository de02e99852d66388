"""Pseudo labels: confident test images join training, never validation, and training with them
never opens the test answers (test_answer.csv, nor their copy in the cache)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from conftest import TEST_START, write_dataset

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.submission import save_probs
from dirtymnist.train.pseudo import make_targets, select_confident

TINY = ["model=test_resnet", "stages=[]", "image_size=32", "epochs=1", "batch_size=8", "folds_k=2",
        "head=lse", "lr=0.001"]

_OPENED: list[str] = []
_WATCH = [False]


def _audit(event: str, args) -> None:
    # every Python-level open (builtins.open, io.open, os.open, np.load, torch.load...) raises "open"
    if _WATCH[0] and event == "open" and args:
        _OPENED.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one only records while _WATCH is set


class watch_opens:
    def __enter__(self):
        _OPENED.clear()
        _WATCH[0] = True
        return _OPENED

    def __exit__(self, *exc):
        _WATCH[0] = False


def test_select_confident_and_targets():
    p = np.array([[0.05, 0.95, 0.02], [0.05, 0.6, 0.99], [0.5, 0.5, 0.5]])
    assert select_confident(p, 0.4).tolist() == [True, False, False]
    assert select_confident(p, 0.0).all()
    assert make_targets(p[:1], "hard").tolist() == [[0, 1, 0]]
    assert np.allclose(make_targets(p[:1], "soft"), p[:1])


def test_pseudo_training_never_reads_test_answers_and_keeps_validation_clean(tmp_path):
    from dirtymnist.data.cache import build_cache
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.train.loop import train

    n_test = 16
    data = write_dataset(tmp_path / "data", n_train=32, n_test=n_test, seed=2)
    build_cache(DataPaths.from_root(data), workers=1)  # as `predict` leaves it (it scores with the answers)
    # a prediction of the test split: 10 confident images, 6 undecided
    rng = np.random.default_rng(0)
    probs = np.where(rng.uniform(size=(n_test, 26)) > 0.5, 0.97, 0.02)
    probs[10:, 3] = 0.6
    probs_file = tmp_path / "sub.probs.npy"
    save_probs(probs_file, probs, np.arange(TEST_START, TEST_START + n_test))

    with watch_opens() as opened:  # positive control: the spy sees an answer file being read
        from dirtymnist.data.dataset import list_split

        list_split(DataPaths.from_root(data), "test")
    assert any(p.endswith("test_answer.csv") for p in opened)

    cfg = load_config("cpu", [*TINY, f"pseudo={probs_file}"])
    with watch_opens() as opened:
        train(data, cfg, run_dir=tmp_path / "run")
    assert not [p for p in opened if "test_answer" in p or "test_labels" in p], opened
    assert any(p.endswith("test_images.npy") for p in opened)  # it did read the test images
    fold = tmp_path / "run" / "fold0"
    row = json.loads((fold / "metrics.jsonl").read_text().splitlines()[0])
    assert row["samples"] == (16 + 10) // 8 * 8  # the fold's 16 training rows + 10 confident test images
    oof_index = np.load(fold / "oof_index.npy")
    assert len(oof_index) == 16 and (oof_index < TEST_START).all()  # validation: labelled rows only


def test_pseudo_file_of_other_rows_is_a_one_line_error_and_none_confident_warns(tmp_path, caplog):
    from dirtymnist.data.cache import build_cache
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.train.loop import train
    from dirtymnist.train.pseudo import load_pseudo

    data = write_dataset(tmp_path / "data", n_train=16, n_test=4, seed=2)
    unsure = tmp_path / "unsure.probs.npy"
    save_probs(unsure, np.full((4, 26), 0.7), np.arange(TEST_START, TEST_START + 4))
    build_cache(DataPaths.from_root(data), workers=1)
    assert len(load_pseudo(load_config("cpu", [*TINY, f"pseudo={unsure}"]), data)) == 0
    assert "no test image has every letter" in caplog.text
    probs_file = tmp_path / "other.probs.npy"
    save_probs(probs_file, np.full((3, 26), 0.9), np.arange(3))
    with pytest.raises(DataError, match="other.probs.npy: indices are not the test split's"):
        train(data, load_config("cpu", [*TINY, f"pseudo={probs_file}"]), run_dir=tmp_path / "run")


def test_train_cli_pseudo_flag_sets_the_config(tmp_path, capsys):
    from dirtymnist.cli import main as cli_main

    assert cli_main(["train", str(tmp_path), "--pseudo", "r1.probs.npy", "--set", "pseudo_targets=soft",
                     "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "pseudo: r1.probs.npy" in out and "pseudo_targets: soft" in out
    with pytest.raises(ConfigError, match="pseudo_margin must be in"):
        load_config("cpu", ["pseudo_margin=0.5"])


def test_the_pseudo_file_is_named_by_its_content_so_a_rewritten_one_refuses_to_resume(tmp_path):
    from dirtymnist.config import diff_configs, load_config
    from dirtymnist.train.pseudo import settle_pseudo

    probs = tmp_path / "round1.probs.npy"
    np.save(probs, np.full((4, 26), 0.9, np.float32))
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        first = settle_pseudo(load_config("cpu", ["pseudo=round1.probs.npy"]))
    finally:
        os.chdir(here)
    assert first.pseudo == str(probs) and first.pseudo_record.startswith("sha256 ")  # absolute path
    assert diff_configs(first.to_dict(), settle_pseudo(first).to_dict()) == []
    np.save(probs, np.full((4, 26), 0.1, np.float32))  # a second round rewrote the file
    assert diff_configs(first.to_dict(), settle_pseudo(first).to_dict()) == ["pseudo_record"]
    with pytest.raises(DataError, match="nowhere.npy: pseudo-label probability file not found"):
        settle_pseudo(load_config("cpu", [f"pseudo={tmp_path / 'nowhere.npy'}"]))
