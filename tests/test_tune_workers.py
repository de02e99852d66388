"""Several tune workers on one study in a real PostgreSQL; a worker killed mid-trial; bad storage input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postgres import PASSWORD, free_port, throwaway_cluster

from dirtymnist.cli import main as cli_main
from dirtymnist.errors import ConfigError
from dirtymnist.search.studies import StorageError, open_storage
from dirtymnist.search.tune import TuneOptions, tune

optuna = pytest.importorskip("optuna")
TrialState = optuna.trial.TrialState

EPOCHS = 6  # ~0.5 s each here: a trial is long enough to be killed in its middle
TINY = ["model=test_resnet", "image_size=64", f"epochs={EPOCHS}", "batch_size=8", "stages=[]", "folds_k=2"]
SPACE = "lr: {type: float, low: 0.0005, high: 0.005, log: true}\nhead: {type: categorical, choices: [max, lse]}\n"


@pytest.fixture(scope="module")
def postgres_url():
    with throwaway_cluster() as url:
        yield url


def _tune_cmd(data, out, storage, space, *extra):
    cmd = [sys.executable, "-m", "dirtymnist", "tune", str(data), "--preset", "cpu", "--trials", "4",
           "--subset", "0", "--storage", storage, "--study", "fault", "--space", str(space),
           "--out", str(out), "--heartbeat", "2", "--budget-minutes", "6", *extra]
    for item in TINY:
        cmd += ["--set", item]
    return cmd


def _kill_a_worker_mid_trial(study, proc, timeout=120.0):
    """SIGKILL the worker of a running trial that has 1..EPOCHS-2 epochs done; its number, run folder, first log line."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "run_dir" not in t.user_attrs or "worker" not in t.user_attrs:
                continue
            metrics = Path(t.user_attrs["run_dir"]) / "fold0" / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.is_file() else []
            if 1 <= len(lines) <= EPOCHS - 2:
                os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                return t.number, t.user_attrs["run_dir"], lines[0]
        time.sleep(0.05)
    pytest.fail("no trial could be caught mid-way to kill its worker")


def test_two_workers_one_killed_mid_trial_the_study_completes_and_the_trial_resumes(
        tmp_path, make_dataset, postgres_url):
    data = make_dataset(tmp_path / "data", n_train=48, n_test=2)
    assert cli_main(["cache", str(data)]) == 0  # built once, before the workers start
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "tune"
    t0 = time.monotonic()
    proc = subprocess.Popen(_tune_cmd(data, out, postgres_url, space, "--workers", "2"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study = None
    while study is None and proc.poll() is None:
        try:
            study = optuna.load_study(study_name="fault", storage=open_storage(postgres_url, 1))
        except KeyError:  # not created yet
            time.sleep(0.2)
    assert study is not None, proc.communicate()[1][-3000:]
    killed, run_dir, first_epoch = _kill_a_worker_mid_trial(study, proc)
    stdout, stderr = proc.communicate(timeout=420)
    assert proc.returncode == 0, stderr[-4000:]
    seconds = time.monotonic() - t0

    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4, [(t.number, t.state.name) for t in trials]  # exactly --trials
    victim = next(t for t in trials if t.number == killed)
    assert victim.state == TrialState.FAIL  # failed by the heartbeat check of the other worker
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].params == victim.params and retry[0].user_attrs["run_dir"] == run_dir
    # resumed, not retrained: the epochs done before the kill are kept as they were
    assert f"resuming from {run_dir}/fold0/last.pt" in stderr
    rows = (Path(run_dir) / "fold0" / "metrics.jsonl").read_text().splitlines()
    assert rows[0] == first_epoch and json.loads(rows[0])["epoch"] == 1
    # no trial ran twice: one run folder per finished trial, each its own
    assert len({t.user_attrs["run_dir"] for t in finished}) == 4
    assert all(Path(t.user_attrs["run_dir"]).parent == out / "fault" for t in finished)
    assert "best label_acc" in stdout and (out / "best.yaml").is_file()
    print(f"fault test: 2 workers, worker of trial {killed} killed, 4 finished trials in {seconds:.0f}s")


def test_wrong_password_and_unreachable_server_are_one_line_naming_the_host(postgres_url):
    wrong = postgres_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StorageError) as e:
        open_storage(wrong, 1)
    msg = str(e.value)
    assert "127.0.0.1" in msg and "password authentication failed" in msg
    assert "not-the-password" not in msg and PASSWORD not in msg and "\n" not in msg
    port = free_port()  # nothing listens there
    with pytest.raises(StorageError) as e:
        open_storage(f"postgresql://dm:{PASSWORD}@127.0.0.1:{port}/postgres", 1)
    assert f"host 127.0.0.1 port {port}" in str(e.value) and PASSWORD not in str(e.value)


def test_cli_storage_error_exits_2_without_traceback(tmp_path, make_dataset, capsys):
    port = free_port()
    code = cli_main(["tune", str(tmp_path), "--storage", f"postgresql://u:hunter2@127.0.0.1:{port}/db",
                     "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "127.0.0.1" in err and "hunter2" not in err


def test_a_study_made_with_another_space_is_refused_with_the_difference(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=32, n_test=2)
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(SPACE)
    second.write_text("lr: {type: float, low: 0.001, high: 0.005, log: true}\n"
                      "mix: {type: categorical, choices: [none, mixup]}\n")
    out = tmp_path / "tune"
    made = tune(data, "cpu", out=out, options=TuneOptions(trials=0, overrides=TINY, space=first, subset=0))  # the study only
    assert made.n_complete == 0 and (out / "study.db").is_file()
    with pytest.raises(ConfigError) as e:
        tune(data, "cpu", out=out, options=TuneOptions(trials=2, overrides=TINY, space=second, subset=0))
    msg = str(e.value)
    assert "another search space" in msg and "head only in the study" in msg
    assert "mix not in the study" in msg and '"low":0.0005' in msg and '"low":0.001' in msg


_ASK = """
import sys, time
import optuna
from dirtymnist.search.studies import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="q", storage=open_storage(sys.argv[1], 60))
while time.time() < float(sys.argv[2]):  # both processes ask at the same moment
    time.sleep(0.001)
print(" ".join(str(study.ask().number) for _ in range(15)))
"""


def test_local_workers_never_take_the_same_queued_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(url, 60))
    for i in range(30):
        study.enqueue_trial({"x": i})
    start = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", _ASK, url, start], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    taken = [int(n) for p in procs for n in p.communicate(timeout=60)[0].split()]
    assert sorted(taken) == list(range(30))  # each queued trial taken once, none created anew
