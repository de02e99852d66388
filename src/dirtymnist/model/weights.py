"""Where a backbone's starting weights come from: ImageNet through timm / the HF hub, or a file.

`pretrained` in a config is one of
  ""                      random initialisation;
  ready                   the package's own weights for the model, trained offline on generated
                          scenes (`model/ready/<model>.safetensors`: dm_fcn, dm_fcn_deep); a model
                          without them starts from random initialisation, with a warning, as
                          timm does for `pretrained=True` on a model without weights;
  ready.TAG               another set of the package's weights for the model, like timm's
                          `model.tag` names (`model/ready/<model>.TAG.safetensors`, e.g.
                          `ready.192px`: trained further at 192 px); a missing TAG is an error;
  imagenet (alias hub)    the model's default timm weights, through timm's own loader and the
                          Hugging Face cache (HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE as usual);
                          offline-first: a cached file loads without touching the network;
                          for the seed's efficientnet_pytorch weights, the file that library
                          caches in torch's hub folder is used first (`effnet_pytorch.py`);
  PATH                    a timm-format state dict (.safetensors / .pth / .bin), handed to timm
                          as `pretrained_cfg_overlay=dict(file=PATH)` so timm adapts the stem to
                          `in_chans` and drops the classifier; an efficientnet_pytorch file for a
                          tf_efficientnet_* model, renamed to timm's layout on the way
                          (`effnet_pytorch.py`); or one of our own trunk files (`dirtymnist
                          pretrain`, a checkpoint), loaded by `models.load_own`. A file whose
                          tensors do not all find their place in the model is refused in one line.
Model names `hf-hub:ORG/REPO` and `local-dir:PATH` carry their own weights: `imagenet` loads
them through timm unchanged.

`resolve(cfg)` says which of these applies (`WeightsSource`) without touching the network;
`describe(...)` gives the one-line record kept in config.yaml, run.json and the report.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dirtymnist.errors import ConfigError
from dirtymnist.model import effnet_pytorch

log = logging.getLogger(__name__)

HUB_WORDS = frozenset({"imagenet", "hub", "true", "yes"})
READY = "ready"
READY_DIR = Path(__file__).resolve().parent / "ready"  # package data: <model>.safetensors
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the hub for, in order


@dataclass
class WeightsSource:
    """kind: none | hub (timm's default weights) | passthrough (hf-hub:/local-dir: names) |
    timm_file (a timm-format state dict) | effnet_file (efficientnet_pytorch's layout) |
    own_file (our trunk files and checkpoints)."""

    kind: str
    path: str = ""  # the file that will be loaded (hub: the cached file, "" when not cached)
    note: str = ""  # ready: which weights, or why there are none
    hub_id: str = ""  # hub: e.g. timm/tf_efficientnet_b7.aa_in1k
    revision: str = ""  # hub: the cached snapshot's commit hash


def is_hub(pretrained: str) -> bool:
    return pretrained.strip().lower() in HUB_WORDS


def resolve(cfg) -> WeightsSource:
    """Which weights `cfg` asks for; hub weights are looked up in the local cache only."""
    p = cfg.pretrained.strip()
    if not p:
        return WeightsSource("none")
    if p.lower() == READY:
        return _resolve_ready(cfg.model)
    if p.lower().startswith(READY + ".") and not Path(p).expanduser().is_file():
        return _resolve_ready_tag(cfg.model, p[len(READY) + 1:])
    if is_hub(p):
        if cfg.model.startswith(("hf-hub:", "local-dir:")):
            return WeightsSource("passthrough", hub_id=cfg.model)
        return _resolve_hub(cfg.model)
    path = Path(p).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained weights file not found")
    keys = _tensor_keys(path)
    if _is_own_file(keys):
        return WeightsSource("own_file", path=str(path))
    return WeightsSource("effnet_file" if effnet_pytorch.is_layout(keys) else "timm_file", path=str(path))


def ready_models() -> list[str]:
    """The models the package ships ready weights for (`pretrained: ready`)."""
    return sorted(n for n in _ready_names() if "." not in n)


def ready_tags(model: str) -> list[str]:
    """The tags of the model's other ready weights (`pretrained: ready.TAG`)."""
    return sorted(n.removeprefix(model + ".") for n in _ready_names() if n.startswith(model + "."))


def _ready_names() -> list[str]:
    return [f.name.removesuffix(".safetensors") for f in READY_DIR.glob("*.safetensors")]


def ready_path(model: str, tag: str = "") -> Path:
    """The package file of the model's ready weights: <model>.safetensors or <model>.TAG.safetensors."""
    return READY_DIR / (f"{model}.{tag}.safetensors" if tag else f"{model}.safetensors")


def _resolve_ready_tag(model: str, tag: str) -> WeightsSource:
    path = ready_path(model, tag)
    if not path.is_file():
        have = ", ".join(f"ready.{t}" for t in ready_tags(model)) or "none"
        raise ConfigError(f"pretrained=ready.{tag}: the package has no such weights for model {model} "
                          f"(tagged ready weights for it: {have}; plain `ready` for: "
                          f"{', '.join(ready_models()) or 'none'})")
    return WeightsSource("own_file", path=str(path), note=f"ready weights {path.name}")


def _resolve_ready(model: str) -> WeightsSource:
    path = ready_path(model)
    if path.is_file():
        return WeightsSource("own_file", path=str(path), note=f"ready weights {path.name}")
    if model not in _WARNED:  # resolve() runs several times per run: say it once
        _WARNED.add(model)
        log.warning("pretrained=ready: no ready weights for model %s (there are for: %s); random "
                    "initialisation", model, ", ".join(ready_models()) or "none")
    return WeightsSource("none", note=f"no ready weights for {model}")


_WARNED: set[str] = set()


def _resolve_hub(model: str) -> WeightsSource:
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(model)
    hub_id = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    if not hub_id:
        raise ConfigError(f"model={model!r} has no ImageNet weights in timm; pass a file "
                          "(--set pretrained=/path/weights.safetensors) or use random init (pretrained=)")
    repo, _, revision = hub_id.partition("@")
    theirs = effnet_pytorch.cached_file(repo)  # the seed's library cached the same checkpoint
    if theirs is not None:
        return WeightsSource("effnet_file", path=str(theirs), hub_id=repo,
                             note=f"efficientnet_pytorch's {theirs} for {repo}")
    files = (pcfg.hf_hub_filename,) if getattr(pcfg, "hf_hub_filename", None) else _HF_FILES
    for name in files:
        found = _cached_file(repo, name, revision or None)
        if found:
            return WeightsSource("hub", path=found, hub_id=repo,
                                 revision=Path(found).parent.name if "snapshots" in found else "")
    return WeightsSource("hub", hub_id=repo, revision=revision)


def _cached_file(repo: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return found if isinstance(found, str) and os.path.isfile(found) else None


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def missing_hub_weights(src: WeightsSource, cause: str = "") -> ConfigError:
    """The one line for weights that are neither cached nor downloadable right now."""
    why = "HF_HUB_OFFLINE is set" if hub_offline() else (cause or "the hub cannot be reached")
    theirs = effnet_pytorch.CACHED_FILES.get(src.hub_id)
    nor = f" nor as {effnet_pytorch.hub_checkpoints() / theirs} (efficientnet_pytorch)" if theirs else ""
    return ConfigError(
        f"ImageNet weights {src.hub_id} are not in the Hugging Face cache {hub_cache_dir()}{nor} and "
        f"cannot be downloaded ({why}); run once with a network, or `hf download {src.hub_id}`, "
        "or pass a file: --set pretrained=/path/weights.safetensors")


def require_hub(src: WeightsSource, timeout: float = 2.0) -> None:
    """Refuse at once, in one line, hub weights that are not cached when the hub cannot be
    reached: HF_HUB_OFFLINE, or no connection to its host (or proxy) within `timeout` seconds.
    Without this the hub client retries for about a minute, a log line per retry."""
    if hub_offline():
        raise missing_hub_weights(src)
    why = _no_route(timeout)
    if why:
        raise missing_hub_weights(src, why)


def precheck_hub(cfg) -> None:
    """The offline refusal in seconds, before torch and timm are imported (~5 s of a 2-core CPU):
    for `pretrained: imagenet` on a model named with its weights' tag (timm's `name.tag`, as the
    presets name theirs, hub repo `timm/name.tag`), refuse at once when neither cache holds the
    weights and the hub cannot be reached. Anything else is left to the full lookup (`resolve`)."""
    if cfg.pretrained.strip().lower() not in HUB_WORDS or "." not in cfg.model or ":" in cfg.model:
        return
    src = WeightsSource("hub", hub_id=f"timm/{cfg.model}")
    if effnet_pytorch.cached_file(src.hub_id) is None and not any(
            _cached_file(src.hub_id, name, None) for name in _HF_FILES):
        require_hub(src)


def _no_route(timeout: float) -> str:
    """Why the hub's endpoint (HF_ENDPOINT, through the proxy the environment names) cannot be
    reached, or "" when a TCP connection to it opens. DNS has no timeout of its own: the probe
    runs in a thread that is given up after `timeout` seconds."""
    import socket
    import threading
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = getproxies().get(url.scheme) if host and not proxy_bypass(host) else None
    if proxy:
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = via.hostname or host, via.port or (443 if via.scheme == "https" else 80)
    result: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append("")
        except OSError as exc:
            result.append(f"no route to {host}:{port}: {exc.strerror or type(exc).__name__}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {host}:{port} in {timeout:g} s"


def check_timm_file(path: str | Path, model_name: str) -> None:
    """Refuse, in one line, a timm-format file whose tensor names are not the model's: timm itself
    loads such a file non-strictly when it drops the classifier, so a foreign file would leave the
    whole trunk at random initialisation behind one very long warning. Names only: shapes that
    differ are timm's to refuse (or adapt: the stem's input channels)."""
    import timm
    import torch
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path))  # what timm's loader will see (EMA / state_dict keys)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file
        raise ConfigError(f"{path}: cannot read weights ({type(exc).__name__})") from None
    with torch.device("meta"):  # names only: no memory, no initialisation
        net = timm.create_model(model_name, pretrained=False)
    keys = list(_as_timm_converts(state, net))
    own = list(net.state_dict())
    classifier = net.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    mine = set(own)
    homeless = [k for k in keys if k not in mine]
    placed = set(keys) | {k for k in own if k.startswith(tuple(f"{c}." for c in classifier))}
    absent = [k for k in own if k not in placed and not k.endswith(".num_batches_tracked")]
    if homeless or absent:
        raise ConfigError(f"{path}: weights do not fit model {model_name}: "
                          f"{effnet_pytorch.problems(len(keys), homeless, [], absent)}; "
                          "is it for another model?")


def _as_timm_converts(state: dict, net) -> dict:
    """`state` renamed as timm's loader renames it for `net`: the model family's own
    `checkpoint_filter_fn` converts original layouts (FB ConvNeXt, OpenCLIP towers, ...), so such a
    file fits although its names are not the model's. A filter that cannot run here leaves them."""
    import sys

    convert = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return state
    try:
        return convert(state, net)
    except Exception:  # noqa: BLE001 - then the names are checked as they are
        return state


def _is_own_file(keys: set[str]) -> bool:
    """Our `pretrain` output and our checkpoints name their tensors `trunk.*` / hold `model`."""
    return any(k.startswith(("trunk.", "head.", "model.trunk.")) for k in keys) or keys == {"model"}


def _tensor_keys(path: Path) -> set[str]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return set(f.keys())
        from dirtymnist.model.safeload import torch_load_safe

        state = torch_load_safe(path)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file
        raise ConfigError(f"{path}: cannot read weights ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "config" in state:
        return {"model"}
    return set(state) if isinstance(state, dict) else set()


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(src: WeightsSource) -> str:
    """One line: what was loaded, so a run records exactly which weights it started from."""
    if src.kind == "none":
        return f"random init ({src.note})" if src.note else "random init"
    if src.note:
        return f"{src.note} (sha256 {sha256(src.path)[:16]})"
    if src.kind == "passthrough":
        return f"timm weights of {src.hub_id}"
    if src.kind == "hub":
        where = f" ({Path(src.path).name}, sha256 {sha256(src.path)[:16]})" if src.path else ""
        return f"hub {src.hub_id}@{src.revision or 'main'}{where}"
    kind = "efficientnet_pytorch file" if src.kind == "effnet_file" else src.kind.replace("_", " ")
    return f"file {src.path} (sha256 {sha256(src.path)[:16]}, {kind})"


def data_normalize(model_name: str) -> str:
    """The normalisation (unit / center / imagenet) closest to the weights' own data config
    (timm's pretrained config; for hf-hub: / local-dir: names, the repo's config.json)."""
    mean = None
    if model_name.startswith(("hf-hub:", "local-dir:")):
        mean = _repo_config(model_name).get("pretrained_cfg", {}).get("mean")
    else:
        from timm.models import get_pretrained_cfg

        mean = getattr(get_pretrained_cfg(model_name), "mean", None)
    mean = tuple(mean or (0.485, 0.456, 0.406))  # timm's default when a config says nothing
    if all(abs(m - 0.5) < 1e-3 for m in mean):
        return "center"
    if all(abs(m) < 1e-3 for m in mean):
        return "unit"
    return "imagenet"


def _repo_config(model_name: str) -> dict:
    import json

    kind, _, where = model_name.partition(":")
    path = Path(where) / "config.json" if kind == "local-dir" else _cached_file(where.partition("@")[0], "config.json", None)
    try:
        return json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def settle(cfg):
    """Before a run writes its config: fetch hub weights missing from the cache (one download,
    through huggingface_hub, into the usual cache), resolve `normalize: auto`, and fill
    `pretrained_record`. Returns the updated config; nothing is loaded into a model here."""
    import dataclasses

    src = resolve(cfg)
    if src.kind == "hub" and not src.path:
        _download(src)
        src = resolve(cfg)
    normalize = cfg.normalize
    if normalize == "auto":
        imagenet_like = ("hub", "timm_file", "effnet_file", "passthrough")
        normalize = data_normalize(cfg.model) if src.kind in imagenet_like else "unit"
    return dataclasses.replace(cfg, normalize=normalize, pretrained_record=describe(src))


def _download(src: WeightsSource) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    require_hub(src)
    last: Exception | None = None
    for name in _HF_FILES:  # timm's order: safetensors first
        try:
            hf_hub_download(src.hub_id, name, revision=src.revision or None)
            return
        except LocalEntryNotFoundError:  # (an EntryNotFoundError too) no connection, not no file
            raise missing_hub_weights(src, "the hub cannot be reached") from None
        except EntryNotFoundError as exc:
            last = exc
        except Exception as exc:  # noqa: BLE001 - no network, no such repo: one line
            raise missing_hub_weights(src, type(exc).__name__) from None
    raise missing_hub_weights(src, f"no weights file in the repo ({type(last).__name__})")
