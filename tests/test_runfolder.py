"""runfolder.py through `dirtymnist train`: check then write, one writer per fold, recovery; fold
claims: two workers on one run folder train each fold once, a dead worker's fold is taken over."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import train_argv, write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.model.checkpoint import load_checkpoint
from dirtymnist.train.runfolder import claim_path, gather_oof, train_claimed

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


# --------------------------------------------------------------------------- fold claims
CLAIM_TINY = ["model=test_resnet", "image_size=64", "batch_size=8", "epochs=2", "stages=[]", "folds_k=3"]

_HOLD_CLAIM = """
import sys, time
from dirtymnist.locks import FileLock
FileLock(sys.argv[1], what="train fold 1").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_fold_is_taken_last_and_taken_over_when_its_worker_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, str(claim_path(tmp_path, 1))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    order = []

    def train_one(fold):
        order.append(fold)
        if fold == 2:  # the other worker dies while this one trains its last free fold
            threading.Timer(0.3, holder.kill).start()
        return {"fold": fold}

    try:
        results = train_claimed(tmp_path, [0, 1, 2], train_one)
    finally:
        holder.kill()
        holder.wait()
    assert order == [0, 2, 1]  # free folds first, then the one held by the (dead) other worker
    assert results == {0: {"fold": 0}, 1: {"fold": 1}, 2: {"fold": 2}}


def test_a_single_fold_held_by_another_train_is_refused_at_once(tmp_path):
    from dirtymnist.locks import LockHeld

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, str(claim_path(tmp_path, 1))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        with pytest.raises(LockHeld, match=rf"PID {holder.pid} on host"):
            train_claimed(tmp_path, [1], lambda fold: pytest.fail("trained a held fold"))
    finally:
        holder.kill()
        holder.wait()
    assert train_claimed(tmp_path, [1], lambda fold: {"fold": fold}) == {1: {"fold": 1}}  # free again


def test_gather_sorts_rows_by_index_and_keeps_their_fold(tmp_path):
    for fold, idx in ((0, [4, 1]), (1, [3, 0, 2])):
        d = tmp_path / f"fold{fold}"
        d.mkdir()
        np.save(d / "oof.npy", np.asarray([[i / 10] * 26 for i in idx], np.float32))
        np.save(d / "oof_index.npy", np.asarray(idx, np.int64))
    gather_oof(tmp_path, [0, 1])
    assert np.load(tmp_path / "oof_index.npy").tolist() == [0, 1, 2, 3, 4]
    assert np.load(tmp_path / "oof_fold.npy").tolist() == [1, 0, 1, 1, 0]
    assert np.allclose(np.load(tmp_path / "oof.npy")[:, 0], [0, 0.1, 0.2, 0.3, 0.4])
    assert gather_oof(tmp_path, [0, 1, 2]) is None  # fold 2 not trained yet


def test_two_train_commands_share_the_folds_of_one_run(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=36, n_test=2)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dirtymnist", "train", str(data), "--preset", "cpu",
           "--run-dir", str(run), "--folds", "all"]
    for item in CLAIM_TINY:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the cache is built once before the workers start (README: `dirtymnist cache` first)
    subprocess.run([sys.executable, "-m", "dirtymnist", "cache", str(data)], env=env, check=True,
                   capture_output=True)
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    logs = []
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
        logs.append(err)
    trained = [set(map(int, re.findall(r"^fold (\d) epoch 1/2", log, re.M))) for log in logs]
    assert trained[0] | trained[1] == {0, 1, 2} and not trained[0] & trained[1]  # each fold once
    index = np.load(run / "oof_index.npy")
    assert index.tolist() == list(range(36))  # every training image once, gathered
    assert np.load(run / "oof.npy").shape == (36, 26)


def test_a_refused_train_of_a_claimed_fold_writes_nothing(tmp_path, make_dataset, capsys):
    """Even with --force and another config, a train of a fold another process holds changes no
    file of the run: the claim is taken before config.yaml / run.json are written."""
    from dirtymnist.cli import main as cli_main

    data = make_dataset(tmp_path / "data", n_train=24, n_test=2)
    run = tmp_path / "run"
    base = ["train", str(data), "--preset", "cpu", "--run-dir", str(run), "--fold", "0",
            "--set", "model=dm_fcn_tiny", "--set", "image_size=32", "--set", "batch_size=8",
            "--set", "epochs=1", "--set", "stages=[]"]
    assert cli_main(base) == 0
    before = {p.name: p.read_bytes() for p in (run / "config.yaml", run / "run.json")}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM.replace("train fold 1", "train fold 0"),
                               str(claim_path(run, 0))], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        capsys.readouterr()
        assert cli_main([*base, "--force", "--set", "lr=0.5"]) == 2
        assert f"PID {holder.pid} on host" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in (run / "config.yaml", run / "run.json")} == before
