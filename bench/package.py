"""Delivery benchmark: the submission folder's size, and the time its entry script takes to
predict 5,000 test images on this CPU with the packaged settings (TTA, thresholds).

    .venv/bin/python bench/package.py RUN [--n-test 5000] [--tta none] [--out bench/out/package]

RUN is a trained run directory (e.g. demo/runs/cpu). Test images are generated (synthetic,
fixed seed) unless --data points at a folder with a test split.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dirtymnist import layout
from dirtymnist.data.synth import write_dataset
from dirtymnist.deliver.package import MODELS, PackageOptions, package


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--tta", default="none")
    ap.add_argument("--data", help="a data folder with a test split (default: generate one)")
    ap.add_argument("--out", default="bench/out/package")
    args = ap.parse_args()
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not args.data and not (data / layout.TEST_ANSWER_CSV).is_file():
        t0 = time.perf_counter()
        write_dataset(data, 32, args.n_test, seed=99)
        print(f"generated {args.n_test} test images in {time.perf_counter() - t0:.0f}s (not counted)")
    submit = out / "submit"
    plan = package([args.run], submit, options=PackageOptions(data_dir=data, tta=args.tta))
    size = sum(f.stat().st_size for f in submit.rglob("*") if f.is_file())
    weights = sum(f.stat().st_size for f in (submit / MODELS).glob("*.safetensors"))
    test_dir = submit / "data" / layout.TEST_DIR
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.parent.mkdir(parents=True, exist_ok=True)
    os.symlink((data / layout.TEST_DIR).absolute(), test_dir)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "main.py"], cwd=submit, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    from dirtymnist.infer.evaluate import evaluate_submission

    score = evaluate_submission(submit / "output" / "submission.csv", data / layout.TEST_ANSWER_CSV)
    n = score.rows
    print("| folder size | weights | models | TTA | images | predict time (incl. start-up) | images/s | label acc |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {size / 1e6:.2f} MB | {weights / 1e6:.2f} MB | {len(plan.settings['models'])} | {args.tta} | {n} | "
          f"{seconds:.1f} s | {n / seconds:.0f} | {score.label_acc:.4f} |")
    print(f"({platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
