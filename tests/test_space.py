"""space.py and the atomic writes: refusing what cannot fit, and a full disk as one line."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from dirtymnist import space
from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.space import SpaceError, ensure_free, human, space_cause, space_errors


def test_ensure_free_names_the_folder_and_both_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(space, "free_bytes", lambda path: 1_100_000_000)
    ensure_free(tmp_path, 1_000_000, "the cache")  # fits: nothing happens
    with pytest.raises(SpaceError) as e:
        ensure_free(tmp_path / "not-yet", 2_900_000_000, "the cache")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'not-yet'}: the cache needs 2.9 GB, 1.1 GB free")
    assert "\n" not in msg


def test_free_bytes_of_a_path_not_created_yet(tmp_path):
    assert space.free_bytes(tmp_path / "a" / "b") == space.free_bytes(tmp_path) > 0
    assert human(512) == "512 B" and human(2_900_000_000) == "2.9 GB"


def test_space_cause_follows_the_chain_and_knows_torch():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert space_cause(outer) == "No space left on device"
    assert space_cause(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"))
    assert space_cause(OSError(errno.EACCES, "Permission denied")) is None
    assert space_cause(ValueError("x")) is None


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(ValueError), space_errors(tmp_path / "x"):
        raise ValueError("not about space")


def test_full_disk_in_an_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "probs.npy"
    atomic_write_text(target, "old")
    with pytest.raises(SpaceError) as e, atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value).startswith(f"{target}: write failed: No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["probs.npy"]  # no temp file left


def test_injected_enospc_hits_the_nth_write(tmp_path, monkeypatch):
    monkeypatch.setenv("DIRTYMNIST_ENOSPC_AT_WRITE", "2")
    monkeypatch.setattr(space, "_counts", {})
    atomic_write_text(tmp_path / "a.txt", "1")
    with pytest.raises(SpaceError, match="b.txt: write failed"):
        atomic_write_text(tmp_path / "b.txt", "2")
    atomic_write_text(tmp_path / "c.txt", "3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.txt"]


def test_preallocate_reserves_the_blocks(tmp_path):
    path = tmp_path / "big.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(4, 256, 256))
    space.preallocate(path, 128 + 4 * 256 * 256)
    assert path.stat().st_blocks * 512 >= 4 * 256 * 256  # allocated, not sparse
