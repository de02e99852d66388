"""What `amp: auto` and `channels_last: auto` mean on the device a run lands on.

CUDA: channels_last, and bf16 autocast where the card computes bf16 natively (compute
capability >= 8.0: A100, L4, RTX 30xx/40xx, H100/H200), fp16 autocast with a GradScaler below
(T4 7.5, V100 7.0, P100 6.0: the free Colab / Kaggle cards emulate bf16, slowly). CPU with AMX tiles (Intel
Sapphire Rapids and later), whose bf16 units oneDNN uses for convolutions and matmuls: the
same for *training steps*, which run 2-3x faster there (bench/precision.py); validation,
out-of-fold probabilities and predictions stay fp32, so that they match `predict`, ONNX and a
packaged submission on any CPU. Other CPUs: fp32, NCHW.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_bf16_fast() -> bool:
    """True where this CPU has AMX tiles (bf16 matrix units)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older torch: no probe, assume no
        return False


def cuda_amp(device: torch.device) -> str:
    """bf16 on cards with native bf16 (compute capability >= 8.0), else fp16."""
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def resolve_amp(cfg, device: torch.device, training: bool = True) -> str:
    """bf16 | fp16 | off for this device (and for a training step or inference)."""
    if cfg.amp != "auto":
        return cfg.amp
    if device.type == "cuda":
        return cuda_amp(device)
    if device.type == "cpu" and training and cpu_bf16_fast():
        return "bf16"
    return "off"


def use_channels_last(cfg, device: torch.device, training: bool = True) -> bool:
    if cfg.channels_last != "auto":
        return cfg.channels_last == "on"
    return device.type == "cuda" or resolve_amp(cfg, device, training) != "off"


def describe(cfg, device: torch.device) -> str:
    """One phrase for logs: what the training steps will use."""
    amp = resolve_amp(cfg, device)
    fmt = "channels_last" if use_channels_last(cfg, device) else "NCHW"
    return f"{'fp32' if amp == 'off' else amp + ' autocast'}, {fmt}"


def choose_device(engine: str = "torch") -> torch.device:
    """The device a command runs on when none is asked for: CUDA, else Apple's MPS, else the CPU.

    onnxruntime runs on the CPU here (engine="onnx")."""
    if engine == "onnx":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_context(cfg, device: torch.device, training: bool = True):
    """The autocast of a forward pass: the dtype `resolve_amp` chose for this device, or none."""
    amp = resolve_amp(cfg, device, training)
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
