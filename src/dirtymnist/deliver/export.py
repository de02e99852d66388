"""Export fold models to ONNX and run them with onnxruntime: `dirtymnist export RUN --format onnx`.

The graph is the network alone, TTA-free: input `input` float32 (B, in_chans, S, S), the
*normalised* network input that `transforms.to_input` makes from uint8 (B, 256, 256) images; output
`logits` float32 (B, 26). The batch and spatial axes are dynamic (zoomed TTA views run larger inputs: S = the trained size, or larger). Preprocessing (resize, denoise, normalise)
stays outside the graph: its settings are the training config stored in `NAME.onnx.json` beside
each model, with the class list, so `predict --engine onnx` needs no checkpoint. Both are
opened by `infer.loader.open_model`, like the checkpoint they come from.

Default location: beside each checkpoint (`RUN/fold0/best.onnx`); with `out_dir`,
`OUT/fold0.onnx` and so on.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.errors import ConfigError
from dirtymnist.infer.loader import OnnxModel, onnx_meta_path, open_model
from dirtymnist.model.transforms import TTA_PRESETS
from dirtymnist.rundir import model_files, onnx_file

log = logging.getLogger(__name__)

OPSET = 17
FORMATS = ("onnx",)


@dataclass
class Exported:
    checkpoint: Path
    onnx: Path
    meta: Path
    max_abs_diff: float  # onnxruntime against torch on random inputs


def export_run(run: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               fmt: str = "onnx", opset: int = OPSET, checkpoint: str = "best") -> list[Exported]:
    """Export every fold model of a run (or one checkpoint file) and check each with onnxruntime."""

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}; choose from {', '.join(FORMATS)}")
    done = []
    for ckpt in model_files(run, checkpoint=checkpoint):
        done.append(export_checkpoint(ckpt, onnx_file(ckpt, out_dir), opset))
    return done


def export_checkpoint(ckpt: str | os.PathLike, target: str | os.PathLike, opset: int = OPSET) -> Exported:
    """Write `target` (.onnx) and its settings beside it; check onnxruntime against torch."""
    from dirtymnist.model.transforms import to_input

    ckpt, target = Path(ckpt), Path(target)
    source = open_model(ckpt, "cpu")
    cfg, letters = source.config, source.letters
    model = source.net.float().to(memory_format=torch.contiguous_format)
    cfg_cpu = _cpu_config(cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=g)
    x = to_input(images, cfg_cpu, torch.device("cpu"), None, "none").contiguous()  # (3, C, S, S)
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(
            model, (x[:2],), str(tmp), input_names=["input"], output_names=["logits"],
            # batch and size are dynamic: zoomed TTA views (transforms.ZOOM) run on larger inputs
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,  # the dynamo exporter needs onnxscript
        )
    # check on a batch size and an input size the export did not see (both must really be dynamic)
    session = OnnxModel(target)
    diff = 0.0
    for check in (x, TTA_PRESETS["rot90_zoom"][-1][1](x)):
        with torch.no_grad():
            expected = model(check).numpy()
        diff = max(diff, float(np.abs(expected - session(check).numpy()).max()))
    if diff > 1e-3:
        log.warning("%s: onnxruntime differs from torch by %.2e", target, diff)
    meta = {
        "checkpoint": str(ckpt),
        "input": {"name": "input", "dtype": "float32", "shape": ["batch", cfg.in_chans, "height", "width"],
                  "trained_size": cfg.image_size,
                  "is": "normalised network input: transforms.to_input(uint8 (B, 256, 256) images, config)"},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(letters)]},
        "opset": opset,
        "letters": list(letters),
        "config": cfg.to_dict(),
        "max_abs_diff_vs_torch": diff,
    }
    atomic_write_text(onnx_meta_path(target), json.dumps(meta, indent=2) + "\n")
    log.info("exported %s -> %s (max |onnxruntime - torch| %.1e)", ckpt, target, diff)
    return Exported(ckpt, target, onnx_meta_path(target), diff)


def _cpu_config(cfg):
    """The same preprocessing, without CUDA-only layout choices."""
    import dataclasses

    return dataclasses.replace(cfg, channels_last="off")
