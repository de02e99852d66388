"""CLI parser for hyper-parameter search: `tune`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="Optuna search over a preset on a balanced subset (resumable)",
        description="Optuna search (TPE, median pruning on per-epoch validation label accuracy) "
        "on a label-balanced subset. SQLite storage in OUT/study.db by default: run the same "
        "command again to continue. Several workers (--workers N, or tune commands on other "
        "hosts with the same --storage URL and --study) share one study. Writes OUT/best.yaml "
        "(a preset) and OUT/trials.csv.")
    p.add_argument("data_dir", help="competition-layout data folder")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--trials", type=int, default=20, help="finished (complete or pruned) trials the study should hold, all workers together (default 20)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="stop starting trials after this")
    p.add_argument("--subset", type=int, default=2000, help="balanced subset size (0 = all; default 2000)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--space", help="search space YAML: key: {type: float|int|categorical, low, high, log, choices}")
    p.add_argument("--storage", help="Optuna storage URL shared by every worker, e.g. "
                   "postgresql://user:password@host/db (default sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name in the storage (default: the preset's name)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this host (default 1)")
    p.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                   help="a trial whose worker is silent for twice this is retried (default 60)")
    p.add_argument("--out", default="runs/tune", help="output folder (default runs/tune)")
    p.set_defaults(func=_tune)


def _tune(args) -> int:
    from dirtymnist.search.tune import TuneOptions, format_result, tune

    options = TuneOptions(trials=args.trials, budget_minutes=args.budget_minutes, overrides=args.overrides,
                          space=args.space, subset=args.subset, storage=args.storage, study_name=args.study,
                          workers=args.workers, heartbeat=args.heartbeat)
    result = tune(args.data_dir, args.preset, out=args.out, options=options)
    print(format_result(result))
    return 0
