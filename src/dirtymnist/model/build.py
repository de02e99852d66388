"""Model factory: any timm backbone with a presence head, logits out (B, num_classes)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from dirtymnist.errors import ConfigError
from dirtymnist.model.safeload import torch_load_safe

log = logging.getLogger(__name__)


class ClassMapHead(nn.Module):
    """1x1 conv to per-class maps, then a spatial pool: letters are local, presence is "somewhere".

    pool: avg (mean over positions), max (strongest position), lse (log-sum-exp, between the two),
    csra (class-specific residual attention, Zhu & Wu 2021: mean + lam x softmax(r x map)-weighted
    mean of each class map).
    """

    POOLS = ("avg", "max", "lse", "csra")  # with timm and imagenet_silu: config.CHOICES["head"]

    def __init__(self, in_features: int, num_classes: int, pool: str, r: float = 5.0, drop: float = 0.0,
                 lam: float = 0.5):
        super().__init__()
        if pool not in self.POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose from {', '.join(self.POOLS)}")
        self.pool, self.r, self.lam = pool, r, lam
        self.drop = nn.Dropout2d(drop) if drop > 0 else nn.Identity()
        self.conv = nn.Conv2d(in_features, num_classes, kernel_size=1)

    def class_maps(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(feats))  # (B, K, h, w)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.pool_maps(self.class_maps(feats))

    def pool_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) class maps -> (B, K) presence logits."""
        maps = maps.flatten(2)  # (B, K, h*w)
        if self.pool in ("lse", "csra"):
            maps = maps.float()  # exp / softmax in fp32 under autocast
        if self.pool == "avg":
            return maps.mean(-1)
        if self.pool == "max":
            return maps.amax(-1)
        if self.pool == "csra":
            attention = torch.softmax(self.r * maps, dim=-1)
            return maps.mean(-1) + self.lam * (attention * maps).sum(-1)
        # lse: (1/r) log mean exp(r x) -- avg as r->0, max as r->inf. Written with a mean, not
        # logsumexp - log(h*w), so that an ONNX export keeps the map size dynamic (zoomed TTA views)
        z = self.r * maps
        top = z.amax(-1, keepdim=True).detach()
        return (top.squeeze(-1) + torch.log(torch.exp(z - top).mean(-1))) / self.r


