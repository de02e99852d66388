"""`dirtymnist report`: OOF analysis, a self-contained HTML page with its PNGs, and (with
headless Chromium) that every image of the page loads without a script error."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import train_argv, write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.data.dataset import read_label_csv
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.infer.thresholds import load_oof, load_thresholds
from dirtymnist.look.report import THRESHOLD_GRID, analyse_oof, build_report
from dirtymnist.metrics import label_accuracy

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(data_dir, run_dir): 16 images, 2 folds of 2 epochs of the tiny test model."""
    root = tmp_path_factory.mktemp("report")
    data = write_dataset(root / "data", n_train=16, n_test=2)
    run = root / "run"
    # stages=[]: no curriculum on generated scenes, just 2 epochs on the data
    overrides = ("model=test_resnet", "image_size=64", "epochs=2", "batch_size=8", "folds_k=2",
                 "stages=[]")
    assert cli_main(train_argv(data, run, overrides, "--folds", "0,1")) == 0
    return data, run


def _copy_run(run: Path, dest: Path) -> Path:
    # The report needs no checkpoints: copy the small files only.
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("*.pt", "report"))
    return dest


def test_analyse_oof_counts():
    true = np.zeros((3, 26), np.uint8)
    true[0, [0, 1]] = 1  # image 0 has a, b
    true[1, [2]] = 1  # image 1 has c
    probs = np.zeros((3, 26), np.float32)
    probs[0, [0, 7]] = 0.9  # a found, b missed, h hallucinated
    probs[1, [2]] = 0.4  # c missed at 0.5, found at 0.3
    probs[2, [7, 8]] = [0.6, 0.7]  # h, i hallucinated
    a = analyse_oof(probs, true, np.full(26, 0.5), LETTERS)
    assert a["missed"][[1, 2]].tolist() == [1, 1] and a["missed"].sum() == 2
    assert a["hallucinated"][[7, 8]].tolist() == [2, 1] and a["hallucinated"].sum() == 3
    assert a["confusion"][1, 7] == 1 and a["confusion"].sum() == 1  # b missed while h hallucinated
    assert a["errors"].tolist() == [2, 1, 2]
    assert a["label_acc"] == pytest.approx(1 - 5 / 78)
    assert a["per_letter"]["b"]["recall"] == 0.0 and a["per_letter"]["a"]["precision"] == 1.0
    at = dict(zip(THRESHOLD_GRID.tolist(), a["curve"]))
    assert at[0.5] == pytest.approx(a["label_acc"])
    assert at[0.35] == pytest.approx(1 - 4 / 78)  # c found now
    # per-letter thresholds: c at 0.3 fixes image 1
    t = np.full(26, 0.5)
    t[2] = 0.3
    assert analyse_oof(probs, true, t, LETTERS)["errors"].tolist() == [2, 0, 2]


def test_analyse_oof_decides_as_submissions_do():
    """Strictly above the threshold (p == t is not a letter), and count-aware decoding."""
    from dirtymnist.infer.thresholds import Thresholds

    true = np.zeros((1, 26), np.uint8)
    probs = np.full((1, 26), 0.5, np.float32)  # exactly at 0.5: no letter, as predict decides
    assert analyse_oof(probs, true, 0.5, LETTERS)["pred"].sum() == 0
    count = Thresholds(np.full(26, 0.5), "count")  # count decoding still keeps 10 letters
    assert analyse_oof(probs, true, count, LETTERS)["pred"].sum() == 10


def test_report_is_self_contained(tiny_run, tmp_path):
    data, run = tiny_run
    run = _copy_run(run, tmp_path / "run")
    rep = build_report(run, data_dir=data)
    assert rep.html == run / "report" / "report.html"
    names = sorted(p.name for p in rep.pngs)
    assert names == ["confusion.png", "curves.png", "gallery.png", "letters.png", "threshold.png"]
    page = rep.html.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(rep.pngs)
    for src, png in zip(srcs, rep.pngs):  # the page embeds exactly the PNGs written beside it
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
        assert png.stat().st_size > 5_000
    # nothing loaded from elsewhere: no URL, no <link>, no external script
    assert not re.search(r"https?://|<link|<script src|@import|url\(", page)
    assert 'id="imgcheck"' in page
    assert "pretrained_record" in page and "random init" in page  # what the run started from
    # per-fold summary from the metrics files; OOF over both validation folds (16 images)
    assert [r["fold"] for r in rep.fold_rows] == [0, 1]
    for row in rep.fold_rows:
        history = [json.loads(x) for x in (run / f"fold{row['fold']}" / "metrics.jsonl").read_text().splitlines()]
        assert row["epochs"] == 2
        assert row["label_acc"] == max(h["label_acc"] for h in history)
        # the OOF file is the best epoch's, so it scores what the log says
        assert row["oof_acc"] == pytest.approx(row["label_acc"])
    assert rep.oof["images"] == 16 and rep.oof["thresholds"] == "0.5"


