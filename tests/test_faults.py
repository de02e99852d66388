"""The fault campaign, bounded for CI: full disks, two writers, parallel folds, SIGKILLs.

`bench/faults.py` runs it at length (random levels and moments, many rounds) for the
"Faults survived" table; here each fault runs once or twice, in this process where it can, with
the same invariant checks. A full disk is a size-limited tmpfs where mounting is permitted
(root), else ENOSPC injected at a chosen write (DIRTYMNIST_ENOSPC_AT_WRITE).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import faultkit as faults
import pytest

from dirtymnist import space  # noqa: E402
from dirtymnist.cli import main as cli_main  # noqa: E402
from dirtymnist.config import load_config  # noqa: E402
from dirtymnist.errors import DataError  # noqa: E402
from dirtymnist.infer.predict import PredictOptions, ensemble, predict  # noqa: E402
from dirtymnist.locks import FileLock  # noqa: E402
from dirtymnist.outputs import verify_set  # noqa: E402
from dirtymnist.space import SpaceError  # noqa: E402
from dirtymnist.train.loop import train  # noqa: E402


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(work folder, data, cache, an uninterrupted reference run trained in this process)."""
    work = tmp_path_factory.mktemp("faults")
    data = faults.make_data(work / "data")
    cache = data / ".dirtymnist_cache"
    ref = work / "ref"
    train(data, load_config("cpu", faults.TINY), run_dir=ref, cache_dir=cache)
    return work, data, cache, ref


class FullDisk:
    """A folder whose filesystem `start()` fills but for `leave` bytes -- or, where no small
    filesystem can be mounted, where this process's `nth_write` from `start()` on fails with ENOSPC."""

    def __init__(self, folder: Path, mounted: bool, leave: int, nth_write: int, monkeypatch):
        self.folder, self.mounted, self.leave, self.nth = folder, mounted, leave, nth_write
        self.mp = monkeypatch

    def start(self) -> None:
        if self.mounted:
            faults.fill(self.folder, self.leave)
        else:
            self.mp.setattr(space, "_counts", {})
            self.mp.setenv("DIRTYMNIST_ENOSPC_AT_WRITE", str(self.nth))

    def stop(self) -> None:
        if self.mounted:
            (self.folder / "filler").unlink()
        else:
            self.mp.delenv("DIRTYMNIST_ENOSPC_AT_WRITE")


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """full_disk(leave_bytes, nth_write) -> FullDisk on a 40 MB tmpfs (or injected ENOSPC)."""
    stack = []

    def make(leave: int, nth_write: int) -> FullDisk:
        ctx = faults.small_fs(tmp_path, 40 * faults.MB)
        folder, mounted = ctx.__enter__()
        stack.append(ctx)
        return FullDisk(folder, mounted, leave, nth_write, monkeypatch)

    yield make
    for ctx in stack:
        ctx.__exit__(None, None, None)


