"""Fold claims: two workers on one run folder train each fold once; a dead worker's fold is taken over."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from dirtymnist.train.claims import claim_path, gather_oof, train_claimed

TINY = ["model=test_resnet", "image_size=64", "batch_size=8", "epochs=2", "stages=[]", "folds_k=3"]

_HOLD = """
import sys, time
from dirtymnist.locks import FileLock
FileLock(sys.argv[1], what="train fold 1").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_fold_is_taken_last_and_taken_over_when_its_worker_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(claim_path(tmp_path, 1))],
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

    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(claim_path(tmp_path, 1))],
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
    for item in TINY:
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
    holder = subprocess.Popen([sys.executable, "-c", _HOLD.replace("train fold 1", "train fold 0"),
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