def test_report_uses_thresholds_json_and_png_fallback(tiny_run, tmp_path):
    data, run = tiny_run
    run = _copy_run(run, tmp_path / "run")
    # a data folder without the cache: labels from the CSV, gallery from the PNGs
    plain = tmp_path / "plain"
    shutil.copytree(data, plain, ignore=shutil.ignore_patterns(".dirtymnist_cache"))
    # the format `dirtymnist thresholds` writes and predict / package read, with count decoding
    (run / "thresholds.json").write_text(json.dumps({"thresholds": {k: 0.01 for k in LETTERS}, "decode": "count"}))
    rep = build_report(run, data_dir=plain, out=tmp_path / "out" / "r.html", gallery=4)
    assert rep.html.is_file() and (tmp_path / "out" / "gallery.png").is_file()
    # the report scores the rule a submission uses: every letter is above 0.01, and count
    # decoding keeps the 14 most certain of each image (a plain threshold would keep all 26)
    table = read_label_csv(plain / "dirty_mnist_2nd_answer.csv")
    probs, index = load_oof(run)
    true = table.labels[np.searchsorted(table.index, index)]
    pred = load_thresholds(run / "thresholds.json").apply(probs)
    assert (pred.sum(axis=1) == 14).all()
    assert rep.oof["thresholds"] == "thresholds.json (count)"
    assert rep.oof["label_acc"] == pytest.approx(label_accuracy(pred, true))
    assert rep.oof["label_acc"] != pytest.approx(true.mean())  # not the everything-present score
    # a file no submission could use is refused, as predict refuses it
    (run / "thresholds.json").write_text(json.dumps({k: 0.0 for k in LETTERS}))
    with pytest.raises(ConfigError, match="thresholds.json: needs 'thresholds'"):
        build_report(run, data_dir=plain, out=tmp_path / "out" / "r.html", gallery=4)


def test_report_needs_data(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    run = _copy_run(run, tmp_path / "run")
    # training records its data folder in run.json, so the report finds it by itself ...
    assert build_report(run).html.is_file()
    # ... and without that record it asks for --data
    (run / "run.json").unlink()
    with pytest.raises(DataError, match="pass --data DATA_DIR"):
        build_report(run)
    assert cli_main(["report", str(run)]) == 2
    assert "pass --data" in capsys.readouterr().err
    other = write_dataset(tmp_path / "other", n_train=3, n_test=1)
    with pytest.raises(DataError, match="is this the run's data"):
        build_report(run, data_dir=other)


def test_cli_report_prints_summary(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    run = _copy_run(run, tmp_path / "run")
    assert cli_main(["report", str(run), "--data", str(data), "--gallery", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["fold", "epochs", "best_epoch", "val_loss", "label_acc"]
    assert out[1].split()[0] == "0" and out[2].split()[0] == "1"
    assert out[3].startswith("OOF label_acc")
    assert out[-1] == f"report: {run / 'report' / 'report.html'}"


# --------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium")


def _chromium(*args: str, profile: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_report_in_browser(tiny_run, tmp_path):
    data, run = tiny_run
    run = _copy_run(run, tmp_path / "run")
    rep = build_report(run, data_dir=data)
    url = rep.html.resolve().as_uri()
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", url, profile=tmp_path / "p1")
    m = re.search(r'<div id="imgcheck"([^>]*)>([^<]*)<', dom.stdout)
    assert m, f"no #imgcheck in the DOM; chromium stderr: {dom.stderr[-2000:]}"
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', m.group(1)))
    assert attrs, f"the page check did not run: {m.group(2)!r}"
    assert int(attrs["images"]) == len(rep.pngs), m.group(2)
    assert attrs["broken"] == "0" and attrs["loaded"] == attrs["images"], m.group(2)
    assert attrs["errors"] == "0", m.group(2)

    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url,
              profile=tmp_path / "p2")
    assert shot.is_file() and shot.stat().st_size > 20_000
    import cv2

    img = cv2.imread(str(shot))
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 10  # not a blank page
