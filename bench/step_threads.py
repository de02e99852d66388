"""Cost of one training step (fwd + bwd + AdamW, batch 32, fp32) of `dm_fcn_deep` at several input
sizes (default 128, 160, 192 px) with 1 and 2 threads, side by side in one run: the clock that
turns a bench's steps into minutes of 2 cores (issue 14, rounds 4-5).

    PYTHONPATH=src .venv/bin/python bench/step_threads.py [--sizes 128,160,192,224,256]
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
    sizes = [int(s) for s in p.parse_args().sizes.split(",")]
    sets_by_name = {f"{n} px": [f"image_size={n}"] for n in sizes}
    ms = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, sets in sets_by_name.items():
            cfg = load_config("scratch", ["model=dm_fcn_deep", *sets, "pretrained="])
            ms[threads, name] = min(60000 / train_steps_per_minute(cfg, 32, steps=15) for _ in range(2))
    print("| input | 1 thread | 2 threads | ratio |\n|---|---|---|---|")
    for name in sets_by_name:
        print(f"| {name} | {ms[1, name]:.0f} ms | {ms[2, name]:.0f} ms | {ms[1, name] / ms[2, name]:.2f}x |")


if __name__ == "__main__":
    main()
