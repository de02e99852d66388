"""Test-time views beyond the quarter turns (issue 14): larger input, other angles, a second run.

    PYTHONPATH=src .venv/bin/python bench/tta_scales.py CHECKPOINT [--n-test 600] [--seed 0] [--pool-cache DIR]
        [--only 1,turn45,1+turn45] [--ensemble CHECKPOINT2]

The checkpoint's model scores the learn bench's held-out test scenes (`bench/learn.py`: the 7
held-out glyph families, seed + 1000) with each view set: the input as trained (e.g. 128 px),
and the same tensor upsampled (bilinear) by 1.25 / 1.5 / 2, alone and averaged with the others,
each with and without the four quarter turns. A fully-convolutional net with a spatial max runs
at any size; upsampling gives small letters more cells of the class map. Letters are drawn at
any angle, so the image turned by 45 degrees (bilinear, on a canvas grown to hold its corners,
each image's median grey outside it) is another view the net was trained for: `turn45` (with
its four quarter turns) and `1+turn45` (the rot90 views and those); `turn1`, a 1-degree turn,
shows what the bilinear resampling alone costs. `--ensemble` scores a second run's checkpoint
and the mean of both runs' rot90 logits. Prints label accuracy (threshold 0.5) and the seconds
each view set took.
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
    sets["turn1"] = [("t1", _turned(1.0, 0))]  # resampled, hardly moved: what interpolation alone costs
    turned = [(f"t45r{k}", _turned(45.0, k)) for k in range(4)]
    sets["turn45"] = turned[:1]
    sets["turn45 x rot90"] = turned
    sets["1+turn45 x rot90"] = [(f"r{k}", _view(k, False)) for k in range(4)] + turned
    return sets


def _turned(angle: float, turns: int):
    """A view: each image turned by `angle` degrees (bilinear, canvas grown to keep the corners,
    filled with the image's median), then `turns` quarter turns."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    def fn(x):
        fills = x.flatten(1).median(dim=1).values.tolist()
        out = torch.stack([TF.rotate(xi, angle, InterpolationMode.BILINEAR, expand=True, fill=[f])
                           for xi, f in zip(x, fills)])
        return torch.rot90(out, turns, dims=(-2, -1))

    return fn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-cache", default="")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated view sets, e.g. 1,1.25,1+1.25,turn45,1+turn45 (default: all)")
    p.add_argument("--ensemble", default="", help="a second run's checkpoint: its rot90 score, and both runs' mean")
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
    only = {o for o in args.only.split(",") if o}
    scored = {}
    for name, views in view_sets().items():
        if only and name.removesuffix(" x rot90").removeprefix("scales ") not in only:
            continue
        t0 = time.perf_counter()
        scored[name] = predict_rows(model, cfg, images, rows, torch.device("cpu"), views, 32)
        acc = label_accuracy((scored[name] > 0).astype(np.float32), labels)
        print(f"| {name} | {len(views)} | {acc:.4f} | {time.perf_counter() - t0:.1f} s |", flush=True)
    if args.ensemble:
        from dirtymnist.model.transforms import TTA_PRESETS

        rot90 = TTA_PRESETS["rot90"]
        first = scored.get("scales 1 x rot90")
        if first is None:
            first = predict_rows(model, cfg, images, rows, torch.device("cpu"), rot90, 32)
        model2, cfg2, _ = load_model(args.ensemble, torch.device("cpu"))
        second = predict_rows(model2, cfg2, images, rows, torch.device("cpu"), rot90, 32)
        for name, views, logits in (("second run x rot90", 4, second), ("both runs x rot90", 8, (first + second) / 2)):
            acc = label_accuracy((logits > 0).astype(np.float32), labels)
            print(f"| {name} | {views} | {acc:.4f} | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
