"""`dirtymnist run`: the whole job on tiny data, its reuse on a rerun, kill/resume of a real process,
the time-budget plan (a pure function, then end to end), and its one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dirtymnist import layout
from dirtymnist.cli import main as cli_main
from dirtymnist.infer.evaluate import evaluate_submission
from dirtymnist.job import JobOptions, run_job
from dirtymnist.job.plan import (
    DISTINCT_VIEWS,
    EPOCH_CAP,
    MIN_FRACTION,
    MIN_TTA_ROWS,
    Costs,
    affordable_tta,
    data_budget,
    epochs_that_fit,
    plan_budget,
)
from dirtymnist.model.checkpoint import load_checkpoint

TINY = ("model=test_resnet", "image_size=32", "batch_size=8", "epochs=2", "stages=[]", "ema=0.9",
        "checkpoint_minutes=0.000001")


def _options(**kw) -> JobOptions:
    return JobOptions(**{"folds": (0,), "overrides": TINY, "tta_rows": 6, "batch_size": 8, **kw})


def _mtimes(*paths):
    return {p: p.stat().st_mtime_ns for p in paths}


def test_run_job_end_to_end_then_a_rerun_reuses_everything(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=40, n_test=6)
    out = tmp_path / "job"
    first = run_job(data, "cpu", out, _options())
    names = [name for name, _, _ in first.steps]
    assert names[:2] == ["cache", "folds"] and names[-2:] == ["report", "package"]
    assert any(n.startswith("train (cpu, fold 0)") for n in names) and "evaluate" in names
    run = out / "runs" / "cpu"
    for path in (out / "job.json", out / "submission.csv", out / "submit" / "main.py", run / "thresholds.json",
                 run / "report" / "report.html", out / "predictions" / "none.csv", out / "predictions" / "rot90.csv"):
        assert path.is_file(), path

    # the summary's last test row is the written submission, scored by `evaluate`
    scored = evaluate_submission(out / "submission.csv", data / layout.TEST_ANSWER_CSV)
    name, acc, exact = first.scores[-1]
    assert (acc, exact) == (scored.label_acc, scored.exact_match) and first.tta in name
    assert first.oof_rows == 6 and {n for n, _ in first.oof} >= {"no TTA, threshold 0.5", "rot90 TTA, OOF thresholds"}
    table = first.format()
    assert "== dirtymnist run ==" in table and "| inference | OOF label accuracy |" in table
    assert all(f"| {n} | {a:.4f} | {e:.4f} |" in table for n, a, e in first.scores)
    record = json.loads((out / "job.json").read_text())
    assert record["args"]["preset"] == "cpu" and all(s["done"] for s in record["steps"].values())

    # the same call again: nothing trained, predicted or packaged again, the same scores
    kept = [run / "fold0" / "best.pt", run / "fold0" / "last.pt", out / "predictions" / "rot90.probs.npy",
            out / "submit" / "main.py", run / "report" / "report.html"]
    before = _mtimes(*kept)
    second = run_job(data, "cpu", out, _options())
    assert _mtimes(*kept) == before
    assert second.scores == first.scores and second.oof == first.oof and second.tta == first.tta
    assert (out / "submission.csv").read_bytes() == (out / "submission.csv").read_bytes()


def test_other_arguments_are_refused_in_one_line_and_bad_inputs_too(tmp_path, make_dataset, capsys):
    data = make_dataset(tmp_path / "data", n_train=24, n_test=2)
    out = tmp_path / "job"
    (out).mkdir()
    (out / "job.json").write_text(json.dumps({"args": {"data": str(data.absolute()), "preset": "cpu",
                                                       "overrides": [], "folds": None, "minutes": 30.0,
                                                       "run": "cpu"}, "plan": None, "steps": {}}))
    assert cli_main(["run", str(data), "--preset", "cpu", "--out", str(out), "--minutes", "60"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "differs in minutes" in err and "--force" in err

    assert cli_main(["run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err and not (tmp_path / "o1").exists()

    (data / layout.TRAIN_CSV).write_text("index,letters\n0,abc\n")
    assert cli_main(["run", str(data), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and layout.TRAIN_CSV in err and "Traceback" not in err and not (tmp_path / "o2").exists()


# --------------------------------------------------------------------------- the plan
VIEW_S = {v: 0.005 * (2 if v.startswith("zoom") else 1) for v in DISTINCT_VIEWS["rot90_zoom"]}
COSTS = Costs(step_s=0.5, data_steps=100, other_steps=0, val_rows=2000, view_s=0.005, test_rows=5000,
              test_row_s=0.025, tta_rows=2000, tta_row_s=0.06, fixed_s=30, views=VIEW_S)  # an epoch: 50 + 10 s


def test_plan_gives_one_fold_the_epochs_that_fit():
    plan = plan_budget(15 * 60, 20, COSTS, folds_k=5)
    assert plan.folds == [0] and plan.fits
    # 900 - 20 spent - 45 margin - 30 fixed - 90 TTA choice (1,500 rows) - 125 test predict = 590 s: 9.8 epochs of
    # 60 s (50 s training, 10 s validation), so 10 epochs of 98 % of the rows: 10 x (49 + 10) = 590 s
    assert (plan.epochs, plan.epoch_fraction) == (10, 0.98)
    assert "10 data-stage epoch(s) of 98% of the rows" in plan.format()
    assert sum(plan.seconds.values()) <= 15 * 60


def test_plan_adds_folds_only_when_the_epoch_cap_is_reached():
    plan = plan_budget(60 * 60, 20, COSTS, folds_k=5)
    # 3600 - 20 - 180 margin - 30 - 120 = 3250 s; a fold of 12 epochs and its test predict: 720 + 125 s
    assert plan.epochs == EPOCH_CAP and plan.folds == [0, 1, 2] and plan.fits
    assert plan_budget(600 * 60, 20, COSTS, folds_k=5).folds == [0, 1, 2, 3, 4]  # never past folds_k


def test_the_plans_view_tables_match_the_tta_presets():
    from dirtymnist.infer.predict import _SAME_VIEW
    from dirtymnist.job.plan import VIEWS
    from dirtymnist.model.transforms import TTA_PRESETS

    assert set(VIEWS) == set(DISTINCT_VIEWS) == set(TTA_PRESETS)
    for name, views in TTA_PRESETS.items():
        assert VIEWS[name] == len(views) and DISTINCT_VIEWS[name] == {_SAME_VIEW.get(v, v) for v, _ in views}, name


def test_the_data_budget_reprices_the_inference_reserve_at_the_view_rate_seen():
    plan = plan_budget(15 * 60, 20, COSTS, folds_k=5)
    assert plan.data_seconds == pytest.approx(590)  # 10 x (49 + 10) s, as planned
    assert data_budget(plan, COSTS.view_s) == pytest.approx(590)  # validation ran at the measured rate
    # views at half the measured cost: half of the TTA choice's 90 s and the test split's 125 s is the data stage's
    assert data_budget(plan, COSTS.view_s / 2) == pytest.approx(590 + 107.5)
    assert data_budget(plan, COSTS.view_s * 2) == pytest.approx(590 - 215)  # dearer views: fewer batches
    two = plan_budget(30 * 60, 20, COSTS, folds_k=5, folds=[0, 1])
    assert data_budget(two, COSTS.view_s / 2) - two.data_seconds == pytest.approx(
        (two.seconds["choose TTA (OOF sample)"] + two.seconds["predict (test split)"]) / 4)  # shared by 2 folds


def test_the_progress_bar_follows_a_refit():
    from dirtymnist.job.progress import JobProgress

    bar = JobProgress()
    bar.plan_training([0, 1], [5, 3, 3])  # a 5-step stage, then 2 data epochs of 3
    bar.on_epoch(0, 0, {})
    bar.on_epoch(0, 1, {"next_steps": 6})  # the epoch after it, in fold 0 and in fold 1, now 6
    assert bar.bar.total == 14 + 14 and bar.fold_start[1] == 14  # [5, 3, 6] each
    assert (bar._at(0, 2), bar._at(0, 3), bar._at(1, 3)) == (8, 14, 28)  # where each epoch's end puts the bar
    bar.close()


def test_epochs_round_up_and_each_draws_the_share_of_rows_that_fits():
    assert epochs_that_fit(3.8 * 60, COSTS, EPOCH_CAP) == (4, 0.94)  # 4 x (47 + 10) = 228 s
    assert epochs_that_fit(3 * 60, COSTS, EPOCH_CAP) == (3, 1.0)  # whole epochs: every row
    assert epochs_that_fit(35, COSTS, EPOCH_CAP) == (1, 0.5)  # under one epoch: part of one
    assert epochs_that_fit(1, COSTS, EPOCH_CAP) == (1, MIN_FRACTION)  # too small: the least, and plan says so
    assert epochs_that_fit(100 * 60, COSTS, EPOCH_CAP) == (EPOCH_CAP, 1.0)


def test_an_epoch_fraction_shortens_each_data_epoch(tmp_path):
    from dirtymnist.config import load_config
    from dirtymnist.errors import ConfigError
    from dirtymnist.train.schedule import build_plan

    assert [e.steps for e in build_plan(load_config("cpu", ["stages=[]", "epochs=2", "epoch_fraction=0.25"]), 10)] == [2, 2]
    assert [e.steps for e in build_plan(load_config("cpu", ["stages=[]", "epochs=1", "epoch_fraction=0.01"]), 10)] == [1]
    with pytest.raises(ConfigError, match="epoch_fraction must be in"):
        load_config("cpu", ["epoch_fraction=0"])


def test_the_step_rate_leaves_the_warm_up_steps_out():
    from dirtymnist.job.measure import step_rate

    seen = [3.0, 3.6] + [3.6 + 0.4 * k for k in range(1, 15)]  # build + first batch, then 0.4 s a step
    assert step_rate(seen) == pytest.approx(0.4)
    assert step_rate([0.5, 1.0]) == pytest.approx(0.5)  # a folder of two steps: what there is


def test_the_tta_sample_is_a_bounded_share_of_the_budget():
    assert plan_budget(15 * 60, 20, COSTS, folds_k=5).tta_rows == 1500  # 10 % of 900 s at 0.06 s a row
    assert plan_budget(60 * 60, 20, COSTS, folds_k=5).tta_rows == 2000  # --tta-rows caps it
    assert plan_budget(60, 20, COSTS, folds_k=5).tta_rows == MIN_TTA_ROWS  # never a useless sample


def test_a_costlier_tta_is_a_candidate_only_when_the_minutes_left_pay_for_it():
    plan = plan_budget(15 * 60, 20, COSTS, folds_k=5)
    presets, base = ("none", "rot90", "rot90_zoom"), ["none", "rot90"]
    # base: 30 + 5000 x 0.025 = 155 s; choice 1,500 rows x 0.06 = 90 s; rot90_zoom's test views 5000 x 0.06 = 300 s
    assert affordable_tta(presets, base, 1.1 * 545 + 1, plan, models=1, test_rows=5000) == list(presets)
    assert affordable_tta(presets, base, 1.1 * 545 - 1, plan, models=1, test_rows=5000) == base
    assert affordable_tta(presets, base, 0, plan, models=1, test_rows=5000) == base  # the base is always kept
    assert affordable_tta(presets, base, 1.1 * 545 + 1, plan, models=2, test_rows=5000) == base  # two models


def test_plan_with_given_folds_chooses_epochs_and_a_tiny_budget_still_plans_one():
    plan = plan_budget(30 * 60, 20, COSTS, folds_k=5, folds=[0, 1, 2])
    assert plan.folds == [0, 1, 2] and 1 <= plan.epochs < EPOCH_CAP
    small = plan_budget(60, 20, COSTS, folds_k=5)
    assert (small.epochs, small.folds, small.fits) == (1, [0], False)
    assert "too small" in small.format()


def test_minutes_end_to_end_plans_once_and_shows_planned_against_actual(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=40, n_test=6)
    out = tmp_path / "job"
    options = _options(folds=None, minutes=1.0)
    summary = run_job(data, "cpu", out, options)
    plan = json.loads((out / "job.json").read_text())["plan"]
    assert plan["budget_s"] == 60 and 1 <= plan["epochs"] <= EPOCH_CAP and plan["folds"][0] == 0
    assert plan["costs"]["step_s"] > 0 and plan["costs"]["view_s"] > 0
    assert not (out / ".measure").exists()
    ckpt = load_checkpoint(out / "runs" / "cpu" / "fold0" / "last.pt")
    assert ckpt["config"]["epochs"] == plan["epochs"] == ckpt["epoch"]  # the schedule is the plan's
    assert ckpt["config"]["epoch_fraction"] == plan["epoch_fraction"]
    table = summary.format()
    assert "| part | planned minutes | actual minutes |" in table and "| train |" in table
    assert summary.actual["train"] > 0
    # a restart keeps the first plan (no second measurement)
    again = run_job(data, "cpu", out, options)
    assert json.loads((out / "job.json").read_text())["plan"] == plan and again.plan == plan


# --------------------------------------------------------------------------- kill / resume
def _run_cmd(data, out):
    cmd = [sys.executable, "-m", "dirtymnist", "run", str(data), "--preset", "cpu", "--out", str(out),
           "--folds", "0", "--tta-rows", "6"]
    for item in TINY:
        cmd += ["--set", item]
    return cmd


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRTYMNIST_KILL")}
    env.update({"OMP_NUM_THREADS": "1", **extra})
    return env


# the 16th atomic write of the train step: mid epoch 2 (last.pt at epoch 1, step 3 of 4); the 2nd of
# the predict step: the first prediction set's probabilities (its manifest still says incomplete)
KILLS = ("train:16", "predict:2")


def test_a_killed_run_resumes_and_ends_with_the_same_submission(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=40, n_test=6)
    ref, out = tmp_path / "ref", tmp_path / "job"
    done = subprocess.run(_run_cmd(data, ref), env=_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    fold = out / "runs" / "cpu" / "fold0"
    for spec in KILLS:
        proc = subprocess.run(_run_cmd(data, out), env=_env(DIRTYMNIST_KILL_IN_STEP=spec), capture_output=True)
        assert proc.returncode == -9, (spec, proc.stderr.decode()[-2000:])
        if spec.startswith("train"):  # killed inside epoch 2: epoch 1 is kept (at most the current epoch lost)
            ckpt = load_checkpoint(fold / "last.pt")
            rows = (fold / "metrics.jsonl").read_text().splitlines()
            assert ckpt["epoch"] == len(rows) == 1 and ckpt["step"] > 0, (ckpt["epoch"], ckpt["step"])
    done = subprocess.run(_run_cmd(data, out), env=_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "dirtymnist run" in done.stdout.decode()
    assert [json.loads(r)["epoch"] for r in (fold / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "submission.csv").read_bytes() == (ref / "submission.csv").read_bytes()
    np.testing.assert_array_equal(np.load(out / "submission.probs.npy"), np.load(ref / "submission.probs.npy"))
    assert not list(out.rglob(".*.tmp"))
