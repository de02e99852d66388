"""Multi-scale test-time views (issue 14, lever 1): does showing the net its input larger help?

    PYTHONPATH=src .venv/bin/python bench/tta_scales.py CHECKPOINT [--n-test 600] [--seed 0] [--pool-cache DIR]

The checkpoint's model scores the learn bench's held-out test scenes (`bench/learn.py`: the 7
held-out glyph families, seed + 1000) with each view set: the input as trained (e.g. 128 px),
and the same tensor upsampled (bilinear) by 1.25 / 1.5 / 2, alone and averaged with the others,
each with and without the four quarter turns. A fully-convolutional net with a spatial max runs
at any size; upsampling gives small letters more cells of the class map. Prints label accuracy
(threshold 0.5) and the seconds each view set took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))


def view_sets() -> dict[str, list]:
    from dirtymnist.model.transforms import _view  # the TTA presets' own view: turns, then zoom

    sets = {}
    for name, scales in (("1", [1.0]), ("1.25", [1.25]), ("1.5", [1.5]), ("2", [2.0]), ("1+1.25", [1.0, 1.25]),
                         ("1+1.5", [1.0, 1.5]), ("1+1.25+1.5", [1.0, 1.25, 1.5])):
        sets[f"scales {name}"] = [(f"s{s}", _view(0, False, s)) for s in scales]
        sets[f"scales {name} x rot90"] = [(f"s{s}r{k}", _view(k, False, s)) for s in scales for k in range(4)]
    return sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-cache", default="")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated scale sets, e.g. 1,1.25,1+1.25 (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from learn import heldout_test  # bench/learn.py: the same test scenes, from its pool cache

    from dirtymnist.infer.loader import predict_rows
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.model.checkpoint import load_model

    images, labels = heldout_test(args.seed, args.n_test, args.pool_cache, args.workers)
    model, cfg, _ = load_model(args.checkpoint, torch.device("cpu"))
    rows = np.arange(len(images))
    print(f"{args.checkpoint}: model {cfg.model}, input {cfg.image_size} px, {len(rows)} held-out scenes")
    only = {f"scales {o}" for o in args.only.split(",") if o}
    for name, views in view_sets().items():
        if only and name.removesuffix(" x rot90") not in only:
            continue
        t0 = time.perf_counter()
        logits = predict_rows(model, cfg, images, rows, torch.device("cpu"), views, 64)
        acc = label_accuracy((logits > 0).astype(np.float32), labels)
        print(f"| {name} | {len(views)} | {acc:.4f} | {time.perf_counter() - t0:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
