"""Benchmark: CPU inference speed of one model, engine by engine, and the cost of each TTA preset.

    .venv/bin/python bench/infer.py                       # the cpu preset's model, random weights
    .venv/bin/python bench/infer.py --set model=resnet18  # any override of the preset
    .venv/bin/python bench/infer.py --no-compile          # skip torch.compile

Every engine starts from uint8 (B, 256, 256) images: preprocessing (`transforms.to_input`) is timed
too, as `predict` pays it. Engines: torch eager, torch channels_last, torch.compile (in a child
process with a time limit: skipped if it cannot compile quickly), onnxruntime (CPU). Images/s
at batch 1 and 64; then each TTA preset's time relative to `none` (torch eager, batch 16).
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from dirtymnist.config import load_config
from dirtymnist.model.build import build_model
from dirtymnist.model.transforms import TTA_PRESETS, to_input

CPU = torch.device("cpu")


def images_per_s(fn, images: torch.Tensor, min_seconds: float) -> float:
    """Throughput of fn(images) after one warm-up call; at least 2 timed calls."""
    fn(images)
    calls, t0 = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < min_seconds:
        fn(images)
        calls += 1
    return calls * len(images) / (time.perf_counter() - t0)


def build(cfg):
    torch.manual_seed(0)
    return build_model(cfg, 26).eval()


def engines(cfg, model, onnx_dir: Path) -> dict:
    """name -> fn(uint8 images) -> logits."""
    from dirtymnist.infer.loader import OnnxModel

    def eager(images):
        with torch.inference_mode():
            return model(to_input(images, cfg, CPU, None, "none"))

    cl_model = build(cfg).to(memory_format=torch.channels_last)
    cl_model.load_state_dict(model.state_dict())

    def channels_last(images):
        with torch.inference_mode():
            x = to_input(images, cfg, CPU, None, "none").contiguous(memory_format=torch.channels_last)
            return cl_model(x)

    path = onnx_dir / "model.onnx"
    x = to_input(torch.zeros(2, 256, 256, dtype=torch.uint8), cfg, CPU, None, "none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    session = OnnxModel(path)

    def onnxruntime(images):
        return session(to_input(images, cfg, CPU, None, "none"))

    return {"torch eager": eager, "torch channels_last": channels_last, "onnxruntime": onnxruntime}


def measure_compile(overrides: list[str], batches: list[int], min_seconds: float) -> dict:
    """Child-process body for torch.compile: prints {batch: images/s} as JSON."""
    cfg = load_config("cpu", overrides)
    model = torch.compile(build(cfg))

    def run(images):
        with torch.inference_mode():
            return model(to_input(images, cfg, CPU, None, "none"))

    out = {}
    for b in batches:
        t0 = time.perf_counter()
        run(torch.randint(0, 256, (b, 256, 256), dtype=torch.uint8))  # compiles
        out[b] = {"compile_s": time.perf_counter() - t0,
                  "images_per_s": images_per_s(run, torch.randint(0, 256, (b, 256, 256), dtype=torch.uint8), min_seconds)}
    return out


def compile_in_child(overrides, batches, min_seconds, limit_s) -> dict | str:
    cmd = [sys.executable, __file__, "--child-compile", "--min-seconds", str(min_seconds),
           "--batches", ",".join(map(str, batches))]
    for o in overrides:
        cmd += ["--set", o]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return f"skipped: not done within {limit_s:.0f}s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {last[:120]}"
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def tta_costs(cfg, model, batch: int, min_seconds: float) -> dict[str, float]:
    images = torch.randint(0, 256, (batch, 256, 256), dtype=torch.uint8)

    def run_views(views):
        def fn(imgs):
            with torch.inference_mode():
                x = to_input(imgs, cfg, CPU, None, "none")
                return sum(model(f(x)) for _, f in views) / len(views)
        return fn

    return {name: batch / images_per_s(run_views(views), images, min_seconds) for name, views in TTA_PRESETS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-limit", type=float, default=100.0, help="seconds allowed for torch.compile")
    ap.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child_compile:
        print(json.dumps(measure_compile(args.overrides, batches, args.min_seconds)))
        return

    cfg = load_config("cpu", args.overrides)
    model = build(cfg)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model {cfg.model} (head {cfg.head}), {cfg.in_chans} channel(s), {cfg.image_size} px, "
          f"{params:.1f} M parameters, random weights; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in engines(cfg, model, Path(tmp)).items():
            rows[name] = {b: images_per_s(fn, torch.randint(0, 256, (b, 256, 256), dtype=torch.uint8),
                                          args.min_seconds) for b in batches}
            print(f"  {name}: " + ", ".join(f"batch {b} {v:.1f} img/s" for b, v in rows[name].items()),
                  file=sys.stderr)
    compiled = "skipped: --no-compile" if args.no_compile else compile_in_child(
        args.overrides, batches, args.min_seconds, args.compile_limit)

    print("| engine | " + " | ".join(f"batch {b} (images/s)" for b in batches) + " | note |")
    print("|---|" + "---|" * len(batches) + "---|")
    base = rows["torch eager"]
    for name, r in rows.items():
        cells = " | ".join(f"{r[b]:.1f} ({r[b] / base[b]:.2f}x)" for b in batches)
        print(f"| {name} | {cells} | |")
    if isinstance(compiled, dict):
        cells = " | ".join(f"{compiled[b]['images_per_s']:.1f} ({compiled[b]['images_per_s'] / base[b]:.2f}x)"
                           for b in batches)
        note = "compile " + ", ".join(f"{compiled[b]['compile_s']:.0f}s" for b in batches)
        print(f"| torch.compile | {cells} | {note} |")
    else:
        print("| torch.compile | " + " | ".join("-" for _ in batches) + f" | {compiled} |")

    tta_batch = 16  # 8 views x 64 images would dominate the run time
    costs = tta_costs(cfg, model, tta_batch, args.min_seconds)
    print(f"\n| TTA preset (torch eager, batch {tta_batch}) | views | seconds/batch | relative time |")
    print("|---|---|---|---|")
    for name, sec in costs.items():
        print(f"| {name} | {len(TTA_PRESETS[name])} | {sec:.3f} | {sec / costs['none']:.2f}x |")


if __name__ == "__main__":
    main()
