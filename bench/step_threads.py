"""Cost of one training step (fwd + bwd + AdamW, batch 32, fp32) of `dm_fcn_deep` at 128, 160 and
192 px with 1 and 2 threads, side by side in one run: the clock that turns a bench's steps into
minutes of 2 cores (issue 14, round 4).

    PYTHONPATH=src .venv/bin/python bench/step_threads.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from precision import train_steps_per_minute  # noqa: E402

from dirtymnist.config import load_config  # noqa: E402

SIZES = {"128 px": [], "160 px": ["image_size=160"], "192 px": ["image_size=192"]}


def main() -> None:
    ms = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, sets in SIZES.items():
            cfg = load_config("scratch", ["model=dm_fcn_deep", *sets, "pretrained="])
            ms[threads, name] = min(60000 / train_steps_per_minute(cfg, 32, steps=15) for _ in range(2))
    print("| input | 1 thread | 2 threads | ratio |\n|---|---|---|---|")
    for name in SIZES:
        print(f"| {name} | {ms[1, name]:.0f} ms | {ms[2, name]:.0f} ms | {ms[1, name] / ms[2, name]:.2f}x |")


if __name__ == "__main__":
    main()
