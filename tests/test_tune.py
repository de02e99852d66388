"""Hyper-parameter search: trials run, the study resumes from SQLite, the best preset loads."""

from __future__ import annotations

import csv

import pytest

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.search.tune import TuneOptions, load_space, tune

TINY = ["model=test_resnet", "image_size=64", "epochs=2", "batch_size=8", "stages=[]", "folds_k=2"]


def test_search_runs_resumes_and_writes_a_preset(tmp_path, make_dataset):
    optuna = pytest.importorskip("optuna")
    data = make_dataset(tmp_path / "data", n_train=32, n_test=2)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.0005, high: 0.005, log: true}\n"
                     "head: {type: categorical, choices: [max, lse]}\n")
    out = tmp_path / "tune"
    first = tune(data, "cpu", out=out, options=TuneOptions(trials=2, budget_minutes=10, overrides=TINY, space=space, subset=24))
    assert first.n_complete == 2
    # same command with a larger total: only the missing trial runs (the study is in SQLite)
    second = tune(data, "cpu", out=out, options=TuneOptions(trials=3, budget_minutes=10, overrides=TINY, space=space, subset=24))
    assert second.n_complete == 3
    study = optuna.load_study(study_name="cpu", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    assert all(len(t.intermediate_values) == 2 for t in study.trials)  # one report per epoch
    assert study.trials[0].params == {"lr": 0.003, "head": "max"}  # the preset's own values first
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and {"lr", "head", "label_acc", "run_dir"} <= set(rows[0])
    cfg = load_config(str(second.best_preset))
    assert cfg.lr == pytest.approx(second.best_params["lr"]) and cfg.head == second.best_params["head"]
    assert cfg.subset == 0  # the preset is for full training, not the tuning subset


def test_the_preset_point_is_used_only_inside_the_space():
    from dirtymnist.search.tune import DEFAULT_SPACE, preset_point

    cfg = load_config("cpu")
    assert preset_point(cfg, DEFAULT_SPACE)["lr"] == cfg.lr
    assert preset_point(load_config("cpu", ["lr=0.5"]), DEFAULT_SPACE) == {}
    assert preset_point(load_config("cpu", ["augment=d4"]), DEFAULT_SPACE) == {}


def test_bad_space_is_a_clear_error(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("learning_rate: {type: float, low: 1, high: 2}\n")
    with pytest.raises(ConfigError, match="not a config key"):
        load_space(bad)


def test_a_bad_preset_is_refused_before_the_output_folder_is_made(tmp_path):
    out = tmp_path / "tune"
    with pytest.raises(ConfigError):
        tune(tmp_path, "no_such_preset", out=out, options=TuneOptions(trials=1, budget_minutes=0.1))
    assert not out.exists()
