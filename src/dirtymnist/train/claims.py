"""Fold claims: several `train` processes or hosts sharing a run folder train each fold once.

A worker claims fold k by locking RUN/fold{k}/.claim (`locks.FileLock`: the kernel releases it
when the process ends, even by SIGKILL, also over NFS). A worker first trains every fold it can
claim at once; then it waits for the folds the others hold, so a fold whose worker died is taken
over (it resumes from its last.pt) and a finished one is only read back. When a worker returns,
every fold is done, and it gathers the folds' out-of-fold files into RUN/oof*.npy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from dirtymnist.atomic import atomic_path
from dirtymnist.errors import DataError
from dirtymnist.locks import FileLock, LockHeld
from dirtymnist.rundir import RunDir

log = logging.getLogger(__name__)


def claim_path(run_dir: str | Path, fold: int) -> Path:
    return RunDir(run_dir).fold(fold).claim


def claim(run_dir: str | Path, fold: int) -> FileLock:
    """Fold `fold`'s claim, to hold `with` it: refused at once (`LockHeld` names the holder)."""
    return FileLock(claim_path(run_dir, fold), what=f"train fold {fold}")


def train_claimed(run_dir: str | Path, folds: Iterable[int], train_one: Callable[[int], dict]) -> dict[int, dict]:
    """`train_one(fold)` for each fold while holding its claim; returns {fold: its result}.

    Pass 1 takes the free folds in order; pass 2 waits for each fold another worker holds.
    A single fold held by another process is refused at once (`LockHeld` names the holder):
    two trains of one fold are a mistake, two workers sharing several folds are a plan.
    """
    results: dict[int, dict] = {}
    pending = list(folds)
    if len(pending) == 1:  # one fold asked for: a second train of it is refused, naming the holder
        with claim(run_dir, pending[0]):
            return {pending[0]: train_one(pending[0])}
    for timeout in (0, None):
        for fold in list(pending):
            lock = claim(run_dir, fold)
            try:
                lock.acquire(timeout=timeout)
            except LockHeld:
                holder = lock.holder() or {}
                log.info("fold %d: claimed by PID %s on host %s; waiting for it after the free folds",
                         fold, holder.get("pid"), holder.get("host"))
                continue
            try:
                results[fold] = train_one(fold)
            finally:
                lock.release()
            pending.remove(fold)
    return results


def gather_oof(run_dir: str | Path, folds: Iterable[int]) -> Path | None:
    """Write the folds' best-epoch OOF rows as one set, sorted by image index.

    RUN/oof.npy (N, 26) float32, RUN/oof_index.npy (N,) int64, RUN/oof_fold.npy (N,) int16.
    Identical content whichever worker writes it, and each write is atomic, so two workers
    finishing at once do no harm.
    """
    run, folds = RunDir(run_dir), list(folds)
    missing = [f for f in folds if not run.fold(f).oof.is_file()]
    if missing:  # e.g. stopped by a hook before its first epoch ended
        log.warning("%s: folds %s have no oof.npy yet; nothing gathered", run.path, ",".join(map(str, missing)))
        return None
    probs, index, fold_of = [], [], []
    for fold in folds:
        p, i = run.fold(fold).read_oof()
        probs.append(p.astype(np.float32))
        index.append(i.astype(np.int64))
        fold_of.append(np.full(len(p), fold, np.int16))
    index_all = np.concatenate(index)
    if len(np.unique(index_all)) != len(index_all):
        raise DataError(f"{run.path}: the folds' OOF files share rows (folds of another split?)")
    order = np.argsort(index_all, kind="stable")
    for path, array in ((run.oof, np.concatenate(probs)[order]), (run.oof_index, index_all[order]),
                        (run.oof_fold, np.concatenate(fold_of)[order])):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
    log.info("gathered %d out-of-fold rows of folds %s into %s", len(order), ",".join(map(str, folds)), run.oof)
    return run.oof
