"""Training speed and peak memory of the competition presets on one device, per precision, and the
9th-place team's input pipeline (per-sample PIL transforms in a DataLoader) on the same model.

    .venv/bin/python bench/gpu_speed.py                        # on a GPU: seed (B7 331), winner (B8), gpu
    .venv/bin/python bench/gpu_speed.py --device cpu --shrink  # a quick check of the script on a CPU

Weights are random (the lent GPU machine has no network, and speed does not depend on them).
Each row: the preset at its own batch size and image size, `amp` forced to off / fp16 / bf16
(fp16 with a GradScaler, as `amp: auto` does below compute capability 8.0), channels_last on the
GPU; samples/s over `--steps` training steps after warm-up, and the peak of
torch.cuda.max_memory_allocated. The team row feeds the same model from their pipeline: uint8
HxWx3 colour array -> ToPILImage -> Resize(331) -> flips -> RandomRotation(40) -> ToTensor ->
Normalize, DataLoader with `--workers` processes, fp32 as they ran it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from dirtymnist.config import load_config
from dirtymnist.model.build import build_model
from dirtymnist.model.precision import autocast_context
from dirtymnist.model.transforms import to_input
from dirtymnist.train.build import build_grad_scaler, build_optimizer
from dirtymnist.train.losses import build_loss


def _step(model, opt, scaler, loss_fn, x, y, cfg, device):
    with autocast_context(cfg, device):
        loss = loss_fn(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, device, steps: int, batches) -> dict:
    """samples/s and peak memory of `steps` training steps fed by `batches` (an iterator of
    (x on device, y on device)), after 2 warm-up steps."""
    torch.manual_seed(0)
    model = build_model(cfg, 26).to(device)
    if cfg.channels_last == "on":
        model = model.to(memory_format=torch.channels_last)
    opt, scaler, loss_fn = build_optimizer(cfg, model), build_grad_scaler(cfg, device), build_loss(cfg.loss)
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    n, t0 = 0, None
    for i in range(steps + 2):
        x, y = next(batches)
        _step(model, opt, scaler, loss_fn, x, y, cfg, device)
        if i == 1:
            _sync(device)
            t0 = time.perf_counter()
        elif i > 1:
            n += x.shape[0]
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    del model, opt
    return {"samples_s": n / seconds, "peak_gib": peak}


def ours(cfg, device):
    """Our pipeline: a uint8 (B, 256, 256) batch (as read from the memmap cache) -> device ->
    resize, augmentation and normalisation batched there."""
    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(0, 256, (cfg.batch_size, 256, 256), dtype=torch.uint8)
    y = (torch.rand(cfg.batch_size, 26) < 0.46).float().to(device)
    while True:
        yield to_input(images, cfg, device, g, cfg.augment), y


def team(cfg, device, workers: int):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import TeamDataset  # bench/pipeline.py: the team's per-sample PIL pipeline

    rng = np.random.default_rng(0)
    n = cfg.batch_size * 8
    images3 = np.repeat(rng.integers(0, 256, (n, 256, 256, 1), dtype=np.uint8), 3, axis=-1)
    labels = (rng.random((n, 26)) < 0.46).astype(np.uint8)
    loader = torch.utils.data.DataLoader(TeamDataset(images3, labels), batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default="seed,winner,gpu")
    ap.add_argument("--amps", default="off,fp16,bf16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers of the team's pipeline")
    ap.add_argument("--shrink", action="store_true", help="efficientnet_b0, batch 2, 64 px (a CPU check)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    cl = "on" if device.type == "cuda" else "off"
    rows = []
    for preset in args.presets.split(","):
        shrink = ["model=efficientnet_b0", "batch_size=2", "image_size=64"] if args.shrink else []
        base = [*shrink, "pretrained=", f"channels_last={cl}", "num_workers=0"]
        for amp in args.amps.split(","):
            cfg = load_config(preset, [*base, f"amp={amp}"])
            try:
                r = measure(cfg, device, args.steps, ours(cfg, device))
            except torch.OutOfMemoryError:
                r = {"samples_s": float("nan"), "peak_gib": float("inf")}
            rows.append({"preset": preset, "model": cfg.model, "image": cfg.image_size, "batch": cfg.batch_size,
                         "amp": amp, "pipeline": "ours", **r})
            print(json.dumps(rows[-1]), flush=True)
        if preset == "seed":  # the team's own pipeline on their own model and precision
            cfg = load_config(preset, [*base, "amp=off", "channels_last=off"])
            r = measure(cfg, device, args.steps, team(cfg, device, args.workers))
            rows.append({"preset": preset, "model": cfg.model, "image": cfg.image_size, "batch": cfg.batch_size,
                         "amp": "off", "pipeline": f"team (PIL, {args.workers} workers)", **r})
            print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [f"`bench/gpu_speed.py` on {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", "",
             "| preset | model | px | batch | precision | pipeline | samples/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['model']} | {r['image']} | {r['batch']} | "
                     f"{'fp32' if r['amp'] == 'off' else r['amp']} | {r['pipeline']} | "
                     f"{r['samples_s']:.1f} | {r['peak_gib']:.2f} |")
    seed_team = [r for r in rows if r["preset"] == "seed" and r["pipeline"].startswith("team")]
    seed_ours = [r for r in rows if r["preset"] == "seed" and r["pipeline"] == "ours" and r["amp"] == "off"]
    if seed_team and seed_ours:
        lines.append(f"\nseed, fp32: our pipeline / the team's = "
                     f"**{seed_ours[0]['samples_s'] / seed_team[0]['samples_s']:.2f}x** samples/s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
