"""Delivery: the Docker submission folder runs as the container would and matches `predict`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from dirtymnist import layout
from dirtymnist.cli import main as cli_main

TINY = ["model=test_resnet", "image_size=64", "epochs=1", "batch_size=8", "folds_k=2", "stages=[]"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from conftest import train_argv, write_dataset

    root = tmp_path_factory.mktemp("pkg")
    data = write_dataset(root / "data", n_train=24, n_test=6)
    run = root / "run"
    assert cli_main(train_argv(data, run, TINY, "--folds", "0,1")) == 0
    return data, run


def test_dry_run_lists_contents_and_writes_nothing(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    out = tmp_path / "submit"
    assert cli_main(["package", str(run), "--out", str(out), "--data", str(data), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "run0_fold0.safetensors" in text and "run0_fold1.safetensors" in text and "total" in text
    assert "dirtymnist/model/build.py" in text
    assert "model/ready/" not in text and "glyphs/" not in text  # inference code only
    assert not out.exists()


def test_folder_runs_like_the_container_and_matches_predict(tiny_run, tmp_path):
    from dirtymnist.infer.evaluate import evaluate_submission
    from dirtymnist.infer.predict import PredictOptions, predict

    data, run = tiny_run
    out = tmp_path / "submit"
    assert cli_main(["package", str(run), "--out", str(out), "--data", str(data), "--tta", "rot90",
                     "--thresholds", "0.4"]) == 0
    for name in ("Dockerfile", "main.py", "input/requirements.txt", "input/settings.json",
                 "input/sample_submission.csv", "input/models/run0_fold0.safetensors",
                 "input/models/run0_fold0.json", "dirtymnist/infer/predict.py"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.pt")), "no pickled checkpoints in the submission"
    docker = (out / "Dockerfile").read_text()
    assert docker.startswith("#") and "FROM pytorch/pytorch:" in docker and "requirements.txt" in docker
    settings = json.loads((out / "input/settings.json").read_text())
    assert settings["tta"] == "rot90" and settings["thresholds"]["a"] == 0.4

    # the container's view: working directory = the folder, ./data mounted, ./output written
    shutil.copytree(data / layout.TEST_DIR, out / "data" / layout.TEST_DIR)
    proc = subprocess.run([sys.executable, "main.py"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sub = out / "output" / "submission.csv"
    expected = predict([run], data, out=tmp_path / "ours.csv", options=PredictOptions(tta="rot90", thresholds="0.4"))
    assert sub.read_text() == (tmp_path / "ours.csv").read_text()
    report = evaluate_submission(sub, data / layout.TEST_ANSWER_CSV)
    assert report.rows == 6 and abs(report.label_acc - expected.score.label_acc) < 1e-12


def test_missing_test_folder_is_one_clear_line(tiny_run, tmp_path):
    data, run = tiny_run
    out = tmp_path / "submit"
    assert cli_main(["package", str(run), "--out", str(out), "--data", str(data)]) == 0
    proc = subprocess.run([sys.executable, "main.py"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "test_dirty_mnist_2nd: test image folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refuses_to_overwrite_a_foreign_folder(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert cli_main(["package", str(run), "--out", str(other), "--data", str(data)]) == 2
    assert "not a submission folder" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_failed_repackage_keeps_the_previous_folder_whole(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    out = tmp_path / "submit"
    assert cli_main(["package", str(run), "--out", str(out), "--data", str(data)]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    broken = tmp_path / "broken_run"
    shutil.copytree(run, broken)
    ckpt = broken / "fold1" / "best.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a truncated checkpoint: export fails half-way
    assert cli_main(["package", str(broken), "--out", str(out), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "best.pt" in err and "Traceback" not in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no half-built folder left"
    # and a good repackage replaces it whole
    assert cli_main(["package", str(run), "--out", str(out), "--data", str(data), "--tta", "none"]) == 0
    assert json.loads((out / "input/settings.json").read_text())["tta"] == "none"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
