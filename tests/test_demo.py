"""The main job end to end on tiny synthetic data (the real `make demo` uses bigger sizes).

The run starts from the `cpu` preset's ready weights (`pretrained=ready`, package data) with one
gentle epoch, so that in seconds it learns enough to beat predicting no letter at all.
"""

from __future__ import annotations

from pathlib import Path

from dirtymnist import layout
from dirtymnist.data.dataset import read_label_csv
from dirtymnist.demo import run_demo
from dirtymnist.infer.evaluate import evaluate_submission

TINY = ["epochs=1", "batch_size=8", "stages=[{name: data, source: data, lr: 0.0003}]"]
SIZES = {"n_train": 60, "n_test": 12}


def _demo(out: Path):
    return run_demo(out, **SIZES, overrides=TINY)  # the cpu preset: its ready weights


def test_demo_beats_the_all_zeros_baseline_its_files_agree_and_it_repeats(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    names = [name for name, _, _ in first.steps]
    assert names[0] == "synth" and names[-1] == "package" and "report" in names
    run = out / "runs" / "cpu"
    for path in (out / "submission.csv", out / "submit" / "main.py", run / "thresholds.json"):
        assert path.is_file(), path
    assert "pretrained_record: ready weights dm_fcn_deep.safetensors (sha256 " in (run / "config.yaml").read_text()

    # the submission, scored from the files alone, beats predicting no letter on the same answers
    answers = out / "data" / layout.TEST_ANSWER_CSV
    all_zeros = 1.0 - read_label_csv(answers).labels.mean()
    scored = evaluate_submission(out / "submission.csv", answers)
    assert scored.label_acc > all_zeros + 0.03, (scored.label_acc, all_zeros)

    # the summary is that submission: its last row, and the row of the TTA it chose
    assert len(first.scores) == 5
    name, acc, exact = first.scores[-1]
    assert (acc, exact) == (scored.label_acc, scored.exact_match) and first.tta in name
    assert first.tta in ("none", "rot90", "rot90_zoom")
    chosen = {"none": "no TTA, OOF thresholds", "rot90": "rot90 TTA, OOF thresholds"}.get(first.tta)
    assert chosen is None or dict((n, (a, e)) for n, a, e in first.scores)[chosen] == (acc, exact)
    table = first.format()
    assert all(f"| {n} | {a:.4f} | {e:.4f} |" in table for n, a, e in first.scores)

    # the report shows the run's validation score (fold 0 at threshold 0.5)
    report = (run / "report" / "report.html").read_text()
    assert first.val_label_acc is not None and f"{first.val_label_acc:.4f}" in report

    # a second run reuses the data and the finished fold (nothing rewritten) and scores the same
    kept = [run / "fold0" / "best.pt", out / "data" / layout.TRAIN_CSV, out / "data" / layout.TRAIN_DIR / layout.png_name(0)]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept}
    second = _demo(out)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == before
    assert second.scores == first.scores and second.tta == first.tta

    # the same seed in a fresh folder: the same submission, byte for byte
    again = _demo(tmp_path / "again")
    assert (tmp_path / "again" / "submission.csv").read_bytes() == (out / "submission.csv").read_bytes()
    assert again.scores == first.scores
