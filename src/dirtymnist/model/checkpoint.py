"""The one checkpoint dict: written atomically, read with weights_only=True.

Keys: model, ema, optimizer, scheduler, scaler, epoch (epochs finished), step (batches
finished inside the current epoch), global_step, best, history, config, letters, rng, fold.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from dirtymnist.atomic import atomic_path
from dirtymnist.errors import ConfigError
from dirtymnist.model.safeload import torch_load_safe
from dirtymnist.space import ensure_free


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    if path.is_file():  # the new file is about as big as the one it replaces, and both coexist
        ensure_free(path.parent, path.stat().st_size, "the checkpoint")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    try:
        state = torch_load_safe(path, map_location)
    except Exception as exc:  # noqa: BLE001 - truncated file, foreign pickle, ...
        raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError(f"{path}: not a dirtymnist checkpoint (no model/config)")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as plain containers and tensors (weights_only-safe)."""
    state = {"torch": torch.get_rng_state(), "python": _py_state_to_list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_py_state_from_list(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _py_state_from_list(s):
    return (s[0], tuple(s[1]), s[2])


def load_model(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True):
    """Rebuild the model of a checkpoint. Returns (model in eval mode, TrainConfig, letters).

    For inference prefer `infer.loader.open_model`, which also opens ONNX and packaged models."""
    from dirtymnist.config import config_from_dict

    state = load_checkpoint(path)
    cfg = config_from_dict({**state["config"], "pretrained": ""}, source=str(path))
    letters = list(state["letters"])
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    return model_from_state(cfg, len(letters), weights, path).to(device).eval(), cfg, letters


def model_from_state(cfg, num_classes: int, weights: dict[str, torch.Tensor], source: str | Path):
    """The network of `cfg` with `weights` loaded (a checkpoint's, or a packaged safetensors
    file's); a ConfigError naming `source` when they do not fit the config."""
    from dirtymnist.model.build import build_model

    model = build_model(cfg, num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"{source}: weights do not match its config ({str(exc).splitlines()[0]})") from None
    return model
