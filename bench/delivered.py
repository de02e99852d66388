"""What the pipeline delivers on the learn bench: TTA plus per-letter thresholds fitted on validation scenes.

    PYTHONPATH=src .venv/bin/python bench/delivered.py CKPT [CKPT ...] --pool-cache DIR
        [--lookalike LA_SET] [--tta none,rot90] [--n-val 600] [--threads 2]

`bench/learn.py` scores its held-out families at threshold 0.5. A run of the pipeline does more:
it fits one threshold per letter on its out-of-fold probabilities (`dirtymnist thresholds`,
`infer/thresholds.fit`, no TTA) and applies them to the test set's TTA probabilities. Here the
out-of-fold rows are stood in for by fresh scenes of the TRAINING glyph families (seed + 2000,
never in a training pool); the thresholds are applied to the bench's 600 held-out-family scenes
and, with --lookalike, to `bench/lookalike.py`'s set. No test scene is used to fit anything.

Printed per checkpoint and TTA: label accuracy at 0.5; with thresholds fitted on the validation
scenes without TTA (what the pipeline does); with thresholds fitted on the validation scenes
under the same TTA (a variant: the fit sees the probabilities it is applied to).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))


def validation_scenes(seed: int, n: int, pool_cache: str) -> tuple[np.ndarray, np.ndarray]:
    """n fresh scenes of the training glyph families (seed + 2000), as (images, labels)."""
    from learn import _fill  # bench/learn.py: the same cache as the bench's pools

    from dirtymnist.glyphs import split_families

    train, _ = split_families(0.2, seed=0)
    scenes = _fill("synth", {"families": list(train)}, seed + 2000, n,
                   types.SimpleNamespace(pool_cache=pool_cache, workers=1))
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes]).astype(np.uint8)


def probabilities(model, cfg, images: np.ndarray, tta: str) -> np.ndarray:
    import torch

    from dirtymnist.arrays import sigmoid
    from dirtymnist.infer.predict import predict_rows
    from dirtymnist.model.transforms import TTA_PRESETS

    return sigmoid(predict_rows(model, cfg, images, np.arange(len(images)), torch.device("cpu"), TTA_PRESETS[tta], 64))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--pool-cache", default="")
    p.add_argument("--lookalike", type=Path, help="a bench/lookalike.py make OUT folder")
    p.add_argument("--tta", default="none,rot90")
    p.add_argument("--n-val", type=int, default=600)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="ema", help="as bench/lookalike.py score's: ema and/or raw")
    args = p.parse_args(argv)
    import torch
    from learn import heldout_test
    from lookalike import models

    from dirtymnist.infer.thresholds import fit
    from dirtymnist.metrics import label_accuracy

    torch.set_num_threads(args.threads)
    val = validation_scenes(args.seed, args.n_val, args.pool_cache)
    sets = {"held-out families": heldout_test(args.seed, args.n_test, args.pool_cache)}
    if args.lookalike:
        from lookalike import read_set

        images, labels, _ = read_set(args.lookalike)
        sets["look-alike"] = (images, labels)
    ttas = args.tta.split(",")
    print(f"validation: {len(val[0])} fresh scenes of the training families (seed {args.seed + 2000}); "
          "thresholds fitted there, applied to the test sets\n")
    print("| checkpoint | TTA | set | threshold 0.5 | fitted, no-TTA validation (pipeline) | fitted, same-TTA validation |")
    print("|---|---|---|---|---|---|")
    for ckpt, model, cfg in models(args.checkpoints, args.weights.split(",")):
        val_probs = {"none": probabilities(model, cfg, val[0], "none")}
        pipeline = fit(val_probs["none"], val[1]).thresholds
        for tta in ttas:
            if tta not in val_probs:
                val_probs[tta] = probabilities(model, cfg, val[0], tta)
            same = fit(val_probs[tta], val[1]).thresholds
            for name, (images, labels) in sets.items():
                probs = probabilities(model, cfg, images, tta)
                accs = [label_accuracy((probs > 0.5).astype(np.uint8), labels),
                        label_accuracy(pipeline.apply(probs), labels), label_accuracy(same.apply(probs), labels)]
                print(f"| {ckpt} | {tta} | {name} | " + " | ".join(f"{a:.4f}" for a in accs) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
