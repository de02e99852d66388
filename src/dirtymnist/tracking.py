"""Opt-in experiment tracking: `tracking: mlflow` logs a training run to MLflow (off by default).

    dirtymnist train DATA --preset cpu --set tracking=mlflow          # -> runs/mlruns/ beside the run
    dirtymnist train DATA --preset cpu --set tracking=mlflow --set tracking_uri=http://HOST:5000
    mlflow ui --backend-store-uri sqlite:///runs/mlruns/mlflow.db      # look (the `mlflow` package)

One MLflow run per run directory, its id kept in RUN/tracking.json, so that a resumed training
and `dirtymnist report` log into the same MLflow run: the resolved config (params and
config.yaml), per-epoch metrics as `fold{k}/{name}` at step = epoch, each fold's best checkpoint
path (tags), and the report's HTML and PNGs (artifacts). The default store is local:
`mlruns/mlflow.db` (SQLite; MLflow 3 keeps its plain-file store in maintenance mode) with
artifacts in `mlruns/artifacts/`, in the run directory's parent folder. Uses `MlflowClient`
with an explicit URI: no global MLflow state, no environment variables.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError
from dirtymnist.rundir import RunDir

log = logging.getLogger(__name__)

EXPERIMENT = "dirtymnist"
_HINT = "tracking=mlflow needs MLflow: pip install 'dirtymnist[tracking]' (mlflow-skinny) or mlflow"


def default_uri(run_dir: Path) -> str:
    return "sqlite:///" + str(Path(run_dir).absolute().parent / "mlruns" / "mlflow.db")


def _client(uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(_HINT) from None
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


class MlflowTracker:
    """Logs one run directory's training to one MLflow run (created, or continued on resume)."""

    def __init__(self, cfg, run_dir: Path):
        from dirtymnist.config import dump_yaml

        self.run_dir = Path(run_dir)
        record = _read_record(self.run_dir)
        self.uri = cfg.tracking_uri or (record or {}).get("uri") or default_uri(self.run_dir)
        self.client = _client(self.uri)
        run = None
        if record and record.get("uri") == self.uri:
            try:
                run = self.client.get_run(record["run_id"])
            except Exception:  # noqa: BLE001 - the store lost it: start a new MLflow run
                run = None
        if run is None:
            run = self.client.create_run(_experiment_id(self.client, self.uri), run_name=self.run_dir.name,
                                         tags={"run_dir": str(self.run_dir.absolute()), "preset": cfg.preset})
            atomic_write_text(RunDir(self.run_dir).tracking,
                              json.dumps({"uri": self.uri, "run_id": run.info.run_id}, indent=2) + "\n")
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
        self.run_id = run.info.run_id
        self._log_config(cfg, dump_yaml(cfg))
        log.info("tracking: MLflow run %s in %s", self.run_id, self.uri)

    def _log_config(self, cfg, yaml_text: str) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        params = [Param(k, _param(v)) for k, v in cfg.to_dict().items()
                  if k not in logged]  # MLflow params are write-once: a resume keeps the first
        if params:
            self.client.log_batch(self.run_id, params=params)
        self.client.log_text(self.run_id, yaml_text, "config.yaml")

    def on_epoch(self, fold: int, epoch: int, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"fold{fold}/{k}", float(v), now, epoch + 1) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, ok: bool) -> None:
        for best in RunDir(self.run_dir).checkpoints("best"):
            self.client.set_tag(self.run_id, f"{best.parent.name}.checkpoint", str(best.absolute()))
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def start_tracking(cfg, run_dir: Path) -> MlflowTracker | None:
    """The tracker `cfg.tracking` asks for, or None (tracking: none)."""
    if cfg.tracking == "none":
        return None
    return MlflowTracker(cfg, run_dir)


def chain(first, second):
    """One on_epoch hook calling `first` (the tracker's) and then `second` (the caller's), if any."""
    if second is None:
        return first

    def hook(fold, epoch, row):
        first(fold, epoch, row)
        return second(fold, epoch, row)

    return hook


def log_report(run_dir: str | Path, files: list[Path]) -> str | None:
    """Log a report's files into RUN's MLflow run when RUN was tracked; its run id, else None."""
    record = _read_record(Path(run_dir))
    if record is None:
        return None
    try:
        client = _client(record["uri"])
    except ConfigError as exc:
        log.warning("report: not logged to MLflow (%s)", exc)
        return None
    for path in files:
        client.log_artifact(record["run_id"], str(path), "report")
    log.info("report: logged to MLflow run %s", record["run_id"])
    return record["run_id"]


def _read_record(run_dir: Path) -> dict | None:
    path = RunDir(run_dir).tracking
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path}: not JSON; delete it to start a new MLflow run") from None
    if not isinstance(record, dict) or not {"uri", "run_id"} <= set(record):
        raise ConfigError(f"{path}: needs 'uri' and 'run_id'; delete it to start a new MLflow run")
    return record


def _experiment_id(client, uri: str) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working directory
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=artifacts)


def _param(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]  # MLflow's limit on a param value
