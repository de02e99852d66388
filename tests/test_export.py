"""ONNX export: onnxruntime matches torch within 1e-4, and `predict --engine onnx` uses it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_predict import build_tiny_run, one_line_error

from dirtymnist.cli import main as cli_main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    data, run = build_tiny_run(tmp_path_factory.getbasetemp() / "tiny_inference_run")
    assert cli_main(["export", str(run), "--format", "onnx"]) == 0
    return data, run


def test_onnxruntime_matches_torch(exported):
    from dirtymnist.infer.loader import open_model
    from dirtymnist.model.checkpoint import load_model
    from dirtymnist.model.transforms import to_input

    _, run = exported
    onnx_file = run / "fold0" / "best.onnx"
    meta = json.loads((run / "fold0" / "best.onnx.json").read_text())
    assert meta["opset"] >= 17 and meta["input"]["dtype"] == "float32" and len(meta["letters"]) == 26
    model, cfg, letters = load_model(run / "fold0" / "best.pt")
    onnx = open_model(onnx_file)
    session, onnx_cfg, onnx_letters = onnx.net, onnx.config, onnx.letters
    assert onnx_cfg == cfg and onnx_letters == letters
    images = torch.randint(0, 256, (5, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = to_input(images, cfg, torch.device("cpu"), None, "none")
    with torch.no_grad():
        expected = model(x).numpy()
    for batch in (x[:1], x):  # the batch axis is dynamic
        got = session(batch).numpy()
        np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-4, rtol=0)


def test_predict_with_onnx_engine_matches_torch(exported, tmp_path):
    from dirtymnist.infer.predict import PredictOptions, predict

    data, run = exported
    a = predict([run], data, options=PredictOptions(tta="rot90"))  # fp32 on any CPU, AMX or not (precision.py)
    b = predict([run], data, out=tmp_path / "sub.csv", options=PredictOptions(tta="rot90", engine="onnx"))
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4, rtol=0)
    assert b.members[0].suffix == ".onnx" and (tmp_path / "sub.csv").is_file()
    # zoomed views feed the graph a larger input (its spatial axes are dynamic)
    za = predict([run], data, options=PredictOptions(tta="rot90_zoom"))
    zb = predict([run], data, options=PredictOptions(tta="rot90_zoom", engine="onnx"))
    np.testing.assert_allclose(za.probs, zb.probs, atol=1e-4, rtol=0)
    assert not np.allclose(za.probs, a.probs, atol=1e-6)  # the zoomed views count


def test_export_out_dir_and_missing_onnx(exported, tmp_path, capsys):
    data, run = exported
    out = tmp_path / "onnx"
    assert cli_main(["export", str(run / "fold1" / "best.pt"), "--out", str(out)]) == 0
    assert (out / "fold1.onnx").is_file() and (out / "fold1.onnx.json").is_file()
    lone = tmp_path / "lone.pt"
    shutil.copy(run / "fold0" / "best.pt", lone)
    assert cli_main(["predict", str(lone), "--data", str(data), "--engine", "onnx",
                     "--out", str(tmp_path / "s.csv")]) == 2
    one_line_error(capsys, "lone.onnx", "dirtymnist export")
