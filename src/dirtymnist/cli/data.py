"""CLI parsers for the data commands (no heavy imports here).

    dirtymnist cache DATA_DIR [--cache-dir DIR] [--workers W] [--force]
    dirtymnist folds DATA_DIR --k 5 --seed 42 [--subset N] [--method stratified|kfold]
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser("cache", help="decode all PNGs once into a memory-mapped uint8 cache",
                       description="Decode every train and test PNG into a grayscale memory-"
                       "mapped .npy cache (reused while the sources are unchanged).")
    _add_data_args(p)
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where the cache goes (default DATA_DIR/.dirtymnist_cache)")
    p.add_argument("--workers", type=int, metavar="W",
                   help="decoding processes (default: all CPUs; 1 = no pool)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--verify", action="store_true",
                   help="also hash every PNG's contents (slower; certain even when sizes and times match)")
    p.set_defaults(func=_cache)

    p = sub.add_parser("folds", help="multilabel-stratified K-fold split as an index,fold CSV",
                       description="Split the training set (or a label-balanced subset) into "
                       "K folds; writes DATA_DIR/folds_k{K}_seed{SEED}[...].csv and prints "
                       "how far each fold's letter frequencies are from the whole set's.")
    _add_data_args(p, test=False)
    p.add_argument("--k", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--subset", type=int, metavar="N",
                   help="first pick a label-balanced subset of N images")
    p.add_argument("--method", choices=("stratified", "kfold"), default="stratified",
                   help="stratified (default) or plain shuffled KFold")
    p.add_argument("--out", metavar="PATH", help="output CSV (default in DATA_DIR)")
    p.set_defaults(func=_folds)


def _add_data_args(p: argparse.ArgumentParser, test: bool = True) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="competition-layout data folder")
    p.add_argument("--train-dir", help="training images folder (default dirty_mnist_2nd)")
    p.add_argument("--train-csv", help="training labels (default dirty_mnist_2nd_answer.csv)")
    if test:
        p.add_argument("--test-dir", help="test images folder (default test_dirty_mnist_2nd)")
        p.add_argument("--sample-csv", help="sample submission (default sample_submission.csv)")


def _paths(args: argparse.Namespace):
    from dirtymnist.data.dataset import DataPaths

    return DataPaths.from_root(args.data_dir, train_dir=args.train_dir, train_csv=args.train_csv,
                               test_dir=getattr(args, "test_dir", None),
                               sample_csv=getattr(args, "sample_csv", None))


def _cache(args: argparse.Namespace) -> int:
    from dirtymnist.data.cache import build_cache, open_split, present_splits
    from dirtymnist.data.dataset import save_layout

    paths = _paths(args)
    splits = present_splits(paths)  # a folder may hold only one split
    cache_dir = build_cache(paths, cache_dir=args.cache_dir, workers=args.workers,
                            force=args.force, splits=splits, verify=args.verify)
    remembered = save_layout(paths)
    if remembered:
        print(f"folder names remembered in {remembered} (later commands need only DATA_DIR)")
    parts = []
    for split in splits:
        s = open_split(cache_dir, split)
        parts.append(f"{split} {len(s)} images" + ("" if s.labels is not None else " (no labels)"))
    print(f"cache: {cache_dir} ({', '.join(parts)})")
    return 0


def _folds(args: argparse.Namespace) -> int:
    from dirtymnist.data.folds import make_folds

    path, report = make_folds(_paths(args), k=args.k, seed=args.seed, subset=args.subset,
                              method=args.method, out=args.out)
    print(report.table())
    print(f"folds: {path}")
    return 0
