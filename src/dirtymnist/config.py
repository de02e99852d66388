"""One typed training config: code defaults -> preset YAML -> `--set key=value` overrides.

The resolved config is written to the run directory and stored in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dirtymnist.errors import ConfigError

# Keys that may change between a run and its resumption without changing the result.
RESUME_SAFE_KEYS = frozenset(
    {"num_workers", "log_every", "checkpoint_minutes", "keep_last", "tensorboard", "compile",
     "grad_checkpointing", "pretrained_record"}
)
RESUME_SAFE_KEYS |= {"tracking", "tracking_uri"}  # where metrics are logged, not what they are


@dataclass
class StageConfig:
    """One curriculum stage: where its data comes from, how long, and its learning rate."""

    name: str = "main"
    source: str = "data"  # data (the cached folder) | synth (scenes made on the fly) |
    # dense (scenes + letter position maps) | glyphs (single-glyph crops, softmax)
    epochs: int = 0  # epochs over the data (source=data); 0 = cfg.epochs
    steps: int = 0  # optimizer steps (source=synth/glyphs)
    lr: float = 0.0  # peak lr; 0 = cfg.lr
    knobs: dict = field(default_factory=dict)  # SceneKnobs overrides for source=synth/dense/glyphs
    pool: int = 0  # source=synth/dense/glyphs: reuse a fixed set of this many samples (0 = all fresh)
    dense_weight: float = 1.0  # source=dense: weight of the position-map loss beside image-level BCE


@dataclass
class TrainConfig:
    # --- model
    model: str = "resnet18"  # any timm model name
    in_chans: int = 1
    pretrained: str = ""  # "" (random init) | imagenet (alias hub: timm's weights via the HF cache) | PATH
    pretrained_record: str = ""  # what `pretrained` loaded (hub id@revision or path + sha256); set by train
    head: str = "timm"  # presence head: timm (its own global pool) | avg | max | lse | csra |
    # imagenet_silu (the 1,000-way ImageNet classifier kept, then SiLU, then Linear 1000->K)
    feature_stride: int = 0  # class-map heads: cut a timm trunk at this stride (8 / 16); 0 = its last stage
    lse_r: float = 5.0  # sharpness of log-sum-exp pooling (and csra's attention temperature)
    csra_lambda: float = 0.5  # weight of csra's attention term over the mean
    drop_rate: float = 0.0
    # --- input
    image_size: int = 128  # side fed to the network; 256 = native
    resize: str = "area"  # area | bilinear
    denoise: str = "none"  # none | threshold | median | ink (2 channels: grey + saturated-pixel share)
    normalize: str = "auto"  # auto (the pretrained weights' own, else unit) | unit (x/255) |
    # center ((x/255-0.5)/0.5) | imagenet
    augment: str = "rot90"  # augmentation preset (see transforms.AUGMENT_PRESETS)
    # --- optimisation
    epochs: int = 10
    batch_size: int = 32  # global batch (split over DDP ranks)
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adam | adamw | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | plateau | constant
    scheduler_interval: str = "step"  # step | epoch (cosine/step schedulers)
    warmup_epochs: float = 0.0
    step_size: int = 5
    gamma: float = 0.75
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    min_lr_ratio: float = 0.01
    loss: str = "bce"  # bce | softmargin | asl | focal
    grad_clip: float = 0.0  # max grad norm, 0 = off
    ema: float = 0.0  # EMA decay of weights, 0 = off
    swa_epochs: int = 0  # average the weights of the last N epochs into fold{k}/swa.pt (averaging.py), 0 = off
    mix: str = "none"  # none | mixup | cutmix (multi-label targets: see mixing.py)
    mix_alpha: float = 1.0  # lam ~ Beta(alpha, alpha)
    mix_prob: float = 0.5  # share of batches mixed
    sam_rho: float = 0.0  # sharpness-aware minimisation radius (0 = off; 0.05 is usual); 2 passes per step
    amp: str = "auto"  # auto (CUDA: bf16 at compute capability >= 8.0, fp16 below; bf16 on AMX CPUs; else off)
    channels_last: str = "auto"  # auto (on CUDA, and wherever amp resolves to bf16) | on | off
    compile: bool = False
    grad_checkpointing: bool = False  # timm's set_grad_checkpointing: blocks recomputed in backward, far less memory
    early_stopping: int = 0  # patience in epochs on best_metric, 0 = off
    time_limit: float = 0.0  # stop after the epoch in which training time reaches N minutes, 0 = off
    best_metric: str = "label_acc"  # label_acc (higher is better) | loss (lower is better)
    stages: list = field(default_factory=list)  # curriculum: list of StageConfig dicts
    # --- data
    folds_k: int = 5
    folds_method: str = "stratified"  # stratified | kfold
    folds_seed: int = 42
    subset: int = 0  # train on a label-balanced subset of N images (0 = all)
    pseudo: str = ""  # a `predict` .probs.npy of the test split: confident test images join training (pseudo.py)
    pseudo_margin: float = 0.4  # keep a test image when every letter has |p - 0.5| >= margin
    pseudo_targets: str = "hard"  # hard (0/1) | soft (the probabilities)
    pseudo_record: str = ""  # the pseudo file's sha256, set by train: a changed file refuses to resume
    num_workers: int = 0
    # --- run
    seed: int = 0
    deterministic: bool = True
    checkpoint_minutes: float = 0.0  # also checkpoint inside an epoch every N minutes
    keep_last: int = 0  # also keep the K newest epoch checkpoints (epoch{N}.pt); 0 = only last/best
    log_every: int = 20
    tensorboard: bool = False
    tracking: str = "none"  # none | mlflow (tracking.py: config, per-epoch metrics, checkpoints, report)
    tracking_uri: str = ""  # MLflow tracking URI; "" = a local store in RUN/../mlruns/
    preset: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "head": {"timm", "imagenet_silu", "avg", "max", "lse", "csra"},
    "resize": {"area", "bilinear"},
    "denoise": {"none", "threshold", "median", "ink"},
    "normalize": {"auto", "unit", "center", "imagenet"},
    "optimizer": {"adam", "adamw", "sgd"},
    "scheduler": {"cosine", "step", "plateau", "constant"},
    "scheduler_interval": {"step", "epoch"},
    "loss": {"bce", "softmargin", "asl", "focal"},
    "mix": {"none", "mixup", "cutmix"},
    "amp": {"auto", "bf16", "fp16", "off"},
    "channels_last": {"auto", "on", "off"},
    "best_metric": {"label_acc", "loss"},
    "folds_method": {"stratified", "kfold"},
    "tracking": {"none", "mlflow"},
    "pseudo_targets": {"hard", "soft"},
}
_STAGE_SOURCES = {"data", "synth", "dense", "glyphs"}


def preset_dir() -> Path:
    return Path(str(resources.files("dirtymnist") / "configs"))


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_config(preset: str | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults -> preset (a name in configs/ or a YAML path) -> overrides ("key=value")."""
    values: dict[str, Any] = {}
    if preset:
        path = Path(preset)
        if not path.suffix:
            path = preset_dir() / f"{preset}.yaml"
            if not path.is_file():
                raise ConfigError(
                    f"unknown preset {preset!r}; choose from {', '.join(list_presets())} or give a YAML path"
                )
        values.update(read_yaml_mapping(path))
        values.setdefault("preset", Path(preset).stem)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            key, value = parse_override(item)
            values[key] = value
    return config_from_dict(values)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    known = {f.name: f for f in fields(TrainConfig)}
    cfg = TrainConfig()
    for key, value in values.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{source}: unknown key {key!r}{extra}")
        setattr(cfg, key, _coerce(key, value, getattr(cfg, key), source))
    _validate(cfg, source)
    return cfg


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    if value is None:
        return default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in {"true", "1", "yes", "on"}:
                    return True
                if value.lower() in {"false", "0", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            if isinstance(value, bool) and key in ("amp", "channels_last"):  # YAML 1.1: bare on/off
                return "on" if value else "off"
            return str(value)
        if isinstance(default, list):
            if not isinstance(value, list):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {key}={value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


def _validate(cfg: TrainConfig, source: str) -> None:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(
                f"{source}: {key}={getattr(cfg, key)!r}; choose from {', '.join(sorted(choices))}"
            )
    if cfg.denoise == "ink" and cfg.in_chans != 2:
        raise ConfigError(f"{source}: denoise=ink gives 2 channels (grey, ink); set in_chans=2, got {cfg.in_chans}")
    if cfg.denoise != "ink" and cfg.in_chans not in (1, 3):
        raise ConfigError(f"{source}: in_chans must be 1 or 3 (2 only with denoise=ink), got {cfg.in_chans}")
    for key in ("epochs", "batch_size", "accum_steps", "image_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ConfigError(f"{source}: lr must be > 0, got {cfg.lr}")
    if not 0 <= cfg.ema < 1:
        raise ConfigError(f"{source}: ema must be in [0, 1), got {cfg.ema}")
    if not 0 <= cfg.pseudo_margin < 0.5:
        raise ConfigError(f"{source}: pseudo_margin must be in [0, 0.5), got {cfg.pseudo_margin}")
    if cfg.swa_epochs < 0:
        raise ConfigError(f"{source}: swa_epochs must be >= 0, got {cfg.swa_epochs}")
    if cfg.mix != "none" and not (cfg.mix_alpha > 0 and 0 < cfg.mix_prob <= 1):
        raise ConfigError(f"{source}: mix needs mix_alpha > 0 and 0 < mix_prob <= 1, "
                          f"got {cfg.mix_alpha} and {cfg.mix_prob}")
    if cfg.sam_rho < 0:
        raise ConfigError(f"{source}: sam_rho must be >= 0, got {cfg.sam_rho}")
    if cfg.sam_rho > 0 and (cfg.accum_steps > 1 or cfg.amp == "fp16"):
        raise ConfigError(f"{source}: sam_rho > 0 needs accum_steps 1 and no fp16 loss scaling (bf16 is fine)")
    if cfg.feature_stride not in (0, 4, 8, 16, 32):
        raise ConfigError(f"{source}: feature_stride must be 0, 4, 8, 16 or 32, got {cfg.feature_stride}")
    if cfg.folds_k < 2:
        raise ConfigError(f"{source}: folds_k must be >= 2, got {cfg.folds_k}")
    cfg.stages = [stage_from_dict(s, f"{source}: stages[{i}]") for i, s in enumerate(cfg.stages)]
    cfg.stages = [dataclasses.asdict(s) for s in cfg.stages]


def stage_from_dict(values: Any, source: str) -> StageConfig:
    if isinstance(values, StageConfig):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a stage is a mapping, got {values!r}")
    known = {f.name for f in fields(StageConfig)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{source}: unknown stage key {key!r}; known: {', '.join(sorted(known))}")
    stage = StageConfig(**values)
    if stage.source not in _STAGE_SOURCES:
        raise ConfigError(f"{source}: source={stage.source!r}; choose from {', '.join(sorted(_STAGE_SOURCES))}")
    if stage.source != "data" and stage.steps < 1:
        raise ConfigError(f"{source}: a {stage.source} stage needs steps >= 1")
    return stage


def read_yaml_mapping(path: Path, what: str = "preset") -> dict[str, Any]:
    """A YAML file holding a mapping; one-line ConfigErrors naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of key: value")
    return data


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ, ignoring those that do not change the result."""
    keys = sorted(set(old) | set(new))
    defaults = TrainConfig().to_dict()  # a key added since the run started has its default
    return [k for k in keys if k not in RESUME_SAFE_KEYS and old.get(k, defaults.get(k)) != new.get(k, defaults.get(k))]


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
