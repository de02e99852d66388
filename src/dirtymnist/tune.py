"""Hyper-parameter search: `dirtymnist tune DATA_DIR --preset P --trials N --budget-minutes M`.

Optuna (TPE sampler, median pruner on the per-epoch validation label accuracy) over a
label-balanced subset. The study lives in SQLite by default (OUT/study.db), so an
interrupted search continues where it stopped; any database URL (`--storage`) spreads
trials over several machines. Each trial is an ordinary run directory under OUT/, so
`dirtymnist runs OUT` compares them; the best config is written as a preset YAML.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError

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


def tune(data_dir, preset: str = "cpu", *, trials: int = 20, budget_minutes: float = 60.0,
         overrides: list[str] | None = None, space: str | Path | None = None,
         storage: str | None = None, out: str | Path = "runs/tune", subset: int = 2000,
         study_name: str | None = None) -> TuneResult:
    import optuna

    from dirtymnist.config import load_config
    from dirtymnist.train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space(space)
    overrides = list(overrides or [])
    if subset and not any(o.startswith("subset=") for o in overrides):
        overrides.append(f"subset={subset}")
    base = load_config(preset, overrides)  # fail early on bad overrides
    storage = storage or f"sqlite:///{(out / 'study.db').absolute()}"
    name = study_name or f"{Path(preset).stem}"
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    # A continued search must not replay the first session's random draws.
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials))
    # Trials left RUNNING by a killed search: mark failed and run their parameters again in
    # the same run directory, which resumes from its last.pt.
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"run_dir": t.user_attrs.get("run_dir", "")},
                            skip_if_exists=False)
        log.info("tune: trial %d was interrupted; queued again", t.number)

    def objective(trial) -> float:
        params = _suggest(trial, space)
        cfg = load_config(preset, overrides + [f"{k}={v}" for k, v in params.items()])
        run_dir = Path(trial.user_attrs.get("run_dir") or out / f"trial-{trial.number:04d}")
        trial.set_user_attr("run_dir", str(run_dir))

        def on_epoch(fold: int, epoch: int, row: dict) -> None:
            trial.report(row["label_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: label_acc {row['label_acc']:.4f}")

        best = train(data_dir, cfg, folds=[0], run_dir=run_dir, on_epoch=on_epoch)
        return float(best[0]["label_acc"])

    if not study.trials:  # trial 0: the preset's own values, the baseline every trial is read against
        baseline = preset_point(base, space)
        if baseline:
            study.enqueue_trial(baseline)
    done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    remaining = max(0, trials - done)
    t0 = time.perf_counter()
    if remaining:
        log.info("tune: %d trial(s) done, running up to %d more within %.0f min", done, remaining, budget_minutes)
        study.optimize(objective, n_trials=remaining, timeout=budget_minutes * 60, catch=(ConfigError,))
    log.info("tune: %.0fs", time.perf_counter() - t0)
    return _write_outputs(study, out, preset, overrides)


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