class LetterNet(nn.Module):
    """A timm trunk + one of three tops:
    ClassMapHead (per-class maps, pooled), `top` (the seed team's SiLU + Linear after the kept
    1,000-way ImageNet classifier), or nothing (head=timm: the trunk's own classifier)."""

    def __init__(self, trunk: nn.Module, head: nn.Module | None, top: nn.Module | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.top = top

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        """Logits (B, K); with return_maps also the per-class maps (B, K, h, w) (dense targets)."""
        if self.head is None:
            if return_maps:
                raise ConfigError("dense (position) targets need a class-map head: head=avg|max|lse|csra")
            out = self.trunk(x)
            return self.top(out) if self.top is not None else out
        maps = self.head.class_maps(self.trunk.forward_features(x))
        logits = self.head.pool_maps(maps)
        return (logits, maps) if return_maps else logits


def build_model(cfg, num_classes: int) -> LetterNet:
    """The network for `cfg`, with the starting weights it asks for (see `weights.py`).

    The model remembers what it started from in `model.weights_record` (one line)."""
    import timm

    import dirtymnist.model.nets  # noqa: F401  (registers the dm_fcn* models with timm)
    from dirtymnist.model import weights
    src = weights.resolve(cfg)
    if src.kind == "timm_file" and timm.models.get_pretrained_cfg(cfg.model) is None:
        src.kind = "own_file"  # our own nets have no timm pretrained config to adapt with
    if src.kind == "hub" and not src.path:
        weights.require_hub(src)  # offline or no route: one line now, not a minute of retries
    if src.kind == "timm_file":
        weights.check_timm_file(src.path, cfg.model)
    kwargs = {"in_chans": cfg.in_chans, "pretrained": src.kind in ("hub", "passthrough", "timm_file", "effnet_file")}
    if src.path and src.kind in ("hub", "timm_file", "effnet_file"):
        kwargs["pretrained_cfg_overlay"] = {"file": src.path}  # timm loads + adapts; no network
    if src.kind == "effnet_file":
        kwargs["pretrained_filter_fn"] = _effnet_renamer(cfg.model, src.path)
    try:
        model = _build(cfg, num_classes, timm, kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid model" in str(exc):
            hint = timm.list_models(f"*{cfg.model[:6]}*")[:5]
            raise ConfigError(f"model={cfg.model!r} is not a timm model (close: {', '.join(hint) or 'none'})") from None
        if src.path:
            raise ConfigError(f"{src.path}: weights do not fit model {cfg.model} "
                              f"({str(exc).splitlines()[0][:200]})") from None
        raise
    except Exception as exc:  # noqa: BLE001 - a hub download that failed: say so in one line
        if src.kind in ("hub", "passthrough") and _is_hub_failure(exc):
            raise weights.missing_hub_weights(src, type(exc).__name__) from None
        raise
    if src.kind == "hub" and not src.path:
        src = weights.resolve(cfg)  # downloaded just now: record the cached file and revision
    if src.kind == "own_file":
        load_own(model, src.path)
    if cfg.grad_checkpointing:
        if not hasattr(model.trunk, "set_grad_checkpointing"):
            raise ConfigError(f"grad_checkpointing=on: model {cfg.model} does not support it (timm models do)")
        model.trunk.set_grad_checkpointing(True)
    model.weights_record = weights.describe(src)
    return model


def _effnet_renamer(model_name: str, path: str):
    """timm's filter for an efficientnet_pytorch file: renamed to timm's layout (every tensor
    placed, or a one-line error) before timm adapts the stem and drops the classifier."""
    from dirtymnist.model import effnet_pytorch

    if not effnet_pytorch.fits_model(model_name):
        raise ConfigError(f"{path}: an efficientnet_pytorch weights file fits timm's tf_efficientnet_* "
                          f"models (same padding and BN eps), not model {model_name}")
    return lambda state, model: effnet_pytorch.to_timm(state, model, path, model_name)


def _build(cfg, num_classes: int, timm, kwargs: dict) -> LetterNet:
    if cfg.head == "timm":
        return LetterNet(timm.create_model(cfg.model, num_classes=num_classes, drop_rate=cfg.drop_rate,
                                           **kwargs), None)
    if cfg.head == "imagenet_silu":  # the 9th-place team: ImageNet logits -> SiLU -> Linear(1000, K)
        trunk = timm.create_model(cfg.model, num_classes=1000, drop_rate=cfg.drop_rate, **kwargs)
        return LetterNet(trunk, None, nn.Sequential(nn.SiLU(), nn.Linear(1000, num_classes)))
    trunk = timm.create_model(cfg.model, num_classes=0, global_pool="", **kwargs)
    channels = trunk.num_features
    if cfg.feature_stride:  # drop the stages after that stride: finer maps, less compute
        info = getattr(trunk, "feature_info", None) or []
        strides = [f["reduction"] for f in info]
        if cfg.feature_stride not in strides or not hasattr(trunk, "prune_intermediate_layers"):
            raise ConfigError(f"feature_stride={cfg.feature_stride}: model {cfg.model} can be cut at "
                              f"strides {', '.join(map(str, strides)) or 'none'}")
        idx = strides.index(cfg.feature_stride)
        trunk.prune_intermediate_layers(indices=[idx], prune_norm=True, prune_head=True)
        channels = info[idx]["num_chs"]
    head = ClassMapHead(channels, num_classes, cfg.head, cfg.lse_r, cfg.drop_rate, cfg.csra_lambda)
    return LetterNet(trunk, head)


def _is_hub_failure(exc: Exception) -> bool:
    """Errors of huggingface_hub and its HTTP clients (no network, no such file in the cache)."""
    mods = {type(e).__module__.split(".")[0] for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(mods & {"huggingface_hub", "requests", "httpx", "httpcore", "urllib3", "socket"}) or \
        isinstance(exc, (ConnectionError, TimeoutError))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch file (weights_only, never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch_load_safe(path)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file
        raise ConfigError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # one of our checkpoints
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state, dict) and key in state:
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a state dict")
    return state


def _adapt_stem(chans: int, weight: torch.Tensor, adapt_input_conv) -> torch.Tensor:
    """A stem conv's weights for `chans` input channels: 3 <-> 1 like timm; 1 -> 2 (grey + the
    `ink` channel) keeps the grey filters and starts the new channel at zero."""
    have = weight.shape[1]
    if have == 1 and chans == 2:
        return torch.cat([weight, torch.zeros_like(weight)], dim=1)
    if have == 2 and chans == 1:
        return weight[:, :1].clone()
    try:
        return adapt_input_conv(chans, weight)
    except (NotImplementedError, RuntimeError, ValueError):
        return weight  # left as is: the shape check then skips it


def check_weights_fit(cfg, num_classes: int) -> None:
    """Build the model once when its start is a local weights file (ours or timm-format), so a
    file that does not fit is refused before a run records anything; hub weights are left to
    `weights.settle` and the real build."""
    from dirtymnist.model import weights

    if weights.resolve(cfg).kind in ("own_file", "timm_file", "effnet_file"):
        build_model(cfg, num_classes)


def load_own(model: LetterNet, path: str | Path) -> None:
    """Load our own trunk files (`dirtymnist pretrain`, checkpoints: keys `trunk.*`/`head.*`; or a
    plain state dict of one of our `dm_fcn` nets) into the model; the head stays fresh where
    shapes differ. timm-format files of timm models go through timm instead (`build_model`)."""
    from timm.models import adapt_input_conv

    state = read_weights(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not any(k.startswith("trunk.") for k in state):
        state = {f"trunk.{k}": v for k, v in state.items()}
    own = model.state_dict()
    loaded, skipped = {}, []
    for key, value in state.items():
        if key not in own:
            skipped.append(key)
            continue
        target = own[key]
        if value.shape != target.shape and value.ndim == 4 and value.shape[0] == target.shape[0]:
            value = _adapt_stem(target.shape[1], value, adapt_input_conv)
        if value.shape != target.shape:
            skipped.append(key)
            continue
        loaded[key] = value
    trunk_keys = [k for k in own if k.startswith("trunk.")]
    missing_trunk = [k for k in trunk_keys if k not in loaded]
    if len(missing_trunk) > 0.5 * len(trunk_keys):
        raise ConfigError(
            f"{path}: weights do not fit model {model.trunk.__class__.__name__} "
            f"({len(missing_trunk)}/{len(trunk_keys)} backbone tensors missing or of another shape)"
        )
    model.load_state_dict(loaded, strict=False)
    log.info("pretrained: loaded %d tensors from %s (%d skipped)", len(loaded), path, len(skipped))


def total_stride(cfg) -> int:
    """How many input pixels one cell of the model's last feature map spans (8 for dm_fcn).

    Measured with one forward pass on the meta device: no memory, no compute, any timm model.
    """
    import dataclasses

    probe = 256
    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg, pretrained=""), 1)
        feats = model.trunk.forward_features(torch.empty(1, cfg.in_chans, probe, probe))
    return max(1, probe // feats.shape[-1])


def check_input_size(cfg) -> None:
    """Refuse an image_size smaller than the model's total stride (an empty or useless input)."""
    stride = total_stride(cfg)
    if cfg.image_size < stride:
        raise ConfigError(f"image_size={cfg.image_size} is smaller than the total stride {stride} of "
                          f"model {cfg.model}: nothing would be left to see; use image_size >= {stride}")
