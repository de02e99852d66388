"""Open a model for inference from any of its three forms; each answers the same small interface.

    open_model("runs/cpu/fold0/best.pt")                 # a training checkpoint (EMA weights if kept)
    open_model("runs/cpu/fold0/best.onnx")               # `export`: the graph + best.onnx.json
    open_model("submit/input/models/run0_fold0.json")    # `package`: JSON + run0_fold0.safetensors

A `Model` has `letters`, `config` (the TrainConfig its preprocessing needs) and `logits(images,
rows, views)`: logits (len(rows), K) float32 of uint8 (N, 256, 256) images, the mean over the
TTA views. The network itself (`net`) is a torch module in eval mode or an `OnnxModel`, which
takes the same normalised input (`transforms.to_input`) and returns the same logits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dirtymnist.errors import ConfigError
from dirtymnist.rundir import model_name

ONNX_SUFFIX = ".onnx"
PACKAGED_SUFFIXES = (".json", ".safetensors")  # <name>.json (config, letters) + <name>.safetensors


@dataclass
class Model:
    """One model ready to predict: the network and what its input and output mean."""

    net: Any  # torch.nn.Module in eval mode, or OnnxModel
    config: Any  # TrainConfig: image size, denoise, normalisation, amp
    letters: list[str]
    path: Path
    device: torch.device

    def logits(self, images, rows: np.ndarray | None = None, views=None, *, batch_size: int = 64,
               desc: str | None = None) -> np.ndarray:
        """Logits (len(rows), K) float32 of `images[rows]` (a memmap, array or `PngFolder` of
        uint8 (N, 256, 256)), the mean over TTA `views` (transforms.TTA_PRESETS[name])."""
        rows = np.arange(len(images)) if rows is None else rows
        return predict_rows(self.net, self.config, images, rows, self.device, views, batch_size,
                            desc=desc or model_name(self.path))


def open_model(path: str | os.PathLike, device: str | torch.device = "cpu", *, threads: int = 0) -> Model:
    """A `.pt` checkpoint, an `.onnx` export or a packaged `.json` + `.safetensors` pair, by suffix.

    ONNX models run on the CPU with onnxruntime (`threads`: its intra-op threads, 0 = its default)."""
    from dirtymnist.model.checkpoint import load_model

    path, device = Path(path), torch.device(device)
    if path.suffix == ONNX_SUFFIX:
        cfg, letters = _read_sidecar(onnx_meta_path(path), path, "export description", "re-export")
        return Model(OnnxModel(path, threads), cfg, letters, path, torch.device("cpu"))
    if path.suffix in PACKAGED_SUFFIXES:
        return _open_packaged(path.with_suffix(".json"), device)
    net, cfg, letters = load_model(path, device)
    return Model(net, cfg, letters, path, device)


def _open_packaged(meta: Path, device: torch.device) -> Model:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dirtymnist.model.checkpoint import model_from_state

    weights_file = meta.with_suffix(".safetensors")
    cfg, letters = _read_sidecar(meta, weights_file, "packaged model description", "package it again")
    try:
        weights = load_file(str(weights_file))
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"{weights_file}: not a readable safetensors file ({exc})") from None
    net = model_from_state(cfg, len(letters), weights, weights_file)
    return Model(net.to(device).eval(), cfg, letters, meta, device)


def _read_sidecar(meta: Path, model_file: Path, what: str, fix: str):
    """(TrainConfig, letters) of the JSON beside an exported or packaged model."""
    from dirtymnist.config import config_from_dict

    if not model_file.is_file():
        raise ConfigError(f"{model_file}: model not found")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        return config_from_dict(data["config"], source=str(meta)), list(data["letters"])
    except FileNotFoundError:
        raise ConfigError(f"{meta}: missing; it holds the preprocessing settings ({fix})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{meta}: not a valid {what} ({exc})") from None


# --------------------------------------------------------------------------- ONNX
class OnnxModel:
    """An onnxruntime session that looks like the torch model to `batches.predict_logits`."""

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise ConfigError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().float().contiguous().cpu().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def onnx_meta_path(onnx_path: str | os.PathLike) -> Path:
    """`best.onnx` -> `best.onnx.json`: its preprocessing config and class list."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


# --------------------------------------------------------------------------- batches
def predict_rows(model, cfg, images, rows: np.ndarray, device: torch.device, views=None,
                 batch_size: int = 64, desc: str = "predict") -> np.ndarray:
    """Logits (len(rows), K) float32 of `images[rows]` through network `model`, mean over TTA `views`."""
    from dirtymnist.model.batches import in_order, make_loader, predict_logits

    loader = make_loader(in_order(images, None, rows, batch_size), 0, 0, device.type == "cuda")
    return predict_logits(model, _progress(loader, desc), cfg, device, views=views)


def tta_views(name: str):
    """The (view name, fn) list of a TTA preset; a ConfigError for an unknown name."""
    from dirtymnist.model.transforms import TTA_PRESETS

    if name not in TTA_PRESETS:
        raise ConfigError(f"--tta {name!r}; choose from {', '.join(TTA_PRESETS)}")
    return TTA_PRESETS[name]


def _progress(loader, desc: str):
    from tqdm.auto import tqdm

    # a notebook widget or a terminal bar only (disable=None), so logs and tests stay clean
    return tqdm(loader, desc=desc, unit="batch", leave=False, disable=None, dynamic_ncols=True)
