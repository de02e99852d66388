"""File locks: exclusive, name their holder, and die with their process."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dirtymnist.locks import FileLock, LockHeld

_HOLD = """
import sys, time
from dirtymnist.locks import FileLock
FileLock(sys.argv[1], what="train fold 0").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _hold_in_child(path):
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_holder_is_refused_with_pid_and_host(tmp_path):
    path = tmp_path / "fold0" / ".lock"
    child = _hold_in_child(path)
    try:
        with pytest.raises(LockHeld) as e:
            FileLock(path).acquire(timeout=0)
        msg = str(e.value)
        assert str(path) in msg and f"PID {child.pid}" in msg and "train fold 0" in msg
        assert "\n" not in msg
    finally:
        child.kill()
        child.wait()


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / ".lock"
    child = _hold_in_child(path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with FileLock(path) as lock:  # free again at once
        assert lock.held and lock.holder()["pid"] == os.getpid()
    assert not lock.held and lock.holder() is None


def test_waiting_acquire_gets_the_lock_after_release(tmp_path):
    path = tmp_path / ".lock"
    child = _hold_in_child(path)
    t0 = time.monotonic()
    with pytest.raises(LockHeld):
        FileLock(path).acquire(timeout=0.3)
    assert time.monotonic() - t0 >= 0.3
    child.kill()
    child.wait()
    lock = FileLock(path).acquire(timeout=5)
    assert lock.held
    lock.release()