def test_disk_full_while_building_the_cache(tmp_path):
    # nothing free (refused up front), then half of what is needed; each then rebuilt with space
    need = 56 * 256 * 256
    row = faults.disk_full_cache(tmp_path, 2, random.Random(0), leaves=[0, need // 2])
    assert row.lost == 0, row.problems
    assert row.hit == 2  # both rounds were refused (exit 2, one line), not silently fine


def test_disk_full_while_training_then_resume_bit_exact(lab, full_disk):
    work, data, cache, ref = lab
    cfg = load_config("cpu", faults.TINY)
    ckpt_bytes = (ref / "fold0" / "last.pt").stat().st_size
    disk = full_disk(int(1.5 * ckpt_bytes), 4)  # room for one checkpoint, not two
    fs, run = disk.folder, disk.folder / "run"
    disk.start()
    with pytest.raises(SpaceError) as e:
        train(data, cfg, run_dir=run, cache_dir=cache)
    msg = str(e.value)
    assert msg.startswith(str(fs)) and "\n" not in msg and "free some space" in msg
    assert not faults.leftovers(fs) and not faults.loadable_run(run)
    disk.stop()
    train(data, cfg, run_dir=run, cache_dir=cache)
    assert faults.same_weights(ref / "fold0" / "last.pt", run / "fold0" / "last.pt") == []


def test_disk_full_while_predicting_keeps_the_old_set(lab, full_disk, monkeypatch):
    work, data, cache, ref = lab
    disk = full_disk(0, 1)  # no room at all / the first write of the set fails
    fs, out = disk.folder, disk.folder / "sub.csv"
    predict([ref], data, out=out, options=PredictOptions(cache_dir=cache))  # the old, good set
    old = {p.name: p.read_bytes() for p in fs.glob("sub*")}
    disk.start()
    if disk.mounted:  # refused up front: the set needs more than is free
        with pytest.raises(SpaceError, match=r"this output set needs [\d.]+ kB, 0 B free there"):
            predict([ref], data, out=out, options=PredictOptions(cache_dir=cache, thresholds="0.3"))
    monkeypatch.setattr(space, "free_bytes", lambda path: 1 << 40)  # the check passed; then full
    with pytest.raises(SpaceError, match=r"sub.probs.npy: write failed: No space left on device"):
        predict([ref], data, out=out, options=PredictOptions(cache_dir=cache, thresholds="0.3"))
    assert {p.name: p.read_bytes() for p in fs.glob("sub*")} == old
    assert verify_set(fs / "sub.set.json", "") is not None and not faults.leftovers(fs)
    assert ensemble([fs / "sub.probs.npy"], data).probs.shape == (8, 26)


def test_a_kill_between_two_members_of_a_set_is_refused_not_mixed(lab, tmp_path):
    work, data, cache, ref = lab
    out = tmp_path / "sub.csv"
    predict([ref], data, out=out, options=PredictOptions(cache_dir=cache))
    cmd = [sys.executable, "-m", "dirtymnist", "predict", str(ref), "--data", str(data),
           "--cache-dir", str(cache), "--out", str(out), "--tta", "rot90"]  # other probabilities
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIRTYMNIST_KILL_AT_WRITE": "2"}  # after probs
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == -signal.SIGKILL
    with pytest.raises(DataError, match="sub.probs.npy: not the probs file committed"):
        ensemble([tmp_path / "sub.probs.npy"], data)  # new probabilities beside the old CSV: refused
    predict([ref], data, out=out, options=PredictOptions(cache_dir=cache, tta="rot90"))  # the rerun repairs it
    assert ensemble([tmp_path / "sub.probs.npy"], data).probs.shape == (8, 26)
    assert not faults.leftovers(tmp_path)


def test_two_trains_into_one_run_folder(lab, capsys):
    work, data, cache, ref = lab
    run = work / "run-two"
    args = faults.train_args(data, run, cache, "--set", "epochs=300")
    a = faults.dm(*args)
    try:
        lock = run / "fold0" / ".lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            assert a.poll() is None, a.communicate()[1][-2000:]
            time.sleep(0.05)
        assert cli_main(list(map(str, args))) == 2
        assert f"PID {a.pid} on host" in capsys.readouterr().err
        assert cli_main([*map(str, args), "--set", "lr=0.5"]) == 2
        assert "differs in lr" in capsys.readouterr().err
        assert a.poll() is None  # the first one never noticed
    finally:
        faults.kill_group(a)
    assert "lr: 0.5" not in (run / "config.yaml").read_text()
    FileLock(lock).acquire(timeout=0).release()  # its SIGKILLed holder left no stale lock
    assert faults.loadable_run(run) == []


def test_parallel_folds_on_an_uncached_folder(tmp_path):
    data = faults.make_data(tmp_path / "data", n_train=32, seed=3)
    run, cache = tmp_path / "run", data / ".dirtymnist_cache"
    other = faults.dm(*faults.train_args(data, run, cache, "--fold", 1))
    mine = cli_main(list(map(str, faults.train_args(data, run, cache, "--fold", 0))))
    rc, err = faults.finish(other)
    assert (mine, rc) == (0, 0), err[-2000:]
    assert faults.loadable_run(run) == [] and faults.cache_ok(cache, data) == []
    assert sorted(p.parent.name for p in run.glob("fold*/last.pt")) == ["fold0", "fold1"]


def test_sigkill_during_cache_at_random_moments(tmp_path):
    row = faults.kill_cache(tmp_path, 2, random.Random(1))
    assert row.lost == 0, row.problems


def test_predict_needs_only_the_test_split_and_train_names_the_missing_one(lab, tmp_path):
    import shutil

    from dirtymnist import layout

    work, data, cache, ref = lab
    new = tmp_path / "new-test-set"  # what a user has for a new test set
    shutil.copytree(data / layout.TEST_DIR, new / layout.TEST_DIR)
    shutil.copy(data / layout.SAMPLE_CSV, new / layout.SAMPLE_CSV)
    result = predict([ref], new, out=tmp_path / "sub.csv")
    assert len(result.index) == 8 and verify_set(tmp_path / "sub.set.json", "") is not None
    with pytest.raises(DataError, match=r"the train split is missing \(dirty_mnist_2nd/ and "
                                        r"dirty_mnist_2nd_answer.csv not found here\)"):
        train(new, load_config("cpu", faults.TINY), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_read_only_folder_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """chmod cannot stop root (CI runs as root), so the refusal the kernel gives is simulated."""
    import errno
    import tempfile

    from dirtymnist.atomic import atomic_write_text
    from dirtymnist.errors import DirtyMnistError

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    target = tmp_path / "ro" / "submission.csv"
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(DirtyMnistError) as e:
        atomic_write_text(target, "x")
    assert str(e.value).startswith(f"{target}: cannot write here (permission denied)")
    assert not target.exists()


def test_the_cli_turns_an_unwritable_path_into_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from dirtymnist.data import show

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / ".claim"))

    monkeypatch.setattr(show, "contact_sheet", refuse)
    assert cli_main(["show", str(tmp_path), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dirtymnist show: error: {tmp_path / 'ro' / '.claim'}: permission denied; "
                   "choose another folder or change its permissions"]
