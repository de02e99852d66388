"""Cost of one training step (fwd + bwd + AdamW, batch 32, fp32) of `dm_fcn_deep` at several input
sizes (default 128, 160, 192 px) with 1 and 2 threads, side by side in one run: the clock that
turns a bench's steps into minutes of 2 cores (issue 14, rounds 4-5). `--models` measures other
nets too, each with its cost relative to the first (round 11: the grown nets). `--teacher NET`
adds, for each net, a step that also runs NET's forward pass without gradients (distillation, round 12).

    PYTHONPATH=src .venv/bin/python bench/step_threads.py [--sizes 128,160,192,224,256]
    PYTHONPATH=src .venv/bin/python bench/step_threads.py --sizes 256 --models dm_fcn_deep,dm_fcn_deep8
    PYTHONPATH=src .venv/bin/python bench/step_threads.py --sizes 256 --teacher dm_fcn_deep
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from precision import train_steps_per_minute  # noqa: E402

from dirtymnist.config import load_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="128,160,192", help="input sizes in px, comma-separated")
    p.add_argument("--models", default="dm_fcn_deep", help="nets, comma-separated (the first is the reference)")
    p.add_argument("--teacher", default="", help="also time each net's step with this net's forward pass")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    models = args.models.split(",")
    if args.teacher:
        models += [f"{m}+{args.teacher}" for m in models]
    ms = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for model in models:
            for size in sizes:
                net, _, teacher = model.partition("+")
                cfg = load_config("scratch", [f"model={net}", f"image_size={size}", "pretrained="])
                ms[threads, model, size] = min(60000 / train_steps_per_minute(cfg, 32, steps=15, teacher=teacher)
                                               for _ in range(2))
    print("| net (+ teacher forward) | input | 1 thread | 2 threads | 1/2 threads | 2 threads vs first net |\n|---|---|---|---|---|---|")
    for model in models:
        for size in sizes:
            one, two = ms[1, model, size], ms[2, model, size]
            print(f"| {model} | {size} px | {one:.0f} ms | {two:.0f} ms | {one / two:.2f}x | "
                  f"{two / ms[2, models[0], size]:.2f}x |")


if __name__ == "__main__":
    main()
