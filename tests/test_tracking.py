"""`tracking: mlflow` logs config, per-epoch metrics, checkpoint paths and the report to a local
MLflow store (off by default); a resumed run continues the same MLflow run."""

from __future__ import annotations

import json

import pytest
from conftest import train_argv, write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError

mlflow = pytest.importorskip("mlflow", reason="needs mlflow-skinny (the dev or tracking extra)")

OVERRIDES = ("model=dm_fcn_tiny", "image_size=64", "stages=[]", "batch_size=8", "folds_k=2")


def test_training_is_logged_to_the_local_store(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=16, n_test=2)
    run = tmp_path / "runs" / "tiny"
    assert cli_main(train_argv(data, run, (*OVERRIDES, "epochs=1", "tracking=mlflow"), "--folds", "0")) == 0
    record = json.loads((run / "tracking.json").read_text())
    assert record["uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlruns' / 'mlflow.db'}"
    client = mlflow.MlflowClient(record["uri"])
    got = client.get_run(record["run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == "tiny"
    assert got.data.params["model"] == "dm_fcn_tiny" and got.data.params["tracking"] == "mlflow"
    assert got.data.tags["fold0.checkpoint"] == str(run / "fold0" / "best.pt")
    rows = [json.loads(line) for line in (run / "fold0" / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(record["run_id"], "fold0/label_acc")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["label_acc"]) for r in rows]

    # resumed with one more epoch (--force: the config changed): the same MLflow run goes on
    assert cli_main(train_argv(data, run, (*OVERRIDES, "epochs=2", "tracking=mlflow"), "--folds", "0",
                               "--force")) == 0
    assert json.loads((run / "tracking.json").read_text())["run_id"] == record["run_id"]
    steps = [m.step for m in client.get_metric_history(record["run_id"], "fold0/val_loss")]
    assert steps == [1, 2]

    # the report lands in the same MLflow run
    from dirtymnist.look.report import build_report

    build_report(run, data_dir=data, gallery=2)
    artifacts = {a.path for a in client.list_artifacts(record["run_id"], "report")}
    assert "report/report.html" in artifacts and "report/curves.png" in artifacts
    assert "config.yaml" in {a.path for a in client.list_artifacts(record["run_id"])}


def test_tracking_is_off_by_default_and_checked(tmp_path):
    assert load_config("cpu").tracking == "none"
    with pytest.raises(ConfigError, match="tracking='wandb'; choose from mlflow, none"):
        load_config("cpu", {"tracking": "wandb"})


def test_missing_mlflow_gives_a_one_line_hint(tmp_path, monkeypatch):
    import sys

    from dirtymnist.tracking import start_tracking

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    cfg = load_config("cpu", {"tracking": "mlflow"})
    with pytest.raises(ConfigError, match=r"pip install 'dirtymnist\[tracking\]'"):
        start_tracking(cfg, tmp_path / "run")
