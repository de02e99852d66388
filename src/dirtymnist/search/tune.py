"""Hyper-parameter search: `dirtymnist tune DATA_DIR --preset P --trials N --budget-minutes M`.

Optuna (TPE sampler, median pruner on the per-epoch validation label accuracy) over a
label-balanced subset. The study lives in SQLite by default (OUT/study.db), so an
interrupted search continues where it stopped; `--workers N` runs N processes on it, and
any database URL (`--storage postgresql://...`) lets `tune` commands on several hosts share
it (heartbeats retry a dead worker's trial: `studies.py`). Each trial is an ordinary run
directory, OUT/STUDY/trial-NNNN, so `dirtymnist runs OUT` compares them; the best config is
written as a preset YAML.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError, DirtyMnistError
from dirtymnist.search.studies import DEFAULT_HEARTBEAT, MAX_RETRY

log = logging.getLogger(__name__)

# The default space: what moves label accuracy most for a fixed backbone. No batch_size: stages
# count optimizer steps, so a bigger batch buys more compute per trial and wins the search
# without winning per minute (BENCHMARKS.md, "dirtymnist tune"). Add it in a --space file
# and read the trials' times beside their accuracy (`dirtymnist runs OUT`).
DEFAULT_SPACE = {
    "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "head": {"type": "categorical", "choices": ["avg", "max", "lse"]},
    "augment": {"type": "categorical", "choices": ["none", "rot90"]},  # d4 flips letters (b <-> d)
    "mix": {"type": "categorical", "choices": ["none", "mixup", "cutmix"]},
}


@dataclass
class TuneResult:
    out: Path
    best_value: float | None
    best_params: dict
    best_preset: Path | None
    trials_csv: Path
    n_complete: int
    n_pruned: int


def load_space(path: str | Path | None) -> dict:
    if path is None:
        return DEFAULT_SPACE
    from dirtymnist.config import TrainConfig, read_yaml_mapping

    path = Path(path)
    space = read_yaml_mapping(path, "search space")
    if not space:
        raise ConfigError(f"{path}: a search space maps config keys to {{type, low, high}} or {{type: categorical, choices}}")

    known = set(TrainConfig.__dataclass_fields__)
    for key, spec in space.items():
        if key not in known:
            raise ConfigError(f"{path}: {key!r} is not a config key")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in ("float", "int", "categorical"):
            raise ConfigError(f"{path}: {key}: type must be float, int or categorical")
        if kind == "categorical" and not spec.get("choices"):
            raise ConfigError(f"{path}: {key}: categorical needs choices")
        if kind != "categorical" and not ("low" in spec and "high" in spec):
            raise ConfigError(f"{path}: {key}: {kind} needs low and high")
    return space


def _suggest(trial, space: dict) -> dict:
    params = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "int":
            params[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            params[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return params


@dataclass(frozen=True)
class TuneOptions:
    """A search: `trials` finished (complete or pruned) trials wanted, all workers together, within
    `budget_minutes` of this call; config overrides, the search space file (None: `DEFAULT_SPACE`),
    the balanced subset size (0 = all); the study's storage URL (None: sqlite in OUT) and name
    (None: the preset's), worker processes on this host, and the heartbeat in seconds."""

    trials: int = 20
    budget_minutes: float = 60.0
    overrides: Sequence[str] = ()
    space: str | Path | None = None
    subset: int = 2000
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    heartbeat: int = DEFAULT_HEARTBEAT


def tune(data_dir, preset: str = "cpu", *, out: str | Path = "runs/tune",
         options: TuneOptions = TuneOptions()) -> TuneResult:
    """Run the study until it holds `options.trials` finished (complete or pruned) trials.

    `options.workers` processes on this host share it; `tune` commands on other hosts given the same
    `storage` and `study_name` join the same study. Returns once it is full or the budget is
    spent (counted from this call), then writes OUT/trials.csv and OUT/best.yaml.
    """
    from dirtymnist.config import load_config

    o = options
    if o.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {o.workers}")
    space = load_space(o.space)
    overrides = list(o.overrides or ())
    if o.subset and not any(item.startswith("subset=") for item in overrides):
        overrides.append(f"subset={o.subset}")
    base = load_config(preset, overrides)  # fail early on bad overrides, before OUT is made
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = _Job(data_dir=str(data_dir), preset=preset, overrides=overrides, space=space,
               storage=o.storage or f"sqlite:///{(out / 'study.db').absolute()}",
               shared=o.storage is not None, study=o.study_name or Path(preset).stem, out=str(out.absolute()),
               trials=o.trials, deadline=time.time() + o.budget_minutes * 60, heartbeat=o.heartbeat,
               seed=base.seed)
    study = _open_study(job)
    if not study.trials:  # trial 0: the preset's own values, the baseline every trial is read against
        baseline = preset_point(base, space)
        if baseline:
            study.enqueue_trial(baseline, skip_if_exists=True)
    t0 = time.perf_counter()
    if o.workers == 1:
        _work(job, study, worker=0)
    else:
        _run_workers(job, o.workers)
    log.info("tune: %.0fs", time.perf_counter() - t0)
    return _write_outputs(study, out, preset, overrides)


@dataclass
class _Job:
    """What every worker of one `tune` command needs (picklable: workers are spawned)."""

    data_dir: str
    preset: str
    overrides: list[str]
    space: dict
    storage: str
    shared: bool  # storage given by the user: other hosts may work on the study too
    study: str
    out: str
    trials: int
    deadline: float  # time.time() after which no trial is started
    heartbeat: int
    seed: int


class _Surplus(Exception):
    """This trial would take the study past its number of trials (two workers asked at once)."""


def _open_study(job: _Job):
    import optuna

    from dirtymnist.search.studies import check_space, open_storage, safe_url

    study = optuna.create_study(
        study_name=job.study, storage=open_storage(job.storage, job.heartbeat), load_if_exists=True,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    if "search_space" not in study.user_attrs:  # new, or made before heartbeats existed:
        running = optuna.trial.TrialState.RUNNING  # its RUNNING trials were left by a killed search
        for t in study.get_trials(deepcopy=False, states=(running,)):
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs=dict(t.user_attrs))
    check_space(study, job.space, safe_url(job.storage))
    return study


def _run_workers(job: _Job, workers: int) -> None:
    """`workers` spawned processes (spawn: safe after torch started threads), cores split between them."""
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(job, i, threads), name=f"tune-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [(i, p) for i, p in enumerate(procs) if p.exitcode]
    for i, p in failed:
        log.warning("tune: worker %d (PID %d) ended with exit code %s; a trial it left running is "
                    "retried by the other workers", i, p.pid, p.exitcode)
    if len(failed) == workers:
        raise DirtyMnistError(f"{job.out}: all {workers} tune workers stopped with an error (see above)")


def _worker_main(job: _Job, index: int, threads: int) -> None:
    import sys

    import torch

    logging.basicConfig(level=logging.INFO, format=f"[worker {index}] %(message)s", stream=sys.stderr)
    torch.set_num_threads(threads)
    try:
        _work(job, _open_study(job), worker=index + 1)
    except DirtyMnistError as exc:
        print(f"dirtymnist tune: worker {index}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _work(job: _Job, study, worker: int) -> None:
    """Run trials until the study holds `job.trials` finished ones, counting every worker's."""
    import warnings
    import zlib
    from collections import Counter

    import optuna
    from optuna.trial import TrialState

    # Workers must not replay each other's (or a first session's) random draws.
    salt = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) if worker or job.shared else 0
    study.sampler = optuna.samplers.TPESampler(seed=(job.seed + len(study.trials) + salt) % 2**32,
                                               constant_liar=True)
    objective = _objective(job, study)
    while time.time() < job.deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial -> failed + queued again
        n = Counter(t.state for t in study.get_trials(deepcopy=False))
        finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED]
        if finished >= job.trials:
            log.info("tune: the study holds %d finished trials", finished)
            return
        if n[TrialState.FAIL] > 2 * job.trials + MAX_RETRY:
            log.warning("tune: %d trials failed; stopping (see the errors above)", n[TrialState.FAIL])
            return
        if not n[TrialState.WAITING] and finished + n[TrialState.RUNNING] >= job.trials:
            # the last trials run elsewhere: wait, and take one over if its worker dies
            time.sleep(max(0.0, min(job.heartbeat, job.deadline - time.time())))
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(ConfigError, _Surplus))
        except ValueError as exc:  # Optuna's "Cannot tell a FAIL trial."
            if not str(exc).startswith("Cannot tell a"):
                raise
            # its heartbeat came late, so another worker failed it and queued a copy; the fold
            # claim kept the copy from writing the run folder at the same time
            log.warning("tune: another worker took this worker's trial over (%s; heartbeats late "
                        "under load? a larger --heartbeat avoids it)", exc)
    log.info("tune: the budget is spent; run the command again to continue")


