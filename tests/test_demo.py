"""The main job end to end on tiny synthetic data (the real `make demo` uses bigger sizes)."""

from __future__ import annotations

from dirtymnist.demo import run_demo

TINY = ["model=test_resnet", "image_size=64", "epochs=1", "batch_size=8", "stages=[]"]


def test_demo_runs_end_to_end_and_reuses_its_outputs(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, n_train=60, n_test=12, overrides=TINY)
    names = [name for name, _, _ in first.steps]
    assert names[0] == "synth" and names[-1] == "package" and "report" in names
    assert len(first.scores) == 5 and all(0 <= acc <= 1 for _, acc, _ in first.scores)
    for path in ("submission.csv", "runs/cpu/thresholds.json", "runs/cpu/report/report.html",
                 "submit/main.py", "data/test_answer.csv"):
        assert (out / path).is_file(), path
    assert "| total |" in first.format() and "label accuracy" in first.format()
    # a second run reuses data and the finished fold, and scores the same
    second = run_demo(out, n_train=60, n_test=12, overrides=TINY)
    assert second.scores == first.scores
    train_time = dict((n, t) for n, t, _ in second.steps)["train (cpu, fold 0)"]
    assert train_time < dict((n, t) for n, t, _ in first.steps)["train (cpu, fold 0)"]
