"""Files that belong together, committed together, and output paths checked before any work.

A set (a submission CSV and its probability files; a fold's oof.npy and oof_index.npy) is
written member by member, each atomically, the set's manifest last:

    sub.probs.npy, sub.probs_index.npy, sub.csv, then sub.set.json  {"complete": true,
        "files": {role: {"name", "sha256", "bytes"}}, ...}

A kill between two members leaves the old manifest (or a pending one) beside a new member, so
`verify_set` sees the mismatch and the reader (ensemble, thresholds) refuses the set instead of
mixing two runs' files. Stale temp files of killed writes are removed by the next writer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.locks import FileLock
from dirtymnist.space import ensure_free


def check_output_path(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse, before any compute, an output path that is a folder or cannot be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path}: {flag} names a folder; give a file name, e.g. {path / 'submission.csv'}")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{path}: {flag} cannot be written ({folder} is a file, not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: {flag} cannot be written (folder {folder} is not writable)")
    return path


def write_set(manifest: str | os.PathLike, members: Mapping[str, tuple[Path, np.ndarray | str]],
              **meta) -> None:
    """Write each member (role -> (path, array or text)) atomically in order, then the manifest.

    One writer per set at a time (a second is refused); the space for all members is checked
    first, so a full disk refuses before the first file is replaced.
    """
    manifest = Path(manifest)
    payloads = {role: (Path(p), _encode(data)) for role, (p, data) in members.items()}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(manifest.with_name(f".{manifest.name}.lock"), what="a writer of this output set"):
        # whole blocks per file, and the manifest: what the filesystem really takes
        block = os.statvfs(manifest.parent).f_frsize or 4096
        need = sum(-(-len(b) // block) * block for _, b in payloads.values()) + block
        ensure_free(manifest.parent, need, "this output set")
        for path, _ in payloads.values():
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed write
                stale.unlink(missing_ok=True)
        if not manifest.is_file():  # a first write killed half-way must not look complete
            atomic_write_text(manifest, json.dumps({"complete": False}) + "\n")
        files = {}
        for role, (path, data) in payloads.items():
            with atomic_path(path, suffix=path.suffix) as tmp:
                tmp.write_bytes(data)
            files[role] = {"name": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        atomic_write_text(manifest, json.dumps({"complete": True, "files": files, **meta}, indent=2) + "\n")


def verify_set(manifest: str | os.PathLike, rerun: str) -> dict | None:
    """The manifest's record when every member matches it; None when there is no manifest.

    A DataError (one line, naming the file and `rerun`, the command that rewrites the set) when
    the set is incomplete or a member differs from what was committed with it.
    """
    manifest = Path(manifest)
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{manifest}: unreadable ({exc}); {rerun}") from None
    if not isinstance(record, dict) or not record.get("complete") or not isinstance(record.get("files"), dict):
        raise DataError(f"{manifest}: these files were being written when their writer stopped "
                        f"(an incomplete set); {rerun}")
    for role, entry in record["files"].items():
        path = manifest.parent / entry["name"]
        if not path.is_file():
            raise DataError(f"{path}: missing from its set ({manifest.name}); {rerun}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise DataError(f"{path}: not the {role} file committed with the others in {manifest.name} "
                            f"(a mixed set: written by another run, or changed since); {rerun}")
    return record


def _encode(data: np.ndarray | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    buf = io.BytesIO()
    np.save(buf, np.asarray(data), allow_pickle=False)
    return buf.getvalue()


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of (N, 26) 0/1 labels as uint8: ties a fold's OOF rows to the labels it saw."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()
