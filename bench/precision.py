"""CPU training speed by precision and memory format, side by side in one run.

    .venv/bin/python bench/precision.py [--models dm_fcn,dm_fcn_wide,efficientnet_b0] [--threads 2]

For each model: full training steps (forward with class maps where the head has them,
backward, AdamW) at batch 32 in four settings: fp32 / bf16 autocast, each in NCHW and
channels_last. The settings are interleaved over several rounds so that load from other
processes falls on all of them alike; the median steps/min per setting is reported with its
ratio to fp32 NCHW. bf16 autocast on a CPU runs its convolutions and matmuls through oneDNN,
which uses AMX tiles where the CPU has them (Sapphire Rapids and later).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import torch

from dirtymnist.config import load_config
from dirtymnist.model.build import build_model
from dirtymnist.model.precision import cpu_bf16_fast

SETTINGS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def _rate(model, opt, x, amp: bool, steps: int) -> float:
    maps = model.head is not None  # class-map heads: the dense loss needs the maps too
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x, return_maps=True) if maps else (model(x),)
        sum(o.float().mean() for o in out).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return 60 * steps / (time.perf_counter() - t0)


def train_steps_per_minute(cfg, batch: int, steps: int = 10, teacher: str = "") -> float:
    """Training steps per minute of `cfg`'s net on this CPU now, run as training runs it
    (the precision and memory format `auto` resolves to). Used to plan staged benchmarks.
    teacher: also a gradient-free forward pass of this net each step (distillation, `distill`)."""
    from dirtymnist.model.precision import autocast_context, use_channels_last

    cpu = torch.device("cpu")
    model = build_model(cfg, 26)
    x = torch.rand(batch, cfg.in_chans, cfg.image_size, cfg.image_size)
    if use_channels_last(cfg, cpu):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    maps = model.head is not None
    tnet = build_model(dataclasses.replace(cfg, model=teacher), 26).eval() if teacher else None
    if tnet is not None and use_channels_last(cfg, cpu):
        tnet = tnet.to(memory_format=torch.channels_last)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        if tnet is not None:
            with torch.no_grad(), autocast_context(cfg, cpu):
                tnet(x, return_maps=True)
        with autocast_context(cfg, cpu):
            out = model(x, return_maps=True) if maps else (model(x),)
        sum(o.float().mean() for o in out).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return 60 * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="dm_fcn,dm_fcn_wide,efficientnet_b0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"`bench/precision.py --models {args.models} --threads {args.threads}` ({platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AMX/bf16 fast path: {cpu_bf16_fast()}, "
          f"{time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f})\n")
    print("| model | input | fp32 NCHW | bf16 NCHW | fp32 channels_last | bf16 channels_last |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        preset = "cpu" if name.startswith("dm_fcn") else "winner"
        cfg = load_config(preset, [f"model={name}"])
        rates: dict = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for prec, cl in SETTINGS:
                model = build_model(cfg, 26)
                x = torch.rand(args.batch, cfg.in_chans, cfg.image_size, cfg.image_size)
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                opt = torch.optim.AdamW(model.parameters(), 1e-4)
                rates[(prec, cl)].append(_rate(model, opt, x, prec == "bf16", args.steps))
        med = {s: statistics.median(r) for s, r in rates.items()}
        base = med[("fp32", False)]
        cells = [f"{med[s]:.0f} steps/min ({med[s] / base:.2f}x)" for s in SETTINGS]
        print(f"| {name} | {cfg.image_size} px x{cfg.in_chans}, batch {args.batch} | " + " | ".join(cells) + " |",
              flush=True)
    print(f"\nload at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
