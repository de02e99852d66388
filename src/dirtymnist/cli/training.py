"""CLI parsers for training: `train`, `pretrain` (and, later, `tune`)."""

from __future__ import annotations

import argparse

from dirtymnist.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train k folds of a preset (resumes automatically)",
        description="Train a preset on DATA_DIR. Running the same command again resumes from "
        "each fold's last.pt. Use `torchrun --nproc_per_node=N -m dirtymnist train ...` for DDP.",
    )
    p.add_argument("data_dir", help="competition-layout data folder")
    p.add_argument("--preset", default="cpu", help="preset name in configs/ or a YAML path (default: cpu)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fold", type=int, help="train one fold")
    g.add_argument("--folds", help="comma-separated folds, e.g. 0,1,2,3,4, or 'all'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set epochs=2 --set subset=400")
    p.add_argument("--run-dir", help="run directory (default: runs/<preset>)")
    p.add_argument("--cache-dir", help="cache folder (default: DATA_DIR/.dirtymnist_cache)")
    p.add_argument("--keep-last", type=int, help="keep the K newest epoch checkpoints besides last.pt/best.pt")
    p.add_argument("--pseudo", metavar="PROBS.npy", help="add confidently predicted test images (a "
                   "`predict` probability file of the test split) to the training rows (pseudo.py)")
    p.add_argument("--force", action="store_true", help="resume even if the config changed")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone on unlimited generated letters (weights for --set pretrained=)",
        description="Train a preset's model on generated scenes with letter positions (dense "
        "targets) and write its weights (safetensors) to OUT, for `train --set pretrained=OUT`.",
    )
    p.add_argument("out", help="weights file to write (.safetensors)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, help="training time budget (default 10)")
    g.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--model", help="timm model name (default: the preset's)")
    p.add_argument("--preset", default="scratch", help="preset whose settings are used (default: scratch, random init)")
    p.add_argument("--families", choices=("train", "all"), default="train",
                   help="glyph families to draw: the training side of the held-out split (default) or all")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.set_defaults(func=_pretrain)


def _pretrain(args) -> int:
    from dirtymnist.train.pretrain import PretrainOptions, pretrain

    minutes = args.minutes if args.steps is None and args.minutes is not None else None
    if args.steps is None and minutes is None:
        minutes = 10.0
    path = pretrain(args.out, PretrainOptions(minutes=minutes, steps=args.steps, preset=args.preset, model=args.model,
                                              overrides=args.overrides, families=args.families))
    print(path)
    return 0


def parse_folds(args, k: int) -> list[int]:
    if args.fold is not None:
        return [args.fold]
    if not args.folds:
        return [0]
    if args.folds == "all":
        return list(range(k))
    try:
        return [int(f) for f in args.folds.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--folds expects e.g. 0,1,2 or 'all', got {args.folds!r}") from None


def _train(args) -> int:
    from dirtymnist.config import dump_yaml, load_config

    overrides = list(args.overrides)
    if args.keep_last is not None:
        overrides.append(f"keep_last={args.keep_last}")
    if args.pseudo is not None:
        overrides.append(f"pseudo={args.pseudo}")
    cfg = load_config(args.preset, overrides)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    from dirtymnist.model.weights import precheck_hub

    precheck_hub(cfg)  # no route to uncached hub weights: one line now, before torch's import
    from dirtymnist.train import distributed as dist
    from dirtymnist.train.loop import train

    try:
        results = train(args.data_dir, cfg, folds=parse_folds(args, cfg.folds_k), run_dir=args.run_dir,
                        force=args.force, cache_dir=args.cache_dir)
    finally:
        dist.shutdown()
    if dist.is_main():
        _print_summary(results)
    return 0


def _print_summary(results: dict) -> None:
    print(f"{'fold':>4}  {'best epoch':>10}  {'val_loss':>8}  {'label_acc':>9}  {'exact':>6}")
    accs = []
    for fold, best in sorted(results.items()):
        if not best:
            continue
        accs.append(best["label_acc"])
        print(f"{fold:>4}  {best['epoch']:>10}  {best['val_loss']:>8.4f}  {best['label_acc']:>9.4f}  {best['exact_match']:>6.3f}")
    if len(accs) > 1:
        import statistics

        print(f"mean label_acc {statistics.mean(accs):.4f} +- {statistics.stdev(accs):.4f}")
