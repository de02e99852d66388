"""Make the ready weights a preset starts from (`pretrained: ready`): `model/ready/<model>.safetensors`.

    # pretrain on freshly generated scenes (`dirtymnist pretrain`), then write the package file
    .venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --minutes 30 [--families train]
    # or take the last weights of a finished training run (e.g. a bench/learn.py run on a scene pool)
    .venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint RUN/fold0/last.pt
    # another set for the same model, loaded with `pretrained: ready.192px`
    .venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint RUN/last.pt --tag 192px

Nothing is downloaded: the nets learn from generated scenes with letter positions. The file is
package data, so `--set pretrained=ready` finds it wherever the package is installed. Training
on `--families train` keeps the held-out glyph families unseen, so bench/learn.py can still
measure generalisation from these weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from dirtymnist.model.weights import ready_path
from dirtymnist.train.pretrain import PretrainOptions, pretrain, save_weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dm_fcn_deep")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--minutes", type=float, help="pretrain for this many minutes")
    src.add_argument("--from-checkpoint", type=Path, help="a training run's checkpoint (last.pt) of --model")
    p.add_argument("--families", choices=("train", "all"), default="train")
    p.add_argument("--tag", default="", help="write model/ready/<model>.TAG.safetensors (pretrained: ready.TAG)")
    p.add_argument("--out", type=Path, help="default: the package's model/ready/<model>[.TAG].safetensors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.tag and not args.tag.replace("_", "").replace("-", "").isalnum():
        p.error(f"--tag {args.tag!r}: letters, digits, - and _ only")
    out = args.out or ready_path(args.model, args.tag)
    t0 = time.perf_counter()
    if args.from_checkpoint:
        from dirtymnist.model.checkpoint import load_checkpoint

        ckpt = load_checkpoint(args.from_checkpoint)  # weights_only=True
        if ckpt["config"]["model"] != args.model:
            p.error(f"{args.from_checkpoint}: a {ckpt['config']['model']} checkpoint, not {args.model}")
        path = save_weights(ckpt["model"], out)
    else:
        path = pretrain(out, PretrainOptions(minutes=args.minutes, model=args.model, preset="scratch",
                                             families=args.families))
    print(f"{path}: {path.stat().st_size / 1e6:.2f} MB, model {args.model}, "
          f"{(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
