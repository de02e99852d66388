"""Guards of a run folder: one writer per fold, and its description written only after checks.

    RUN/.lock          held for a moment while a train checks and records the run
    RUN/config.yaml    the config the run was made with (refuses another one unless --force)
    RUN/run.json       the data folder it trains on (refuses another one unless --force)
    RUN/fold{k}/.lock  held by the one process writing fold k, for as long as it trains

Locks are `fcntl` locks (`dirtymnist.locks`): a SIGKILLed train leaves none behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import yaml

from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.config import TrainConfig, diff_configs, dump_yaml
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.locks import FileLock

log = logging.getLogger(__name__)

RUN_LOCK_WAIT_S = 60  # another train holds RUN/.lock only while it checks and records


def lock_fold(fold_dir: str | os.PathLike, fold: int) -> FileLock:
    """Take fold k's writer lock now, or refuse (LockHeld naming the holder's PID and host)."""
    return FileLock(Path(fold_dir) / ".lock", what=f"a train of fold {fold}").acquire(timeout=0)


def check_run(run_dir: str | os.PathLike, cfg: TrainConfig, data_dir: str | os.PathLike, *,
              force: bool = False) -> dict:
    """Refuse a config or a data folder other than the run's; return the run.json to record.

    Nothing is written: a refused train leaves the run folder exactly as it was.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
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
    old = read_run_json(run_dir / "run.json")
    was = old.get("data_dir")
    if was and not _same_folder(was, data):
        if not force:
            raise DataError(f"{run_dir / 'run.json'}: the run trains on {was}, not {data}; "
                            "use another --run-dir, or --force to go on with the new folder "
                            "(the run then records both)")
        record["previous_data_dirs"] = [*old.get("previous_data_dirs", []), was]
    elif old.get("previous_data_dirs"):
        record["previous_data_dirs"] = old["previous_data_dirs"]
    return record


def record_run(run_dir: str | os.PathLike, cfg: TrainConfig, data_dir: str | os.PathLike,
               cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> None:
    """Check again under RUN/.lock, then write config.yaml and run.json (atomically)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / ".lock", what="a train recording its run").acquire(timeout=RUN_LOCK_WAIT_S):
        record = check_run(run_dir, cfg, data_dir, force=force)
        for stale in [*run_dir.glob(".config.yaml.*.tmp"), *run_dir.glob(".run.json.*.tmp")]:
            stale.unlink()  # left by a train killed while recording
        record["cache_dir"] = str(Path(cache_dir).absolute()) if cache_dir else None
        record["weights"] = cfg.pretrained_record  # what `pretrained` loaded (weights.settle)
        old = read_run_json(run_dir / "run.json")
        if "checkpoints" in old:  # averaged checkpoints noted by `average` / swa_epochs
            record["checkpoints"] = old["checkpoints"]
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        # where the data lives, so later commands (thresholds, report, package) need only RUN
        atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2) + "\n")


def load_resume_point(fold_dir: str | os.PathLike, fold: int) -> dict:
    """fold_dir/last.pt; when it is unreadable, the newest readable kept epoch*.pt instead.

    When neither exists, the error names exactly which file to delete to start the fold again.
    """
    from dirtymnist.model.checkpoint import load_checkpoint

    fold_dir = Path(fold_dir)
    last = fold_dir / "last.pt"
    try:
        return load_checkpoint(last)
    except ConfigError as exc:
        problem = str(exc).removeprefix(f"{last}: ")
    for kept in sorted(fold_dir.glob("epoch*.pt"), reverse=True):
        try:
            ckpt = load_checkpoint(kept)
        except ConfigError:
            continue
        log.warning("fold %d: %s is %s; resuming from %s instead (copied over it)", fold, last,
                    problem, kept.name)
        with atomic_path(last) as tmp:
            shutil.copyfile(kept, tmp)
        return ckpt
    raise ConfigError(f"{last}: {problem}, and no readable epoch*.pt is kept beside it; delete "
                      f"{last} to train fold {fold} again from the start")


def read_run_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc}); delete it to record "
                        "the data folder again") from None
    return record if isinstance(record, dict) else {}


def _same_folder(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b
