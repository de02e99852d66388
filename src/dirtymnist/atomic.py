"""Atomic file writes: write a temp file in the same folder, fsync, then rename.

A process killed at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dirtymnist.errors import DirtyMnistError
from dirtymnist.space import maybe_inject_enospc, nth_call, space_errors


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`.

    `suffix` keeps a meaningful extension on the temp name (np.save adds `.npy` otherwise).
    """
    path = Path(path)
    tmp_path = _temp_beside(path, suffix)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        # a full disk ends in one line naming `path`; the temp file goes, the old file stays
        with space_errors(path):
            yield tmp_path
            maybe_inject_enospc()
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        _maybe_inject_kill()
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable(path: str | os.PathLike) -> None:
    """Refuse now, in one line, when `path` could not be written later (a read-only folder),
    rather than after the minutes of work that make it."""
    _temp_beside(Path(path), "").unlink()


def _temp_beside(path: Path, suffix: str) -> Path:
    """An empty temp file in `path`'s folder (made if missing); a read-only folder is a one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    except PermissionError as exc:
        raise DirtyMnistError(f"{path}: cannot write here ({exc.strerror.lower()}); "
                              "choose another folder or change its permissions") from None
    os.close(fd)
    return Path(tmp)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _maybe_inject_kill() -> None:
    """Fault injection for the kill/resume tests: DIRTYMNIST_KILL_AT_WRITE=N makes this
    process SIGKILL itself during its N-th atomic write, after the temp file is complete and
    before the rename -- the worst moment for a non-atomic writer."""
    if nth_call("DIRTYMNIST_KILL_AT_WRITE"):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not supported on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
