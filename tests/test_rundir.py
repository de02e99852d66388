"""rundir.py: a run folder's paths, its readers and a RUN argument's model files, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dirtymnist.errors import ConfigError, DataError
from dirtymnist.outputs import write_set
from dirtymnist.rundir import FoldDir, RunDir, fold_number, model_files, model_name, onnx_file


def _touch(path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_paths(tmp_path):
    run = RunDir(tmp_path / "r")
    assert str(run) == str(tmp_path / "r") and RunDir(run).path == run.path  # a RunDir is a path too
    assert (run.config.name, run.record.name, run.thresholds.name) == ("config.yaml", "run.json", "thresholds.json")
    assert run.report == run.path / "report" / "report.html"
    fold = run.fold(3)
    assert fold == FoldDir(run.path / "fold3", 3)
    assert (fold.best.name, fold.last.name, fold.checkpoint("swa").name) == ("best.pt", "last.pt", "swa.pt")
    assert (fold.oof.name, fold.oof_index.name, fold.oof_set.name) == ("oof.npy", "oof_index.npy", "oof.set.json")
    assert fold.metrics.name == "metrics.jsonl" and fold.epoch_checkpoint(7).name == "epoch007.pt"
    assert FoldDir.epoch_of(fold.epoch_checkpoint(12)) == 12
    with pytest.raises(ValueError):
        FoldDir.epoch_of(fold.best)


def test_folds_are_the_fold_folders_in_fold_order(tmp_path):
    run = RunDir(tmp_path)
    assert run.folds() == [] and RunDir(tmp_path / "missing").folds() == []
    for name in ("fold10", "fold2", "fold0", "foldx", "report"):
        (tmp_path / name).mkdir()
    _touch(tmp_path / "fold5")  # a file, not a fold
    assert [f.fold for f in run.folds()] == [0, 2, 10]
    assert fold_number("fold10") == 10 and fold_number("foldx") > 10**6


def test_read_config_errors_name_the_file(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(DataError, match="not a run folder .no config.yaml."):
        run.read_config()
    _touch(run.config, "lr: [1, 2\n")
    with pytest.raises(DataError, match=r"config.yaml: unreadable YAML"):
        run.read_config()
    _touch(run.config, "- a list\n")
    with pytest.raises(DataError, match=r"config.yaml: expected a mapping"):
        run.read_config()
    _touch(run.config, "lr: 0.1\n")
    assert run.read_config() == {"lr": 0.1}


def test_read_record_and_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    run = RunDir(tmp_path / "run")
    assert run.read_record() == {}
    assert RunDir(tmp_path / "x.pt").read_record() == {}  # a RUN that is a file has no record
    with pytest.raises(DataError, match="pass --data DATA_DIR"):
        run.data_dir()
    assert run.data_dir(data) == data  # --data wins
    _touch(run.config, f"data_dir: {data}\n")  # older runs kept it in config.yaml
    assert run.data_dir() == data
    _touch(run.record, json.dumps({"data_dir": str(tmp_path / "gone")}))  # run.json comes first
    with pytest.raises(DataError, match="gone: data folder not found"):
        run.data_dir()
    _touch(run.record, "{not json")
    with pytest.raises(DataError, match=r"run.json: not a readable JSON file"):
        run.data_dir()


def test_model_files_for_each_checkpoint_kind_and_engine(tmp_path):
    run = RunDir(tmp_path / "run")
    for k in (1, 0):
        for kind in ("best", "last", "swa"):
            _touch(run.fold(k).checkpoint(kind))
    _touch(run.fold(0).checkpoint("averaged"))
    assert run.model_files() == [run.fold(0).best, run.fold(1).best]
    assert run.model_files("last") == [run.fold(0).last, run.fold(1).last]
    assert run.model_files("swa") == model_files(run.path, "torch", "swa")
    assert run.model_files("averaged") == [run.fold(0).checkpoint("averaged")]
    with pytest.raises(ConfigError, match="--checkpoint 'worst'; choose from best, last, averaged, swa"):
        run.model_files("worst")
    # onnx: the export beside each checkpoint, which must be there
    with pytest.raises(ConfigError, match=r"fold0/best.onnx: ONNX model not found; run `dirtymnist export"):
        run.model_files(engine="onnx")
    for k in (0, 1):
        _touch(onnx_file(run.fold(k).best))
    assert run.model_files(engine="onnx") == [run.fold(0).path / "best.onnx", run.fold(1).path / "best.onnx"]
    # a RUN argument that is one file, or nothing
    assert model_files(run.fold(1).last) == [run.fold(1).last]
    assert model_files(run.fold(1).best, "onnx") == [run.fold(1).path / "best.onnx"]
    with pytest.raises(ConfigError, match="no such run directory or checkpoint"):
        model_files(tmp_path / "nope")


def test_model_files_hints_and_export_folders(tmp_path):
    empty = RunDir(tmp_path / "empty")
    empty.fold(0).path.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"no fold\*/best.pt checkpoints \(not a run directory\?\)"):
        empty.model_files()
    with pytest.raises(ConfigError, match="run `dirtymnist average` first"):
        empty.model_files("averaged")
    with pytest.raises(ConfigError, match="train with --set swa_epochs=N"):
        empty.model_files("swa")
    # an `export --out` folder: files named by model_name
    out = tmp_path / "onnx"
    for ckpt in (RunDir(tmp_path).fold(0).best, RunDir(tmp_path).fold(1).best, RunDir(tmp_path).fold(0).checkpoint("swa")):
        _touch(onnx_file(ckpt, out))
    assert [p.name for p in model_files(out, "onnx")] == ["fold0.onnx", "fold1.onnx"]
    assert [p.name for p in model_files(out, "onnx", "swa")] == ["fold0_swa.onnx"]
    assert model_name(tmp_path / "fold2" / "averaged.pt") == "fold2_averaged"
    assert model_name(tmp_path / "fold2" / "best.pt") == "fold2" and model_name(tmp_path / "mine.pt") == "mine"


def test_oof_and_metrics_readers(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ConfigError, match="no fold.*oof.npy files"):
        run.read_oof()
    probs = np.random.default_rng(0).random((6, 26)).astype(np.float32)
    for k, rows in ((1, [4, 5]), (0, [0, 1, 2, 3])):
        fold = run.fold(k)
        write_set(fold.oof_set, {"oof": (fold.oof, probs[rows]), "oof_index": (fold.oof_index, np.array(rows))})
    p, index, fold_of = run.read_oof()
    np.testing.assert_array_equal(p, probs)
    assert index.tolist() == [0, 1, 2, 3, 4, 5] and fold_of.tolist() == [0, 0, 0, 0, 1, 1]
    assert p.dtype == np.float32 and index.dtype == np.int64
    assert run.read_oof([1])[1].tolist() == [4, 5]  # some folds only (as train gathers them)
    with pytest.raises(DataError, match="fold2: unreadable"):
        run.read_oof([0, 2])
    np.save(run.fold(1).oof_index, np.array([3, 4]))  # beside its committed pair: a torn set
    with pytest.raises(DataError, match="oof_index.npy: not the oof_index file committed"):
        run.read_oof()
    write_set(run.fold(1).oof_set, {"oof": (run.fold(1).oof, probs[:2]), "oof_index": (run.fold(1).oof_index, np.array([3, 4]))})
    with pytest.raises(DataError, match="share rows"):
        run.read_oof()
    fold = run.fold(0)
    assert fold.read_metrics() == []
    _touch(fold.metrics, '{"epoch": 0}\n\n{"epoch": 1}\n')
    assert [r["epoch"] for r in fold.read_metrics()] == [0, 1]


def test_find_runs_and_epoch_checkpoints(tmp_path):
    for name in ("b", "a/deep", "c"):
        _touch(RunDir(tmp_path / name).config, "lr: 1\n")
        RunDir(tmp_path / name).fold(0).path.mkdir()
    _touch(tmp_path / "notarun" / "config.yaml")  # no fold folders
    assert [r.path.relative_to(tmp_path).as_posix() for r in RunDir.find(tmp_path)] == ["a/deep", "b", "c"]
    with pytest.raises(DataError, match="no such folder"):
        RunDir.find(tmp_path / "nope")
    fold = RunDir(tmp_path / "b").fold(0)
    for e in (3, 1, 2):
        _touch(fold.epoch_checkpoint(e))
    _touch(fold.path / "epoch_notes.pt")
    assert [FoldDir.epoch_of(p) for p in fold.epoch_checkpoints()] == [1, 2, 3]


def test_rundir_does_not_import_torch_or_numpy():
    code = ("import sys; import dirtymnist.rundir as r; r.RunDir('.').folds(); "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
