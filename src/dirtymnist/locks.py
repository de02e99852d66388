"""Inter-process locks on files: one holder at a time, released when the holder dies.

Built on `fcntl.flock` (Linux emulates it over NFS with POSIX locks), so a SIGKILLed
process never leaves a stale lock behind: the kernel drops it with the process's files.
The lock file stays on disk and holds its holder's JSON record (pid, host, what, since),
which a refused second process reads to name who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from dirtymnist.errors import DirtyMnistError


class LockHeld(DirtyMnistError):
    """Another live process holds the lock."""


class FileLock:
    """An exclusive lock on `path` (created if missing), as a context manager.

    `acquire(timeout=0)` refuses at once with `LockHeld`; `timeout=None` waits for ever; a
    number waits that many seconds. `what` describes the holder's job in the refusal message.
    """

    def __init__(self, path: str | os.PathLike, what: str = "a job"):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = 0, poll: float = 0.1) -> FileLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeld(f"{self.path}: {self._describe_holder()}") from None
                time.sleep(poll)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only unnamed
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file = nobody holds it
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder(self) -> dict | None:
        """The holder's record as written at acquire time, or None (free, or not readable)."""
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None

    def _describe_holder(self) -> str:
        h = self.holder()
        if not h:
            return "locked by another process"
        return (f"in use by {h.get('what', 'a job')} (PID {h.get('pid')} on host "
                f"{h.get('host')}, since {h.get('since')}); wait for it or stop it")

    def __enter__(self) -> FileLock:
        return self.acquire(timeout=0) if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
