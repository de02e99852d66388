"""The one checkpoint dict: written atomically, read with weights_only=True.

Keys: model, ema, optimizer, scheduler, scaler, epoch (epochs finished), step (batches
finished inside the current epoch), global_step, best, history, config, letters, rng, fold.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from dirtymnist.atomic import atomic_path
from dirtymnist.errors import ConfigError
from dirtymnist.rundir import fold_number
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
        state = torch.load(path, map_location=map_location, weights_only=True)
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
    """Rebuild the model of a checkpoint. Returns (model in eval mode, TrainConfig, letters)."""
    from dirtymnist.config import config_from_dict
    from dirtymnist.model.build import build_model

    state = load_checkpoint(path)
    cfg = config_from_dict({**state["config"], "pretrained": ""}, source=str(path))
    letters = list(state["letters"])
    model = build_model(cfg, len(letters))
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match its config ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), cfg, letters


# --------------------------------------------------------------------------- a run's model files
CHECKPOINT_NAMES = ("best", "last", "averaged", "swa")  # fold{k}/NAME.pt that predict can pick


def model_name(ckpt: Path) -> str:
    """`fold0/best.pt` -> fold0, `fold0/averaged.pt` -> fold0_averaged, `x.pt` -> x."""
    if ckpt.parent.name.startswith("fold"):
        return ckpt.parent.name if ckpt.name == "best.pt" else f"{ckpt.parent.name}_{ckpt.stem}"
    return ckpt.stem


def resolve_run(run: str | os.PathLike, engine: str = "torch", checkpoint: str = "best") -> list[Path]:
    """The model files of one RUN argument: a run directory's `fold*/{checkpoint}.pt` or one file.

    checkpoint: best | last | averaged (`dirtymnist average`) | swa (`swa_epochs`).

    With engine="onnx" each checkpoint stands for the `.onnx` file `export` wrote beside it; a
    folder of `.onnx` files (an `export --out` folder) or one `.onnx` file also works.
    """
    run = Path(run)
    if not run.exists():
        raise ConfigError(f"{run}: no such run directory or checkpoint")
    if run.is_dir():
        if checkpoint not in CHECKPOINT_NAMES:
            raise ConfigError(f"--checkpoint {checkpoint!r}; choose from {', '.join(CHECKPOINT_NAMES)}")
        found = sorted(run.glob(f"fold*/{checkpoint}.pt"), key=lambda p: fold_number(p.parent.name))
        if not found and engine == "onnx":  # an `export --out` folder: fold0.onnx, fold0_swa.onnx, ...
            kinds = tuple(f"_{k}" for k in CHECKPOINT_NAMES if k != "best")
            found = sorted(p for p in run.glob("*.onnx")
                           if (p.stem.endswith(f"_{checkpoint}") if checkpoint != "best" else not p.stem.endswith(kinds)))
        if not found:
            hint = {"averaged": "; run `dirtymnist average` first", "swa": "; train with --set swa_epochs=N"}
            raise ConfigError(f"{run}: no fold*/{checkpoint}.pt checkpoints{hint.get(checkpoint, ' (not a run directory?)')}")
    else:
        found = [run]
    if engine == "onnx":
        found = [p if p.suffix == ".onnx" else p.with_suffix(".onnx") for p in found]
        for p in found:
            if not p.is_file():
                raise ConfigError(f"{p}: ONNX model not found; run `dirtymnist export {run}` first")
    return found
