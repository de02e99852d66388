"""`dirtymnist runs`: rows from run folders, differing config keys, sorting, formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from dirtymnist.cli import main as cli_main
from dirtymnist.errors import DataError
from dirtymnist.look.runs import differing_keys, format_table, list_runs, load_run, sort_rows


def _fake_run(root: Path, name: str, cfg: dict, folds: dict[int, list[float]], seconds=1.0, speed=100.0):
    """A run folder with config.yaml and per fold a metrics.jsonl of the given label accuracies."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for fold, accs in folds.items():
        (run / f"fold{fold}").mkdir()
        lines = [json.dumps({"epoch": e + 1, "train_loss": 1.0, "val_loss": 1.0 - a, "label_acc": a,
                             "exact_match": 0.0, "lr": 1e-3, "seconds": seconds, "samples_per_s": speed})
                 for e, a in enumerate(accs)]
        (run / f"fold{fold}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


BASE = {"model": "resnet18", "lr": 0.001, "epochs": 3, "preset": "cpu", "num_workers": 0}


@pytest.fixture
def runs_dir(tmp_path):
    _fake_run(tmp_path, "a", BASE, {0: [0.80, 0.82, 0.81], 1: [0.84, 0.83, 0.84]})
    _fake_run(tmp_path, "b", {**BASE, "lr": 0.003, "num_workers": 4}, {0: [0.85, 0.86]},
              seconds=2.0, speed=50.0)
    _fake_run(tmp_path, "sub/c", {**BASE, "model": "effnet", "preset": "winner"}, {0: [0.70]},
              speed=300.0)
    (tmp_path / "not_a_run").mkdir()
    return tmp_path


def test_rows_hold_differing_keys_and_fold_stats(runs_dir):
    rows = list_runs(runs_dir)
    assert [r["run"] for r in rows] == ["b", "a", "sub/c"]  # best label_acc first
    a = next(r for r in rows if r["run"] == "a")
    # model and lr differ; epochs is equal everywhere; num_workers is ignored as irrelevant
    assert list(a)[:4] == ["run", "preset", "model", "lr"]
    assert "epochs" not in a and "num_workers" not in a
    assert a["folds"] == 2 and a["epochs_done"] == 3
    assert a["label_acc"] == pytest.approx((0.82 + 0.84) / 2)
    assert a["label_acc_std"] == pytest.approx(0.01414, abs=1e-4)
    assert a["time_s"] == pytest.approx(6.0) and a["samples_per_s"] == pytest.approx(100.0)
    b = next(r for r in rows if r["run"] == "b")
    assert b["lr"] == 0.003 and b["label_acc_std"] == 0.0 and b["time_s"] == pytest.approx(4.0)


def test_sort_any_column(runs_dir):
    rows = list_runs(runs_dir)
    assert [r["run"] for r in sort_rows(rows, "samples_per_s")] == ["sub/c", "a", "b"]
    assert [r["run"] for r in sort_rows(rows, "-samples_per_s")] == ["b", "a", "sub/c"]
    assert [r["run"] for r in sort_rows(rows, "run")] == ["a", "b", "sub/c"]
    assert [r["run"] for r in sort_rows(rows, "time")] == ["sub/c", "b", "a"]
    assert [r["run"] for r in sort_rows(rows, "model")] == ["sub/c", "b", "a"]  # stable
    with pytest.raises(DataError, match="cannot sort by 'nope'"):
        sort_rows(rows, "nope")


def test_missing_values_sort_last(tmp_path):
    _fake_run(tmp_path, "empty", BASE, {0: []})
    _fake_run(tmp_path, "done", BASE, {0: [0.5]})
    rows = list_runs(tmp_path)
    assert [r["run"] for r in rows] == ["done", "empty"]
    assert math.isnan(rows[1]["label_acc"]) and rows[1]["folds"] == 0
    assert "-" in format_table(rows).splitlines()[2]


def test_formats(runs_dir):
    rows = list_runs(runs_dir)
    table = format_table(rows).splitlines()
    assert table[0].split() == ["run", "preset", "model", "lr", "folds", "label_acc", "epochs_done",
                                "time", "samples_per_s"]
    assert "0.8300 +- 0.0141" in table[2]
    md = format_table(rows, "markdown").splitlines()
    assert md[0].startswith("| run | preset |") and md[1].startswith("|---|")
    assert len(md) == 2 + len(rows)
    csv_lines = format_table(rows, "csv").splitlines()
    assert csv_lines[0].split(",")[-4:] == ["label_acc_std", "epochs_done", "time_s", "samples_per_s"]
    assert csv_lines[1].startswith("b,cpu,resnet18,0.003,1,0.86")


def test_differing_keys_compares_nested_values():
    stages = [{"name": "warm", "source": "synth"}]
    assert differing_keys([{"stages": stages, "x": 1}, {"stages": [], "x": 1}]) == ["stages"]
    assert differing_keys([{"x": 1}]) == []


def test_load_run_errors(tmp_path):
    with pytest.raises(DataError, match="no config.yaml"):
        load_run(tmp_path)
    run = _fake_run(tmp_path, "r", BASE, {0: [0.5]})
    (run / "fold0" / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        load_run(run)


def test_cli_runs(runs_dir, capsys):
    assert cli_main(["runs", str(runs_dir), "--sort", "run", "--format", "markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in out[2:]] == ["| a", "| b", "| sub/c"]
    assert cli_main(["runs", str(runs_dir / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
