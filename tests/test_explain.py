"""Heat maps: the class maps behind a class-map model's probabilities, drawn over the image; the
report's "where the model looked" panel for missed and hallucinated letters (or why there is none)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import train_argv, write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.look.explain import explain_worst
from dirtymnist.look.heatmaps import HEAT_RGB, class_maps, mean_maps, overlay
from dirtymnist.look.report import build_report
from dirtymnist.look.runs import load_run
from dirtymnist.model.checkpoint import load_model


def _train(root, overrides):
    data = write_dataset(root / "data", n_train=16, n_test=2)
    run = root / "run"
    assert cli_main(train_argv(data, run, overrides, "--folds", "0")) == 0
    return data, run


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory):
    """(data, run): the tiny class-map net (head max), one fold, one epoch on 16 images."""
    return _train(tmp_path_factory.mktemp("fcn"), ("model=dm_fcn_tiny", "image_size=64", "stages=[]",
                                                   "epochs=1", "batch_size=8", "folds_k=2"))


def test_class_maps_give_the_probabilities(fcn_run):
    """head max: a letter's probability is the sigmoid of its map's strongest cell."""
    data, run = fcn_run
    fold = load_run(run, with_oof=True).folds[0]
    model, cfg, _ = load_model(run / "fold0" / "best.pt")
    from dirtymnist.data.cache import open_split

    split = open_split(data, "train")
    rows = np.searchsorted(split.index, fold.index)
    maps = class_maps(model, cfg, np.asarray(split.images[rows]), batch_size=3)
    assert maps.shape == (len(rows), 26, 8, 8)  # 64 px input, stride 8
    np.testing.assert_allclose(maps.max(axis=(2, 3)), fold.probs, atol=1e-5)
    both = mean_maps([(model, cfg), (model, cfg)], np.asarray(split.images[rows[:2]]))
    np.testing.assert_allclose(both, maps[:2], atol=1e-6)


def test_overlay_colours_where_the_heat_is():
    img = np.full((256, 256), 200, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[0, 0] = 1.0
    out = overlay(img, heat)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert (out[-1, -1] == 150).all()  # no heat: the dimmed grey
    hot = out[2, 2].astype(int)
    assert abs(hot - np.array(HEAT_RGB)).max() < 40  # full heat: the overlay colour


def test_report_shows_heat_maps_of_wrong_letters(fcn_run, tmp_path):
    data, run = fcn_run
    rep = build_report(run, data_dir=data, out=tmp_path / "r" / "report.html", gallery=4)
    assert (tmp_path / "r" / "heatmaps.png") in rep.pngs
    page = rep.html.read_text()
    assert "Where the model looked" in page and 'alt="heat maps of wrong letters"' in page
    import cv2

    png = cv2.imread(str(tmp_path / "r" / "heatmaps.png"))
    assert png.shape[0] > 400 and png.std() > 10


def test_report_says_why_no_heat_maps(fcn_run, tmp_path):
    data, run = fcn_run
    copy = tmp_path / "nockpt"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.pt", "report"))
    none = np.zeros((1, 26), np.uint8)
    fig, note = explain_worst(copy, np.zeros((1, 256, 256), np.uint8), np.array([0]), none, none,
                              none.astype(np.float32), ["x"], "abcdefghijklmnopqrstuvwxyz")
    assert fig is None and note.startswith("no heat maps:") and "best.pt is missing" in note


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    """(data, run): a plain timm classifier (head timm: no per-letter maps)."""
    return _train(tmp_path_factory.mktemp("timm"), ("model=test_resnet", "head=timm", "image_size=64",
                                                    "stages=[]", "epochs=1", "batch_size=8", "folds_k=2"))


def test_grad_cam_for_models_without_class_maps(timm_run, tmp_path, monkeypatch):
    pytest.importorskip("pytorch_grad_cam", reason="needs grad-cam (the dev extra)")
    from dirtymnist.look.heatmaps import grad_cam

    data, run = timm_run
    model, cfg, _ = load_model(run / "fold0" / "best.pt")
    img = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    maps = grad_cam(model, cfg, img, [3, 7])
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert class_maps(model, cfg, img[None]) is None

    page = build_report(run, data_dir=data, out=tmp_path / "r" / "report.html").html.read_text()
    assert 'alt="heat maps of wrong letters"' in page and "Grad-CAM (pytorch-grad-cam)" in page

    import sys

    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # as if it were not installed
    page = build_report(run, data_dir=data, out=tmp_path / "r2" / "report.html").html.read_text()
    assert 'alt="heat maps of wrong letters"' not in page
    assert "no heat maps for this model: head=timm has no per-letter class maps" in page
