"""CLI parsers for the synthetic-data commands: `synth` and `show` (no heavy imports here)."""

from __future__ import annotations

import argparse

from dirtymnist.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser(
        "synth",
        help="generate a synthetic dataset in the competition layout",
        description="Render handwritten letters over noise into OUT (competition layout).",
    )
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--train", type=int, required=True, help="number of training images")
    p.add_argument("--test", type=int, required=True, help="number of test images")
    p.add_argument("--seed", type=int, required=True, help="dataset seed")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--emnist", default=None, metavar="PATH", help="folder of EMNIST letters files")
    p.add_argument("--letters", default="10,14", help="letters per image LOW,HIGH")
    p.add_argument("--height", default="17,55", help="letter size range LOW,HIGH in px")
    p.add_argument(
        "--noise", type=float, default=1.0, help="noise level: 1 uniform 0..255, 0 black"
    )
    p.add_argument(
        "--transparent", type=float, default=0.25, help="share of semi-transparent letters"
    )
    p.add_argument("--distractors", default="0,2", help="Hangul distractors per image LOW,HIGH")
    p.add_argument("--canvas", type=int, default=256, help="image side in px")
    p.set_defaults(func=_synth)

    p = sub.add_parser("show", help="contact sheet of dataset images with their letters")
    p.add_argument("data_dir", metavar="DATA_DIR", help="dataset folder (competition layout)")
    p.add_argument("--n", type=int, default=16, help="number of images")
    p.add_argument("--out", default="sheet.png", help="output PNG")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--seed", type=int, default=0, help="which images are picked")
    p.set_defaults(func=_show)


def _pair(text: str, flag: str, kind: type) -> tuple:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        return tuple(kind(x) for x in parts)
    except ValueError:
        raise DataError(f"{flag} {text!r}: expected LOW,HIGH numbers, e.g. {flag} 10,14") from None


def _synth(args: argparse.Namespace) -> int:
    from dirtymnist.data.synth import SceneKnobs, write_dataset

    knobs = SceneKnobs(
        canvas=args.canvas,
        letters=_pair(args.letters, "--letters", int),
        height=_pair(args.height, "--height", float),
        noise=args.noise,
        transparent=args.transparent,
        distractors=_pair(args.distractors, "--distractors", int),
    )
    if args.workers is not None and args.workers < 1:
        raise DataError(f"--workers {args.workers}: need >= 1")
    write_dataset(
        args.out,
        args.train,
        args.test,
        args.seed,
        workers=args.workers,
        knobs=knobs,
        emnist=args.emnist,
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from dirtymnist.data.show import contact_sheet

    print(contact_sheet(args.data_dir, n=args.n, out=args.out, split=args.split, seed=args.seed))
    return 0
