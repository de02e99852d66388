"""Estimate the GPU memory a preset needs for training, on a CPU (no GPU needed).

    .venv/bin/python bench/memory_estimate.py [--presets seed,winner,gpu] [--grad-checkpointing]

Counts, for one training step at the preset's batch size and image size:
  weights + gradients + Adam's two moments (4 x parameters, fp32),
  the activations autograd saves for backward, measured by running one forward pass of one
  image through the real model with `torch.autograd.graph.saved_tensors_hooks` (each storage
  counted once) and multiplying by the batch size -- in fp32, and under bf16 autocast.
CUDA's allocator, cuDNN workspaces and fragmentation come on top: add ~1-2 GiB. An estimate,
not a measurement; `bench/gpu_speed.py` measures the peak on a real card.
"""

from __future__ import annotations

import argparse

import torch

from dirtymnist.config import load_config
from dirtymnist.model.build import build_model


def saved_bytes(model, x, autocast: bool) -> int:
    seen: dict[tuple, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
            s = t.untyped_storage()
            seen[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(x)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(v for (ptr, _), v in seen.items() if ptr not in params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="seed,winner,gpu")
    ap.add_argument("--grad-checkpointing", action="store_true")
    args = ap.parse_args()
    print("| preset | model | px | batch | parameters | weights+grads+Adam | activations fp32 | "
          "activations bf16 | total fp32 | total bf16 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gib = 2**30
    for preset in args.presets.split(","):
        cfg = load_config(preset, ["pretrained=", f"grad_checkpointing={args.grad_checkpointing}"])
        model = build_model(cfg, 26).train()
        n = sum(p.numel() for p in model.parameters())
        state = 16 * n  # fp32 weights, grads, exp_avg, exp_avg_sq
        x = torch.rand(1, cfg.in_chans, cfg.image_size, cfg.image_size)
        act32 = saved_bytes(model, x, False) * cfg.batch_size
        act16 = saved_bytes(model, x, True) * cfg.batch_size
        print(f"| {preset} | {cfg.model} | {cfg.image_size} | {cfg.batch_size} | {n / 1e6:.1f} M | "
              f"{state / gib:.2f} GiB | {act32 / gib:.1f} GiB | {act16 / gib:.1f} GiB | "
              f"{(state + act32) / gib:.1f} GiB | {(state + act16) / gib:.1f} GiB |", flush=True)


if __name__ == "__main__":
    main()