def _objective(job: _Job, study):
    import optuna
    from optuna.trial import TrialState

    from dirtymnist.config import load_config
    from dirtymnist.train.loop import train

    worker = f"{socket.gethostname()}:{os.getpid()}"
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

    def objective(trial) -> float:
        # Trial numbers order the trials: one whose predecessors (finished, running or queued)
        # already fill the study is refused, so workers never overshoot `job.trials`.
        others = study.get_trials(deepcopy=False, states=counted)
        ahead = sum(t.number < trial.number for t in others)
        if ahead >= job.trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number}: {job.trials} trials are already finished or running")
        trial.set_user_attr("worker", worker)
        params = _suggest(trial, job.space)
        cfg = load_config(job.preset, job.overrides + [f"{k}={v}" for k, v in params.items()])
        # a retried trial carries its first run folder in user_attrs, so it resumes from last.pt
        run_dir = Path(trial.user_attrs.get("run_dir") or Path(job.out) / job.study / f"trial-{trial.number:04d}")
        trial.set_user_attr("run_dir", str(run_dir))
        first = next(t for t in others if t.number == trial.number).system_attrs.get("failed_trial")
        if first is not None:
            log.info("tune: trial %d retries trial %d (its worker died) in %s", trial.number, first, run_dir)

        def on_epoch(fold: int, epoch: int, row: dict) -> None:
            trial.report(row["label_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: label_acc {row['label_acc']:.4f}")

        best = train(job.data_dir, cfg, folds=[0], run_dir=run_dir, on_epoch=on_epoch)
        return float(best[0]["label_acc"])

    return objective


def preset_point(cfg, space: dict) -> dict:
    """The config's values of the space's keys, when every one lies inside the space."""
    point = {key: getattr(cfg, key) for key in space}
    for key, spec in space.items():
        value = point[key]
        if spec["type"] == "categorical":
            if value not in spec["choices"]:
                return {}
        elif not float(spec["low"]) <= float(value) <= float(spec["high"]):
            return {}
    return point


def _write_outputs(study, out: Path, preset: str, overrides: list[str]) -> TuneResult:
    import optuna

    from dirtymnist.config import load_config

    trials = study.get_trials(deepcopy=False)
    rows = []
    keys = sorted({k for t in trials for k in t.params})
    for t in trials:
        rows.append([t.number, t.state.name, "" if t.value is None else f"{t.value:.5f}",
                     *[t.params.get(k, "") for k in keys], t.user_attrs.get("run_dir", "")])
    csv_path = out / "trials.csv"
    lines = [",".join(["trial", "state", "label_acc", *keys, "run_dir"])]
    lines += [",".join(str(c) for c in r) for r in rows]
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    if not complete:
        return TuneResult(out, None, {}, None, csv_path, 0, pruned)
    best = study.best_trial
    cfg = load_config(preset, [o for o in overrides if not o.startswith("subset=")]
                      + [f"{k}={v}" for k, v in best.params.items()])
    cfg.preset = f"{Path(preset).stem}-tuned"
    preset_path = out / "best.yaml"
    header = (f"# Found by `dirtymnist tune` (trial {best.number}, OOF label accuracy "
              f"{best.value:.4f} on the tuning subset). Use: --preset {preset_path}\n")
    atomic_write_text(preset_path, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return TuneResult(out, best.value, dict(best.params), preset_path, csv_path, len(complete), pruned)


def format_result(r: TuneResult) -> str:
    if r.best_value is None or (isinstance(r.best_value, float) and math.isnan(r.best_value)):
        return f"no trial completed yet; trials: {r.trials_csv}"
    params = ", ".join(f"{k}={v}" for k, v in r.best_params.items())
    return (f"best label_acc {r.best_value:.4f} ({r.n_complete} complete, {r.n_pruned} pruned)\n"
            f"best params: {params}\nbest preset: {r.best_preset}\ntrials: {r.trials_csv}  "
            f"(compare: dirtymnist runs {r.out})")
