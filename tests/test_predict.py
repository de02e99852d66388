"""Prediction: ensembles, TTA invariants, submission + probability files, and bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from dirtymnist import layout
from dirtymnist.cli import main as cli_main
from dirtymnist.data.dataset import read_label_csv
from dirtymnist.infer.predict import PredictOptions, evaluate_tta, predict, predict_rows
from dirtymnist.model.transforms import TTA_PRESETS
from dirtymnist.submission import load_probs, save_probs

# stages=[]: the cpu preset may start with generated-scene stages; these tests need the data stage only
TINY = ["model=test_resnet", "stages=[]", "image_size=32", "epochs=1", "batch_size=8", "folds_k=2",
        "head=lse", "lr=0.001"]


def build_tiny_run(base: Path) -> tuple[Path, Path]:
    """A 2-fold, 1-epoch run on 24 noise images (+6 test); built once, then reused."""
    data, run = base / "data", base / "run"
    if not (run / "fold1" / "best.pt").is_file():
        write_dataset(data, n_train=24, n_test=6, seed=3)
        args = ["train", str(data), "--preset", "cpu", "--run-dir", str(run), "--folds", "0,1"]
        for item in TINY:
            args += ["--set", item]
        assert cli_main(args) == 0
    return data, run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.getbasetemp() / "tiny_inference_run")


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_ensemble_of_identical_runs_equals_one_run(tiny):
    data, run = tiny
    f0, f1 = run / "fold0" / "best.pt", run / "fold1" / "best.pt"
    one = predict([run], data)
    assert one.probs.shape == (6, 26) and one.probs.dtype == np.float32 and one.members == [f0, f1]
    two = predict([run, run], data, options=PredictOptions(weights=[2, 1]))
    np.testing.assert_allclose(two.probs, one.probs, atol=1e-6)
    # a run is the mean of its folds: the two folds given as two runs make the same ensemble
    np.testing.assert_allclose(predict([f0, f1], data).probs, one.probs, atol=1e-6)
    logit_one = predict([run], data, options=PredictOptions(average="logit"))
    np.testing.assert_allclose(predict([run, run], data, options=PredictOptions(average="logit")).probs, logit_one.probs, atol=1e-6)
    assert not np.allclose(logit_one.probs, one.probs, atol=1e-9)  # the two averages differ


def test_tta_none_and_identity_views_equal_plain_predict(tiny):
    from dirtymnist.data.cache import open_split
    from dirtymnist.model.checkpoint import load_model

    data, run = tiny
    split = open_split(data, "test")
    model, cfg, _ = load_model(run / "fold0" / "best.pt")
    rows, cpu = np.arange(len(split)), torch.device("cpu")
    plain = predict_rows(model, cfg, split.images, rows, cpu, None, batch_size=8)
    none = predict_rows(model, cfg, split.images, rows, cpu, TTA_PRESETS["none"], batch_size=8)
    rot0 = predict_rows(model, cfg, split.images, rows, cpu, TTA_PRESETS["rot90"][:1], batch_size=8)
    np.testing.assert_array_equal(plain, none)
    np.testing.assert_array_equal(plain, rot0)
    # rot90 TTA = the mean of its four single views
    views = [predict_rows(model, cfg, split.images, rows, cpu, [v], 8) for v in TTA_PRESETS["rot90"]]
    both = predict_rows(model, cfg, split.images, rows, cpu, TTA_PRESETS["rot90"], 8)
    np.testing.assert_allclose(both, np.mean(views, axis=0), atol=1e-5)


def test_predict_cli_writes_submission_probs_and_ensemble_remakes_it(tiny, tmp_path, capsys):
    data, run = tiny
    out = tmp_path / "sub.csv"
    assert cli_main(["predict", str(run), "--data", str(data), "--tta", "flip", "--out", str(out),
                     "--batch-size", "4"]) == 0
    sample = read_label_csv(data / layout.SAMPLE_CSV)
    sub = read_label_csv(out)
    assert np.array_equal(sub.index, sample.index)
    assert out.read_text().splitlines()[0] == ",".join(["index", *layout.LETTERS])
    probs, index = load_probs(tmp_path / "sub.probs.npy")
    assert probs.shape == (6, 26) and probs.dtype == np.float32 and np.array_equal(index, sample.index)
    assert np.array_equal(sub.labels, (probs > 0.5).astype(np.uint8))
    assert "label_acc" in capsys.readouterr().out  # the synthetic test split has labels

    # the same submission again, from the probability file alone
    again = tmp_path / "again.csv"
    assert cli_main(["ensemble", str(tmp_path / "sub.probs.npy"), str(tmp_path / "sub.probs.npy"),
                     "--data", str(data), "--out", str(again)]) == 0
    assert again.read_text() == out.read_text()
    # the submission scores 1.0 against itself
    assert cli_main(["evaluate", str(out), str(out)]) == 0
    assert "label_acc 1.00000" in capsys.readouterr().out


def test_fitted_thresholds_and_count_decoding_in_predict(tiny):
    data, run = tiny
    fitted = predict([run], data, options=PredictOptions(thresholds="fit"))
    assert fitted.thresholds.source == "fit" and fitted.thresholds.values.shape == (26,)
    counted = predict([run], data, options=PredictOptions(thresholds="0.5:count"))
    assert counted.pred.sum(1).min() >= 10 and counted.pred.sum(1).max() <= 14


def test_evaluate_tta_matches_saved_oof(tiny):
    data, run = tiny
    report = evaluate_tta(run, data, presets=["none", "rot90"], batch_size=4)
    assert report.rows == 24
    assert report.oof_max_abs_diff < 1e-5  # "none" re-predicts exactly the saved oof.npy
    assert set(report.presets) == {"none", "rot90"} and report.presets["rot90"]["views"] == 4
    assert all(0 <= r["label_acc"] <= 1 for r in report.presets.values())
    assert "| rot90 | 4 |" in report.format()


def test_missing_checkpoint_is_a_one_line_error(tiny, tmp_path, capsys):
    data, _ = tiny
    missing = tmp_path / "nope" / "best.pt"
    assert cli_main(["predict", str(missing), "--data", str(data), "--out", str(tmp_path / "s.csv")]) == 2
    one_line_error(capsys, str(missing))
    assert cli_main(["predict", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "s.csv")]) == 2
    one_line_error(capsys, str(tmp_path), "fold*/best.pt")
    assert not (tmp_path / "s.csv").exists()


def test_class_list_mismatch_names_the_checkpoint(tiny, tmp_path, capsys):
    data, run = tiny
    state = torch.load(run / "fold0" / "best.pt", weights_only=True)
    state["letters"] = list(reversed(state["letters"]))
    other = tmp_path / "other.pt"
    torch.save(state, other)
    assert cli_main(["predict", str(run), str(other), "--data", str(data), "--out", str(tmp_path / "s.csv")]) == 2
    one_line_error(capsys, str(other), "class list")
    assert not (tmp_path / "s.csv").exists()


def test_corrupt_test_image_and_disagreeing_sample_are_one_line_errors(tiny, tmp_path, capsys):
    _, run = tiny
    ckpt = run / "fold0" / "best.pt"
    data = write_dataset(tmp_path / "data", n_train=3, n_test=3)
    bad = data / layout.TEST_DIR / layout.png_name(50_001)
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "s.csv"
    assert cli_main(["predict", str(ckpt), "--data", str(data), "--out", str(out)]) == 2
    one_line_error(capsys, str(bad))
    # a sample submission row without its test image
    shutil.copy(data / layout.TEST_DIR / layout.png_name(50_000), bad)
    (data / layout.TEST_DIR / layout.png_name(50_002)).unlink()
    assert cli_main(["predict", str(ckpt), "--data", str(data), "--out", str(out)]) == 2
    one_line_error(capsys, "50002.png", layout.SAMPLE_CSV)
    assert not out.exists()


def test_ensemble_refuses_files_of_other_rows(tiny, tmp_path, capsys):
    data, _ = tiny
    good, other = tmp_path / "good.npy", tmp_path / "other.npy"
    save_probs(good, np.full((6, 26), 0.4, np.float32), np.arange(50_000, 50_006))
    save_probs(other, np.full((5, 26), 0.4, np.float32), np.arange(50_000, 50_005))
    out = tmp_path / "s.csv"
    assert cli_main(["ensemble", str(good), str(other), "--data", str(data), "--out", str(out)]) == 2
    one_line_error(capsys, str(other), "50005")
    assert cli_main(["ensemble", str(good), "--data", str(data), "--weights", "1,2", "--out", str(out)]) == 2
    one_line_error(capsys, "--weights")
    assert not out.exists()


def test_an_export_folder_gives_the_chosen_checkpoint_kind_only(tmp_path):
    from dirtymnist.rundir import model_files

    for name in ("fold0.onnx", "fold1.onnx", "fold0_swa.onnx", "fold1_swa.onnx", "fold0_averaged.onnx"):
        (tmp_path / name).write_bytes(b"")
    names = lambda kind: [p.name for p in model_files(tmp_path, "onnx", kind)]  # noqa: E731
    assert names("best") == ["fold0.onnx", "fold1.onnx"]
    assert names("swa") == ["fold0_swa.onnx", "fold1_swa.onnx"]
    assert names("averaged") == ["fold0_averaged.onnx"]


def test_zoomed_views_enlarge_the_input_and_keep_the_quarter_turns():
    from dirtymnist.model.transforms import TTA_PRESETS, ZOOM

    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    views = dict(TTA_PRESETS["rot90_zoom"])
    assert list(views)[:4] == [name for name, _ in TTA_PRESETS["rot90"]]
    side = int(8 * ZOOM)
    for k in range(4):
        zoomed = views[f"zoom_rot{90 * k}"](x)
        assert zoomed.shape == (2, 1, side, side)
        plain = torch.nn.functional.interpolate(torch.rot90(x, k, (2, 3)), size=(side, side), mode="bilinear")
        torch.testing.assert_close(zoomed, plain)
