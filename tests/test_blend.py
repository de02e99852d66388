"""Blend weights fitted out of fold: they reproduce the OOF score they report, the fold-wise
cross-check is scored on held-out folds, and predict / ensemble / package take the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.errors import ConfigError
from dirtymnist.infer.blend import blend, fit_weights, simplex_grid
from dirtymnist.infer.ensemble import combine
from dirtymnist.infer.predict import PredictOptions, ensemble, predict
from dirtymnist.infer.thresholds import load_oof, oof_targets
from dirtymnist.metrics import label_accuracy
from dirtymnist.submission import align_to, load_probs


def _fake_run(root, data, index, fold_of, probs) -> None:
    """A run folder with only what blend reads: config.yaml, run.json, fold*/oof files."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("model: x\n")
    (root / "run.json").write_text(json.dumps({"data_dir": str(data)}))
    for k in np.unique(fold_of):
        d = root / f"fold{k}"
        d.mkdir()
        np.save(d / "oof.npy", probs[fold_of == k].astype(np.float32))
        np.save(d / "oof_index.npy", index[fold_of == k].astype(np.int64))


@pytest.fixture
def two_runs(tmp_path):
    """Two runs of noisy OOF probabilities: run a good on letters a-m, run b on n-z."""
    data = write_dataset(tmp_path / "data", n_train=60, n_test=2, seed=1)
    index = np.arange(60)
    y = oof_targets(data, index).astype(np.float64)
    rng = np.random.default_rng(0)
    good, bad = y * 0.5 + 0.25 + rng.normal(0, 0.2, y.shape), rng.uniform(0, 1, y.shape)
    first = np.arange(26) < 13
    pa = np.where(first, good, bad).clip(0.01, 0.99)
    pb = np.where(first, bad, y * 0.3 + 0.35 + rng.normal(0, 0.2, y.shape)).clip(0.01, 0.99)
    fold_of = index % 3
    _fake_run(tmp_path / "a", data, index, fold_of, pa)
    _fake_run(tmp_path / "b", data, index, fold_of, pb)
    return data, tmp_path / "a", tmp_path / "b"


def _reproduce(report, runs, data) -> float:
    loaded = [load_oof(r) for r in runs]
    common = np.sort(loaded[0][1])
    probs = [align_to(i, p, common) for p, i in loaded]
    return label_accuracy(combine(probs, report.weights, report.average) > 0.5, oof_targets(data, common))


@pytest.mark.parametrize("per_letter", [False, True])
def test_blend_weights_reproduce_the_oof_score_they_report(two_runs, tmp_path, per_letter):
    data, a, b = two_runs
    out = tmp_path / "blend.json"
    report = blend([a, b], out=out, per_letter=per_letter)
    assert report.rows == 60 and len(report.folds) == 3
    assert _reproduce(report, [a, b], data) == report.fitted
    assert report.fitted >= report.equal  # equal weights are on the grid
    saved = json.loads(out.read_text())
    assert saved["weights"] == report.weights and saved["fitted"] == report.fitted
    w = np.asarray(report.weights)
    assert np.allclose(w.sum(0), 1) and (w >= 0).all()
    if per_letter:  # each run is the better one on its own half of the letters
        assert (w[0, :13].mean() > w[1, :13].mean()) and (w[1, 13:].mean() > w[0, 13:].mean())
    # the cross-check scores each fold with weights fitted on the other two
    for row in report.folds:
        assert 0 <= row["fitted"] <= 1 and row["rows"] == 20
    assert report.crosscheck_fitted == pytest.approx(np.mean([r["fitted"] for r in report.folds]))


def test_fit_is_per_letter_separable_and_prefers_equal_weights_on_ties():
    grid = simplex_grid(2)
    assert np.allclose(grid[0], [0.5, 0.5]) and np.allclose(grid.sum(1), 1)
    y = np.zeros((4, 26), np.uint8)
    same = np.full((4, 26), 0.2)
    assert np.allclose(fit_weights([same, same], y), [0.5, 0.5])  # every point ties
    assert len(simplex_grid(3)) == 67 and np.allclose(simplex_grid(3)[0], 1 / 3)


def test_blend_file_drives_predict_ensemble_and_package(tmp_path, monkeypatch):
    from test_predict import build_tiny_run

    data, run = build_tiny_run(tmp_path / "t")
    blend_file = tmp_path / "blend.json"
    weights = [0.25, 0.75]
    blend_file.write_text(json.dumps({"runs": [str(run), str(run)], "weights": weights, "average": "logit"}))
    got = predict([run, run], data, out=tmp_path / "b.csv", options=PredictOptions(blend=blend_file))
    want = predict([run, run], data, options=PredictOptions(weights=weights, average="logit"))
    assert np.allclose(got.probs, want.probs, atol=1e-6)
    probs, _ = load_probs(tmp_path / "b.probs.npy")
    ens = ensemble([tmp_path / "b.probs.npy"] * 2, data, blend=blend_file)
    assert np.allclose(ens.probs, probs, atol=1e-5)
    with pytest.raises(ConfigError, match="not both"):
        predict([run, run], data, options=PredictOptions(blend=blend_file, weights=[1, 1]))
    with pytest.raises(ConfigError, match="fitted for 2 runs"):
        predict([run], data, options=PredictOptions(blend=blend_file))
    assert cli_main(["package", str(run), str(run), "--blend", str(blend_file), "--tta", "none", "--out",
                     str(tmp_path / "sub")]) == 0
    settings = json.loads((tmp_path / "sub" / "input" / "settings.json").read_text())
    assert settings["weights"] == weights and settings["average"] == "logit"
    # the packaged entry script applies the weights: its submission equals predict's
    from dirtymnist.deliver.package import run_submission

    monkeypatch.chdir(tmp_path)  # run_submission moves into the folder, as main.py does; undone after the test
    assert run_submission(tmp_path / "sub", ["--data", str(data.absolute())]) == 0
    packaged = (tmp_path / "sub" / "output" / "submission.csv").read_text()
    assert packaged == (tmp_path / "b.csv").read_text()


def test_blend_cli_prints_the_crosscheck(two_runs, tmp_path, capsys):
    data, a, b = two_runs
    assert cli_main(["blend", str(a), str(b), "--out", str(tmp_path / "w.json"), "--per-letter"]) == 0
    out = capsys.readouterr().out
    assert "fold-wise cross-check (3 folds)" in out and "wrote" in out
    assert cli_main(["blend", str(a), "--out", str(tmp_path / "x.json")]) == 2
