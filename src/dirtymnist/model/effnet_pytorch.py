"""efficientnet_pytorch weight files (lukemelas' `EfficientNet.from_pretrained`, the seed team's
library) for timm's tf_efficientnet_* / tf_efficientnet_lite* models, by an explicit name map.

efficientnet_pytorch names its blocks by one flat index (`_blocks.N._depthwise_conv`); timm
groups them in stages (`blocks.S.B.conv_dw`). N is mapped to (S, B) by the timm model's own block
layout, and each block's tensor names by the kind of block timm built there, so a tensor lands
where the model says it belongs, never by its position in the file. Both ports keep TF's "SAME"
padding and BN eps 1e-3 on the tf_ models, so the same tensors give the same logits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dirtymnist.errors import ConfigError

if TYPE_CHECKING:
    import torch

# What `EfficientNet.from_pretrained` caches in torch's hub folder (efficientnet_pytorch 0.7.1
# utils.url_map / url_map_advprop), by the timm weights that are ports of the same TF checkpoints.
CACHED_FILES = {
    **{f"timm/tf_efficientnet_b{i}.aa_in1k": f"efficientnet-b{i}-{h}.pth" for i, h in enumerate((
        "355c32eb", "f1951068", "8bb594d6", "5fb5a3c3", "6ed6700e", "b6417697", "c76e70fd", "dcc49843"))},
    **{f"timm/tf_efficientnet_b{i}.ap_in1k": f"adv-efficientnet-b{i}-{h}.pth" for i, h in enumerate((
        "b64d5a18", "0f3ce85a", "6e9d97e5", "cdd7c0f4", "44fb3a87", "86493f6b", "ac80338e", "4652b6dd",
        "22a8fe65"))},
}

# efficientnet_pytorch module -> timm module, outside the blocks
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# ... inside a block, by the kind of block timm built: InvertedResidual (expand ratio > 1) and
# DepthwiseSeparableConv (expand ratio 1: no expansion conv, so its BNs are numbered from 1)
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1",
                        "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
                        "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_MAPS = {"InvertedResidual": _INVERTED_RESIDUAL, "DepthwiseSeparableConv": _DEPTHWISE_SEPARABLE}
_STEM = "conv_stem.weight"
_CLASSIFIER = ("classifier.weight", "classifier.bias")
# every tensor of a module: convs and linears (weight, bias), BatchNorm (+ running statistics and
# the step counter, which carries no weight: a file without it loads with the model's own)
_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_layout(keys) -> bool:
    """True for a state dict in efficientnet_pytorch's layout (`_conv_stem.weight`, `_blocks.N.*`)."""
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in keys)


def fits_model(model_name: str) -> bool:
    """The timm models these files are ports for (tf_: TF padding and BN eps, as in efficientnet_pytorch)."""
    return model_name.partition(".")[0].startswith("tf_efficientnet_")


def timm_names(model: torch.nn.Module) -> dict[str, str]:
    """efficientnet_pytorch tensor name -> timm tensor name, for every tensor `model` has.

    (stage, block) pairs are read from `model.blocks` in order, which is the order in which
    efficientnet_pytorch numbers its blocks (both expand each stage's repeats in place)."""
    modules = dict(_TOP)
    for n, (stage, index, block) in enumerate(
            (s, b, blk) for s, blocks in enumerate(model.blocks) for b, blk in enumerate(blocks)):
        kind = type(block).__name__
        if kind not in _BLOCK_MAPS:
            raise ConfigError(f"timm block {kind} at blocks.{stage}.{index} has no efficientnet_pytorch "
                              "counterpart")
        for theirs, ours in _BLOCK_MAPS[kind].items():
            modules[f"_blocks.{n}.{theirs}"] = f"blocks.{stage}.{index}.{ours}"
    have = set(model.state_dict()) | set(_CLASSIFIER)  # timm keeps or drops the classifier itself
    return {f"{theirs}.{t}": f"{ours}.{t}" for theirs, ours in modules.items() for t in _TENSORS
            if f"{ours}.{t}" in have}


def to_timm(state: dict[str, torch.Tensor], model: torch.nn.Module, path: str | Path,
            model_name: str) -> dict[str, torch.Tensor]:
    """The file's tensors under timm's names for `model`; a ConfigError (one line) unless every
    tensor of the file finds its place, with its shape, and every tensor of the trunk is there.

    Left to timm's loader afterwards: the stem's input channels (timm sums the RGB filters for
    in_chans=1) and the classifier (dropped when the model has another number of classes)."""
    names = timm_names(model)
    own = model.state_dict()
    out, homeless, misshapen, seen = {}, [], [], set()
    for key, value in state.items():
        ours = names.get(key)
        if ours is None:
            homeless.append(key)
            continue
        seen.add(ours)
        want = value.shape if ours in _CLASSIFIER else own[ours].shape
        if ours == _STEM:  # (C, 3, k, k) ImageNet filters: timm adapts them to in_chans next
            want = want[:1] + value.shape[1:2] + want[2:]
        if value.shape != want:
            misshapen.append(f"{key} {tuple(value.shape)} vs {tuple(want)}")
            continue
        out[ours] = value
    absent = [k for k in own if k not in seen and k not in _CLASSIFIER and not k.endswith(".num_batches_tracked")]
    if homeless or misshapen or absent:
        raise ConfigError(f"{path}: weights do not fit model {model_name}: "
                          f"{problems(len(state), homeless, misshapen, absent)}; is it for another model?")
    return out


def problems(total: int, homeless: list[str], misshapen: list[str], absent: list[str]) -> str:
    said = []
    if homeless:
        said.append(f"{len(homeless)} of {total} tensors have no place in it ({_few(homeless)})")
    if misshapen:
        said.append(f"{len(misshapen)} of {total} have another shape ({_few(misshapen)})")
    if absent:
        said.append(f"{len(absent)} of its tensors are not in the file ({_few(absent)})")
    return "; ".join(said)


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def cached_file(hub_id: str) -> Path | None:
    """The file efficientnet_pytorch would have cached for these timm weights, if it is there:
    torch.hub.get_dir()/checkpoints (TORCH_HOME, default ~/.cache/torch)."""
    name = CACHED_FILES.get(hub_id)
    path = hub_checkpoints() / name if name else None
    return path if path is not None and path.is_file() else None


def hub_checkpoints() -> Path:
    """torch.hub.get_dir()/checkpoints; worked out as torch does (TORCH_HOME, XDG_CACHE_HOME) while
    torch is not imported yet, so the offline refusal need not wait for torch's import."""
    import sys

    if "torch" in sys.modules:  # torch.hub.set_dir() may have moved it
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"
