"""What `dirtymnist run` gives with the preset's schedule and with a time budget, on one data folder.

    PYTHONPATH=src .venv/bin/python bench/lookalike.py folder DATA --fonts FONTS --n-train 50000 --n-test 5000
    PYTHONPATH=src .venv/bin/python bench/job.py DATA --out JOBS [--preset finetune] [--minutes 30,60] \
        [--arms schedule,minutes-30] [--unseen TESTC] [--fold-curve]

Each arm is a real `dirtymnist run DATA --preset P --out JOBS/<arm>` process (resumable: run the
bench again after a kill and each arm goes on where it stopped): `schedule` (the preset's schedule,
every fold) and `minutes-N` (`--minutes N`, the plan decides epochs and folds). Prints a Markdown
table for BENCHMARKS.md: planned against actual minutes, folds, data-stage epochs, the OOF label
accuracy (the TTA choice's sample) and, when DATA has test_answer.csv, the test label accuracy
without / with TTA and with the fitted thresholds. The issue-#49 study: 50,000 images, five folds.
`--unseen TESTC`: the same models on another folder's test split (fonts in no training folder):
no TTA at 0.5, and the job's submission rule (its chosen TTA and OOF thresholds). `--fold-curve`:
for an arm of several folds, the test split with the ensemble of its first 1, 2, ... folds (no
TTA, 0.5), each fold predicted once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dirtymnist.job import JobOptions, run_job


def run_arm(data: Path, preset: str, out: Path, minutes: float | None, overrides: list[str],
            subprocess_run: bool, folds: int | None = None) -> dict:
    """One arm: the job (a child process by default, so each arm starts cold), then its numbers."""
    t0 = time.perf_counter()
    options = JobOptions(minutes=minutes, overrides=tuple(overrides),
                         folds=tuple(range(folds)) if folds else None)
    if subprocess_run:
        cmd = [sys.executable, "-m", "dirtymnist", "run", str(data), "--preset", preset, "--out", str(out)]
        cmd += [*(["--minutes", str(minutes)] if minutes is not None else []), *(f"--set={o}" for o in overrides)]
        cmd += ["--folds", ",".join(map(str, range(folds)))] if folds else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{out}: dirtymnist run failed:\n{proc.stderr[-3000:]}")
    else:
        run_job(data, preset, out, options)
    wall = (time.perf_counter() - t0) / 60
    record = json.loads((out / "job.json").read_text())  # every attempt's finished steps
    summary = run_job(data, preset, out, options)  # every step reused: the numbers
    test = {name: acc for name, acc, _ in summary.scores}
    oof = dict(summary.oof)
    return {
        "planned": (summary.plan or {}).get("budget_s", float("nan")) / 60,
        "actual": sum(s.get("seconds", 0.0) for s in record["steps"].values()) / 60,
        "wall": wall,
        "folds": len(summary.folds), "epochs": summary.epochs, "tta": summary.tta,
        "oof": oof.get("no TTA, threshold 0.5", float("nan")),
        "oof_best": max(oof.values(), default=float("nan")),
        "test_none": test.get("no TTA, threshold 0.5", float("nan")),
        "test_rot90": test.get("rot90 TTA, threshold 0.5", float("nan")),
        "test_sub": summary.scores[-1][1] if summary.scores else float("nan"),
        "run": out / "runs" / Path(preset).stem,
    }


def unseen_scores(run: Path, tta: str, data: Path) -> tuple[float, float]:
    """(no TTA at 0.5, the submission rule: `tta` with RUN/thresholds.json) on DATA's test split."""
    from dirtymnist.infer.predict import PredictOptions, predict

    none = predict([run], data, options=PredictOptions(tta="none", thresholds="0.5")).score.label_acc
    sub = predict([run], data, options=PredictOptions(tta=tta, thresholds=str(run / "thresholds.json")))
    return none, sub.score.label_acc


def fold_curve(run: Path, data: Path) -> list[tuple[int, float]]:
    """Test label accuracy (no TTA, 0.5) of the mean of the first k folds' probabilities, k = 1..n."""
    from dirtymnist.data.dataset import DataPaths, read_label_csv
    from dirtymnist.infer.predict import PredictOptions, predict
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.submission import align_to

    table = read_label_csv(DataPaths.from_root(data).test_answer_csv)
    probs, curve = [], []
    for best in sorted(run.glob("fold*/best.pt")):
        r = predict([best], data, options=PredictOptions(tta="none", thresholds="0.5"))
        probs.append(r.probs)
        labels = align_to(table.index, table.labels, r.index)
        curve.append((len(probs), float(label_accuracy((np.mean(probs, axis=0) > 0.5).astype(np.uint8), labels))))
    return curve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="one job folder per arm is made below it")
    p.add_argument("--preset", default="finetune")
    p.add_argument("--minutes", default="30,60", help="budgets, comma-separated ('' for none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides of every arm (e.g. a tiny model for a smoke test)")
    p.add_argument("--in-process", action="store_true", help="run the arms in this process (for a quick look)")
    p.add_argument("--arms", default="", help="only these arms, in this order (e.g. minutes-60,minutes-30; "
                   "schedule-foldsN: the preset's schedule on the first N folds)")
    p.add_argument("--unseen", type=Path, help="a folder whose test split the arms' models also score")
    p.add_argument("--fold-curve", action="store_true", help="arms of several folds: the score of 1, 2, ... folds")
    args = p.parse_args(argv)
    arms = [("schedule", None)] + [(f"minutes-{m}", float(m)) for m in args.minutes.split(",") if m.strip()]
    if args.arms:
        by_name = dict(arms) | {n: float(n.split("-")[1]) for n in args.arms.split(",") if n.startswith("minutes-")}
        by_name |= {n: None for n in args.arms.split(",") if n.startswith("schedule-folds")}
        arms = [(n, by_name[n]) for n in args.arms.split(",")]
    print("| arm | planned min | actual min | folds | epochs | OOF none | OOF best | test none | test rot90 "
          "| submission (TTA, thresholds) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, minutes in arms:
        folds = int(name.split("-folds")[1]) if name.startswith("schedule-folds") else None
        r = run_arm(args.data, args.preset, args.out / name, minutes, args.overrides, not args.in_process, folds)
        print(f"| {name} | {r['planned']:.1f} | {r['actual']:.1f} | {r['folds']} | {r['epochs']} | {r['oof']:.4f} | "
              f"{r['oof_best']:.4f} | {r['test_none']:.4f} | {r['test_rot90']:.4f} | {r['test_sub']:.4f} ({r['tta']}) |",
              flush=True)
        if args.unseen:
            none, sub = unseen_scores(r["run"], r["tta"], args.unseen)
            print(f"|   {name} on {args.unseen.name}: no TTA {none:.4f}, the submission rule ({r['tta']}, OOF "
                  f"thresholds) {sub:.4f} |", flush=True)
        if args.fold_curve and r["folds"] > 1:
            curve = ", ".join(f"{k} fold{'s' if k > 1 else ''} {acc:.4f}" for k, acc in fold_curve(r["run"], args.data))
            print(f"|   {name}, the first k folds' ensemble (no TTA, 0.5): {curve} |", flush=True)


if __name__ == "__main__":
    main()
