"""Guards of a run folder: one writer per fold, and its description written only after checks (RunDir paths).

    RUN/.lock          held for a moment while a train checks and records the run
    RUN/config.yaml    the config the run was made with (refuses another one unless --force)
    RUN/run.json       the data folder it trains on (refuses another one unless --force)
    RUN/fold{k}/.lock  held by the one process writing fold k, for as long as it trains

Locks are `fcntl` locks (`dirtymnist.locks`): a SIGKILLed train leaves none behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from dirtymnist.atomic import atomic_write_text
from dirtymnist.config import TrainConfig, diff_configs, dump_yaml
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.locks import FileLock
from dirtymnist.rundir import FoldDir, RunDir

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
