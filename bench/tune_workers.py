"""Trials per hour of `dirtymnist tune` with 1 and 2 worker processes on this machine, same trials.

    .venv/bin/python bench/tune_workers.py [--trials 6] [--order 1,2] [--out /tmp/bench-tune-workers]

Makes a small synthetic data folder and its cache once, then runs the same search twice, each
in a fresh study (SQLite, one host): `workers=1` (torch on every core) and `workers=2` (the
cores split between two processes). A trial is the `cpu` net on the data folder only (no
dense stages), 2 epochs at 64 px; the space holds only lr. The median pruner may stop some trials
early, so epochs per hour (the work actually done) is reported beside trials per hour.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

SPACE = "lr: {type: float, low: 0.001, high: 0.01, log: true}\n"
TRIAL = ["model=dm_fcn", "stages=[]", "epochs=2", "image_size=64", "batch_size=32", "folds_k=5"]


def run(data: Path, out: Path, workers: int, trials: int) -> dict:
    from dirtymnist.rundir import RunDir
    from dirtymnist.search.tune import TuneOptions, tune

    space = out / "space.yaml"
    out.mkdir(parents=True, exist_ok=True)
    space.write_text(SPACE)
    t0 = time.perf_counter()
    r = tune(data, "cpu", out=out, options=TuneOptions(trials=trials, budget_minutes=30, overrides=TRIAL, space=space,
                                                     subset=0, workers=workers))
    seconds = time.perf_counter() - t0
    epochs = sum(len(RunDir(p).fold(0).read_metrics()) for p in out.glob("cpu/trial-*"))
    return {"workers": workers, "seconds": round(seconds, 1), "complete": r.n_complete,
            "pruned": r.n_pruned, "epochs": epochs,
            "trials_per_hour": round(3600 * (r.n_complete + r.n_pruned) / seconds, 1),
            "epochs_per_hour": round(3600 * epochs / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--train", type=int, default=400, help="training images generated")
    ap.add_argument("--out", default="/tmp/bench-tune-workers")
    ap.add_argument("--order", default="1,2", help="worker counts in run order, e.g. 2,1 (load drifts)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from dirtymnist.data.cache import build_cache
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.data.synth import write_dataset

    out = Path(args.out)
    data = out / "data"
    if not (data / "dirty_mnist_2nd_answer.csv").is_file():
        write_dataset(data, n_train=args.train, n_test=8, seed=0, progress=False)
    build_cache(DataPaths.from_root(data))
    rows = {w: run(data, out / f"w{w}-{time.strftime('%H%M%S')}", w, args.trials)
            for w in map(int, args.order.split(","))}
    for row in rows.values():
        print(json.dumps(row))
    print(f"ratio 2 workers / 1 worker: trials/hour {rows[2]['trials_per_hour'] / rows[1]['trials_per_hour']:.2f}x, "
          f"epochs/hour {rows[2]['epochs_per_hour'] / rows[1]['epochs_per_hour']:.2f}x")


if __name__ == "__main__":
    main()
