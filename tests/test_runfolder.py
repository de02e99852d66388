"""runfolder.py through `dirtymnist train`: check then write, one writer per fold, recovery."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
from conftest import train_argv, write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.model.checkpoint import load_checkpoint

TINY = ["model=test_resnet", "image_size=32", "batch_size=8", "epochs=2", "stages=[]", "keep_last=2"]

_HOLD = """
import sys, time
from dirtymnist.locks import FileLock
FileLock(sys.argv[1], what="a train of fold 0").acquire()
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(data folder, a finished tiny run of fold 0 with epoch checkpoints kept)."""
    root = tmp_path_factory.mktemp("runfolder")
    data = write_dataset(root / "data", n_train=24, n_test=2)
    run = root / "run"
    assert cli_main(train_argv(data, run, TINY)) == 0
    return data, run


@pytest.fixture
def run_copy(finished, tmp_path):
    data, run = finished
    shutil.copytree(run, tmp_path / "run")
    return data, tmp_path / "run"


def test_a_refused_resume_rewrites_nothing(run_copy, capsys):
    data, run = run_copy
    before = {p: p.read_bytes() for p in (run / "config.yaml", run / "run.json", run / "fold0" / "last.pt")}
    assert cli_main(train_argv(data, run, [*TINY, "lr=0.1"])) == 2
    err = capsys.readouterr().err
    assert "config.yaml: the run was made with another config (differs in lr)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert all(p.read_bytes() == b for p, b in before.items())


def test_another_data_folder_is_refused_naming_both_then_recorded_with_force(run_copy, tmp_path, capsys):
    data, run = run_copy
    other = write_dataset(tmp_path / "other", n_train=24, n_test=2, seed=1)
    record = (run / "run.json").read_text()
    assert cli_main(train_argv(other, run, TINY)) == 2
    err = capsys.readouterr().err
    assert f"the run trains on {data.absolute()}, not {other.absolute()}" in err and "--force" in err
    assert (run / "run.json").read_text() == record
    assert cli_main(train_argv(other, run, TINY, "--force")) == 0
    now = json.loads((run / "run.json").read_text())
    assert now["data_dir"] == str(other.absolute()) and now["previous_data_dirs"] == [str(data.absolute())]
    # the finished fold was not retrained: its OOF rows must not be fitted against other labels
    assert cli_main(["thresholds", str(run)]) == 2
    assert "labels this fold's out-of-fold rows differently" in capsys.readouterr().err
    assert cli_main(["thresholds", str(run), "--data", str(data)]) == 0


def test_a_second_writer_of_a_fold_is_refused_with_the_holders_pid(run_copy, capsys):
    data, run = run_copy
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(run / "fold0" / ".lock")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert cli_main(train_argv(data, run, TINY)) == 2
        err = capsys.readouterr().err
        assert f"fold0/.lock: in use by a train of fold 0 (PID {child.pid} on host" in err
    finally:
        child.kill()
        child.wait()
    assert cli_main(train_argv(data, run, TINY)) == 0  # the dead holder left no stale lock


def test_a_corrupt_last_pt_falls_back_to_the_newest_epoch_checkpoint(run_copy, caplog):
    data, run = run_copy
    last = run / "fold0" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # torn by a disk failure
    caplog.set_level(logging.WARNING, logger="dirtymnist.train.checkpointer")
    assert cli_main(train_argv(data, run, TINY)) == 0
    assert "resuming from epoch002.pt instead" in caplog.text
    assert load_checkpoint(last)["epoch"] == 2  # repaired from the kept copy


def test_a_corrupt_last_pt_without_kept_epochs_names_the_file_to_delete(run_copy, capsys):
    data, run = run_copy
    for kept in (run / "fold0").glob("epoch*.pt"):
        kept.unlink()
    last = run / "fold0" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    assert cli_main(train_argv(data, run, TINY)) == 2
    assert f"delete {last} to train fold 0 again from the start" in capsys.readouterr().err


def test_an_image_size_below_the_models_stride_is_refused_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(train_argv(tmp_path / "nodata", run, ["image_size=7"])) == 2
    assert "image_size=7 is smaller than the total stride 8 of model dm_fcn" in capsys.readouterr().err
    assert not run.exists()
