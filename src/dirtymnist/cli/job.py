"""CLI parser for the whole job: `run` (no heavy imports here)."""

from __future__ import annotations

import argparse

from dirtymnist.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the whole job on a data folder: cache .. train every fold .. submission (resumable)",
        description="cache -> folds -> train every fold -> thresholds (out of fold) -> TTA chosen out of "
        "fold -> predict the test split with the fold ensemble -> evaluate (with test_answer.csv) -> "
        "report -> package, into OUT; ends with a summary. Run it again after a kill: it resumes. "
        "--minutes N measures the step rate and plans epochs (then folds) to finish in N minutes.")
    p.add_argument("data_dir", help="competition-layout data folder")
    p.add_argument("--preset", default="finetune", help="preset name or YAML path (default: finetune)")
    p.add_argument("--out", required=True, help="job folder (job.json, runs/, submission.csv, submit/)")
    p.add_argument("--folds", help="comma-separated folds or 'all' (default: all; with --minutes: the plan's)")
    p.add_argument("--minutes", type=float, help="time budget: plan the schedule's length and folds to fit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--tta-rows", type=int, default=2000,
                   help="out-of-fold rows the TTA choice re-predicts at most (default 2000)")
    p.add_argument("--force", action="store_true", help="start again with other arguments than job.json's")
    p.set_defaults(func=_run)


def _folds(text: str | None) -> tuple[int, ...] | str | None:
    if text is None or text == "all":
        return text
    try:
        return tuple(int(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise ConfigError(f"--folds expects e.g. 0,1,2 or 'all', got {text!r}") from None


def _run(args) -> int:
    from dirtymnist.job import JobOptions, run_job

    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes {args.minutes}: must be positive")
    if args.tta_rows < 1:
        raise ConfigError(f"--tta-rows {args.tta_rows}: must be at least 1")
    options = JobOptions(folds=_folds(args.folds), minutes=args.minutes, overrides=tuple(args.overrides),
                         force=args.force, tta_rows=args.tta_rows)
    print(run_job(args.data_dir, args.preset, args.out, options).format())
    return 0
