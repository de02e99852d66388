"""A run folder shared by trains: its description written only after checks, one writer per
fold, fold claims, and the folds' out-of-fold files gathered (RunDir paths).

    RUN/.lock           held for a moment while a train checks and records the run
    RUN/config.yaml     the config the run was made with (refuses another one unless --force)
    RUN/run.json        the data folder it trains on (refuses another one unless --force)
    RUN/fold{k}/.lock   held by the one process writing fold k, for as long as it trains
    RUN/fold{k}/.claim  held by the worker that trains fold k (`train_claimed`)
    RUN/oof*.npy        every fold's OOF rows (`gather_oof`), once all are done

Locks are `fcntl` locks (`dirtymnist.locks`): a SIGKILLed train leaves none behind.

Several `train` processes or hosts sharing a run folder train each fold once: a worker claims
fold k by locking RUN/fold{k}/.claim (the kernel releases it when the process ends, even by
SIGKILL, also over NFS). A worker first trains every fold it can claim at once; then it waits for
the folds the others hold, so a fold whose worker died is taken over (it resumes from its
last.pt) and a finished one is only read back. When a worker returns, every fold is done, and it
gathers the folds' out-of-fold files into RUN/oof*.npy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import yaml

from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.config import TrainConfig, diff_configs, dump_yaml
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.locks import FileLock, LockHeld
from dirtymnist.rundir import FoldDir, RunDir

log = logging.getLogger(__name__)

RUN_LOCK_WAIT_S = 60  # another train holds RUN/.lock only while it checks and records


def lock_fold(fold_dir: FoldDir) -> FileLock:
    """Take fold k's writer lock now, or refuse (LockHeld naming the holder's PID and host)."""
    return FileLock(fold_dir.lock, what=f"a train of fold {fold_dir.fold}").acquire(timeout=0)


def check_run(run_dir: str | os.PathLike, cfg: TrainConfig, data_dir: str | os.PathLike, *,
              force: bool = False) -> dict:
    """Refuse a config or a data folder other than the run's; return the run.json to record.

    Nothing is written: a refused train leaves the run folder exactly as it was.
    """
    run = RunDir(run_dir)
    config_path = run.config
    if config_path.is_file():
        try:
            before = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{config_path}: not readable ({type(exc).__name__}); "
                              "delete it or use another --run-dir") from None
        changed = diff_configs(before, cfg.to_dict()) if isinstance(before, dict) else ["all keys"]
        if changed and not force:
            raise ConfigError(f"{config_path}: the run was made with another config (differs in "
                              f"{', '.join(changed)}); use the same settings, another --run-dir, or --force")
    data = str(Path(data_dir).expanduser().absolute())
    record = {"data_dir": data}
    old = run.read_record()
    was = old.get("data_dir")
    if was and not _same_folder(was, data):
        if not force:
            raise DataError(f"{run.record}: the run trains on {was}, not {data}; "
                            "use another --run-dir, or --force to go on with the new folder "
                            "(the run then records both)")
        record["previous_data_dirs"] = [*old.get("previous_data_dirs", []), was]
    elif old.get("previous_data_dirs"):
        record["previous_data_dirs"] = old["previous_data_dirs"]
    return record


def record_run(run_dir: str | os.PathLike, cfg: TrainConfig, data_dir: str | os.PathLike,
               cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> None:
    """Check again under RUN/.lock, then write config.yaml and run.json (atomically)."""
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    with FileLock(run.lock, what="a train recording its run").acquire(timeout=RUN_LOCK_WAIT_S):
        record = check_run(run.path, cfg, data_dir, force=force)
        for written in (run.config, run.record):  # temp files of a train killed while recording
            for stale in run.path.glob(f".{written.name}.*.tmp"):
                stale.unlink()
        record["cache_dir"] = str(Path(cache_dir).absolute()) if cache_dir else None
        record["weights"] = cfg.pretrained_record  # what `pretrained` loaded (weights.settle)
        old = run.read_record()
        if "checkpoints" in old:  # averaged checkpoints noted by `average` / swa_epochs
            record["checkpoints"] = old["checkpoints"]
        atomic_write_text(run.config, dump_yaml(cfg))
        # where the data lives, so later commands (thresholds, report, package) need only RUN
        atomic_write_text(run.record, json.dumps(record, indent=2) + "\n")


def _same_folder(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


# --------------------------------------------------------------------------- fold claims
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
