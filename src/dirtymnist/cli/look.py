"""CLI parsers for the look commands: `report` (one run as HTML) and `runs` (compare runs).

No heavy imports here: matplotlib loads only inside the `report` handler.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser(
        "report",
        help="HTML report of a run: curves, per-letter scores, confusions, worst images",
        description="Write RUN/report/report.html (self-contained, images embedded) and its PNGs, "
        "and print a per-fold summary. Thresholds come from RUN/thresholds.json when present.",
    )
    p.add_argument("run_dir", help="run folder (holds config.yaml and fold*/)")
    p.add_argument("--data", help="the run's data folder (or its cache folder); needed unless the "
                   "run recorded it")
    p.add_argument("--out", help="HTML file to write (default: RUN/report/report.html); "
                   "the PNGs go beside it")
    p.add_argument("--gallery", type=int, default=24, help="worst validation images shown (default 24)")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "runs",
        help="table of every run under a folder, with the config keys that differ",
        description="One row per run: name, preset, the config keys that differ between runs, "
        "folds, best label accuracy (mean +- std over folds), epochs, time, samples/s.",
    )
    p.add_argument("root", nargs="?", default="runs", help="folder holding runs (default: runs)")
    p.add_argument("--sort", default="label_acc", metavar="COLUMN",
                   help="column to sort by (scores high-to-low, others low-to-high; "
                   "--sort=-COLUMN reverses); default label_acc")
    p.add_argument("--format", default="table", choices=("table", "csv", "markdown"))
    p.set_defaults(func=_runs)


def _report(args) -> int:
    from dirtymnist.look.report import build_report
    from dirtymnist.look.runs import format_table

    rep = build_report(args.run_dir, data_dir=args.data, out=args.out, gallery=args.gallery)
    print(format_table(rep.fold_rows), end="")
    o = rep.oof
    print(f"OOF label_acc {o['label_acc']:.4f} at {o['thresholds']} ({o['images']} images, "
          f"exact {o['exact_match']:.3f}); best global threshold {o['best_threshold']:.2f} -> "
          f"{o['best_threshold_acc']:.4f}")
    for row in rep.averaged:  # swa.pt / averaged.pt: their own validation scores
        print(f"{row['checkpoint']}: label_acc {row.get('label_acc', float('nan')):.4f} ({row['kind']})")
    print(f"report: {rep.html}")
    return 0


def _runs(args) -> int:
    from dirtymnist.look.runs import format_table, list_runs

    print(format_table(list_runs(args.root, sort=args.sort), args.format), end="")
    return 0
