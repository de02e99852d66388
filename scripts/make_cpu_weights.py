"""Make the ready pretrained weights of the `cpu` preset's backbone by running the pretraining.

    .venv/bin/python scripts/make_cpu_weights.py [--minutes 30] [--out weights/cpu_dm_fcn.safetensors]

Nothing is downloaded: the net is trained on generated scenes with letter positions
(`dirtymnist pretrain`). The file (~1 MB for dm_fcn) is then used with
`dirtymnist train DATA --preset cpu --set pretrained=weights/cpu_dm_fcn.safetensors`.
By default all glyph families are used; pass --families train to keep the held-out families
unseen (as bench/learn.py needs).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from dirtymnist.config import load_config
from dirtymnist.train.pretrain import pretrain


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--out", default="weights/cpu_dm_fcn.safetensors")
    p.add_argument("--families", choices=("train", "all"), default="all")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    t0 = time.perf_counter()
    path = pretrain(args.out, minutes=args.minutes, preset="cpu", families=args.families)
    size = path.stat().st_size / 1e6
    print(f"{path}: {size:.2f} MB, model {load_config('cpu').model}, {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
