"""CLI parsers for delivery: `package` (the Docker submission folder) and `demo` (the main job)."""

from __future__ import annotations

import argparse

from dirtymnist.rundir import CHECKPOINT_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("package", help="assemble the Docker code-submission folder",
                       description="Assemble the organisers' Docker submission folder from the "
                       "runs' fold best.pt files: Dockerfile, main.py, weights (safetensors), "
                       "settings, pinned requirements, sample submission.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or checkpoints")
    p.add_argument("--out", default="submit", help="folder to write (default: submit/)")
    p.add_argument("--data", help="data folder with sample_submission.csv (default: the run's)")
    p.add_argument("--tta", default="rot90", help="TTA preset baked in (default: rot90)")
    p.add_argument("--thresholds", default="auto",
                   help="auto (RUN/thresholds.json if present, else 0.5), a number, or a JSON path")
    p.add_argument("--average", default="prob", choices=["prob", "logit"])
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINT_NAMES,
                   help="which fold*/NAME.pt of each run (default best)")
    p.add_argument("--blend", metavar="BLEND.json", help="run weights fitted by `dirtymnist blend`")
    p.add_argument("--base-image", help="Docker base image (default: a pytorch/pytorch runtime tag)")
    p.add_argument("--dry-run", action="store_true", help="print what would go in and its size")
    p.set_defaults(func=_package)

    d = sub.add_parser("demo", help="the whole main job on built-in synthetic data",
                       description="synth -> cache -> folds -> train (cpu preset) -> thresholds -> "
                       "predict with TTA -> evaluate -> report -> package, reusing what exists.")
    d.add_argument("--out", default="demo", help="demo folder (default: demo/)")
    d.add_argument("--train", type=int, help="synthetic training images")
    d.add_argument("--test", type=int, help="synthetic test images")
    d.add_argument("--preset", default="cpu")
    d.add_argument("--pretrained", help="start from this weights file (e.g. the ready cpu weights)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.set_defaults(func=_demo)


def _package(args) -> int:
    from dirtymnist.deliver.package import BASE_IMAGE, PackageOptions, package

    options = PackageOptions(tta=args.tta, thresholds=args.thresholds, average=args.average, blend=args.blend,
                             checkpoint=args.checkpoint, data_dir=args.data,
                             base_image=args.base_image or BASE_IMAGE)
    plan = package(args.runs, args.out, dry_run=args.dry_run, options=options)
    print(plan.format())
    if args.dry_run:
        print("(dry run: nothing written)")
    else:
        print(f"submission folder ready: {plan.out}  (run it: cd {plan.out} && python main.py)")
    return 0


def _demo(args) -> int:
    from dirtymnist.demo import run_demo

    kwargs = {k: v for k, v in (("n_train", args.train), ("n_test", args.test)) if v is not None}
    summary = run_demo(args.out, preset=args.preset, pretrained=args.pretrained,
                       overrides=args.overrides, **kwargs)
    print(summary.format())
    return 0
