"""CLI parsers for the last points: `average` (weights of kept epochs) and `blend` (OOF-fitted weights).

    dirtymnist average RUN --last 3 | --best 3
    dirtymnist blend RUN_A RUN_B ... --out blend.json [--per-letter]
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser(
        "average", help="average a run's kept epoch checkpoints into fold*/averaged.pt",
        description="Average the weights of each fold's kept epoch checkpoints (train with "
        "--keep-last N), re-estimate batch-norm statistics on the fold's training images, and "
        "write fold*/averaged.pt (predict/export/package: --checkpoint averaged).")
    p.add_argument("run", metavar="RUN", help="run directory")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--last", type=int, metavar="N", help="the N newest kept epochs")
    g.add_argument("--best", type=int, metavar="K", help="the K kept epochs with the best validation score")
    p.add_argument("--data", metavar="DATA_DIR", help="the run's data folder (default: the one it recorded)")
    p.add_argument("--cache-dir", help="cache folder (default: DATA_DIR/.dirtymnist_cache)")
    p.add_argument("--no-bn", action="store_true", help="keep the averaged batch-norm statistics")
    p.set_defaults(func=_average)

    p = sub.add_parser(
        "blend", help="fit ensemble weights of runs on their out-of-fold probabilities",
        description="Fit per-run (or per-letter) weights for label accuracy on the runs' OOF "
        "files, cross-check them fold by fold (fit on the other folds, score the held-out one) "
        "and write a blend file for predict / ensemble / package --blend.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (two or more)")
    p.add_argument("--out", required=True, help="blend file to write (JSON)")
    p.add_argument("--per-letter", action="store_true", help="one weight per run and letter")
    p.add_argument("--average", default="prob", choices=("prob", "logit"))
    p.add_argument("--data", metavar="DATA_DIR", help="the runs' data folder (default: the first run's)")
    p.set_defaults(func=_blend)


def _average(args) -> int:
    from dirtymnist.train.averaging import average_run

    results = average_run(args.run, last=args.last or 0, best=args.best or 0, data_dir=args.data,
                          cache_dir=args.cache_dir, bn=not args.no_bn)
    print(f"{'fold':>4}  {'best.pt':>8}  {'averaged':>8}  from")
    for r in results:
        print(f"{r.fold:>4}  {r.best_label_acc:>8.4f}  {r.label_acc:>8.4f}  {', '.join(r.sources)}")
    print(f"wrote {', '.join(str(r.path) for r in results)}")
    return 0


def _blend(args) -> int:
    from dirtymnist.infer.blend import blend

    print(blend(args.runs, out=args.out, data_dir=args.data, per_letter=args.per_letter,
                average=args.average).format())
    return 0
