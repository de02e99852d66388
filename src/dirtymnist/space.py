"""Disk space: refuse a big write that cannot fit, and turn a full disk into a one-line error.

A write that runs out of space mid-way (ENOSPC, a quota, a file-size limit) must end with one
line naming the path and the cause, remove its partial file and keep the previous good one.
Memory-mapped writes cannot report an error (a page that finds no block is a SIGBUS that kills
the process), so their files are given all their blocks up front with `posix_fallocate`, which
fails cleanly with ENOSPC instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from dirtymnist.errors import DirtyMnistError

# errno values that mean "no room for this write"
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# torch's C++ writer drops the errno; these are its words for a failed write
_TORCH_WRITE_FAILED = ("file write failed", "No space left on device", "unexpected pos")


class SpaceError(DirtyMnistError):
    """Not enough room on a filesystem for a write."""


def human(n: float) -> str:
    """Bytes as a short decimal figure: 2.9 GB, 512 kB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to this user on the filesystem that holds (or would hold) `path`."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def ensure_free(path: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Raise SpaceError ("DIR: the cache needs 2.9 GB, 1.1 GB free there") unless `need_bytes` fit at `path`."""
    free = free_bytes(path)
    if need_bytes > free:
        raise SpaceError(f"{path}: {what} needs {human(need_bytes)}, {human(free)} free there; "
                         "free some space or choose another folder")


_counts: dict[str, int] = {}  # calls of `nth_call` per environment variable, in this process


def nth_call(var: str) -> bool:
    """Fault injection: True at this process's N-th call when environment variable `var` = N."""
    target = os.environ.get(var)
    if not target:
        return False
    _counts[var] = _counts.get(var, 0) + 1
    return _counts[var] == int(target)


def arm_kill_in_step(step: str) -> None:
    """Fault injection for the job's kill/resume tests: DIRTYMNIST_KILL_IN_STEP=NAME:N makes the
    N-th atomic write after a step whose name starts with NAME begins kill this process
    (DIRTYMNIST_KILL_AT_WRITE, counted from now)."""
    spec = os.environ.get("DIRTYMNIST_KILL_IN_STEP", "")
    name, _, n = spec.rpartition(":")
    if name and step.startswith(name):
        var = "DIRTYMNIST_KILL_AT_WRITE"
        os.environ[var] = str(_counts.get(var, 0) + int(n))


def maybe_inject_enospc() -> None:
    """Fault injection for tests where no small filesystem can be mounted:
    DIRTYMNIST_ENOSPC_AT_WRITE=N makes this process's N-th big write (atomic writes,
    preallocations) fail as a full disk does."""
    if nth_call("DIRTYMNIST_ENOSPC_AT_WRITE"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def preallocate(path: str | os.PathLike, nbytes: int) -> None:
    """Give the file at `path` all its blocks now, so later writes through a memmap cannot SIGBUS."""
    fd = os.open(path, os.O_RDWR)
    try:
        maybe_inject_enospc()
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # the filesystem cannot preallocate; writes still go through the memmap
        raise
    finally:
        os.close(fd)


def space_cause(exc: BaseException) -> str | None:
    """The reason text when `exc` (or what it was raised from) is a lack of space, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            return os.strerror(exc.errno)
        if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILED):
            return "the writer could not write its bytes (disk full?)"
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def space_errors(path: str | os.PathLike, what: str = "write") -> Iterator[None]:
    """Turn a lack of space inside the block into one SpaceError naming `path` and the cause."""
    try:
        yield
    except SpaceError:
        raise
    except Exception as exc:  # noqa: BLE001 - only space problems are translated, others re-raised
        cause = space_cause(exc)
        if cause is None:
            raise
        raise SpaceError(f"{path}: {what} failed: {cause}; nothing partial is left and the previous "
                         "file is kept; free some space and run again") from None
