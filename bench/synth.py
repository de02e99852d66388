"""Benchmark the synthetic-data writer: images/s at workers=1 and workers=2, side by side.

    python bench/synth.py [--n 1000]

Prints a Markdown table row to paste into BENCHMARKS.md, with the extrapolated time for the
competition's 50,000 training images.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from dirtymnist.data.synth import write_dataset
from dirtymnist.glyphs import load_bank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per run")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    args = parser.parse_args(argv)

    load_bank()  # glyph loading is a one-off per process; not part of the rate
    rates = {}
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_dataset(tmp, args.n, 0, seed=0, workers=workers, progress=False)
            rates[workers] = args.n / (time.perf_counter() - start)

    cells = " | ".join(f"{rate:.0f} img/s" for rate in rates.values())
    fifty = " / ".join(f"{50_000 / rate / 60:.1f} min" for rate in rates.values())
    header = " | ".join(f"workers={w}" for w in rates)
    print(f"| benchmark | images | {header} | 50,000 images | CPU cores |")
    print("|---|---|" + "---|" * len(rates) + "---|---|")
    print(
        f"| synth write_dataset | {args.n} | {cells} | {fifty} | {os.cpu_count()} ({platform.machine()}) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
