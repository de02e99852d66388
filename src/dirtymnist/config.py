"""One typed training config: code defaults -> preset YAML (with `base:`) -> `--set key=value` overrides.

A config is a recipe (`Recipe`: what changes the result -- model, input, optimisation, data, seed)
plus run options (`RunOptions`: how a run is carried out -- loader workers, checkpoint cadence,
logging, tracking). A run resumes only under the same recipe; its run options may change.
`TrainConfig` is both as one flat set of keys (`cfg.lr`, `cfg.num_workers`), written to the run
folder (config.yaml) and stored in every checkpoint.

Presets live in configs/. A preset may start from another one (`base: cpu`, or a YAML path
relative to the preset) and change some keys; a key it names replaces the base's value whole
(a `stages` list too). Every key that takes a name is checked against `CHOICES` when the config
is loaded, not at the first training step. This module imports no torch: `dirtymnist --help`
and the data commands stay light.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dirtymnist.errors import ConfigError

log = logging.getLogger(__name__)

# The names each key may take, in one place. The modules that act on them are checked against
# these lists (tests/test_config.py), so a name added on one side only fails a test.
CHOICES: dict[str, tuple[str, ...]] = {
    "head": ("timm", "imagenet_silu", "avg", "max", "lse", "csra"),  # model/build.py
    "resize": ("area", "bilinear"),  # model/transforms.preprocess
    "denoise": ("none", "threshold", "median", "ink"),  # model/transforms.preprocess
    "normalize": ("auto", "unit", "center", "imagenet"),  # model/weights.settle, transforms.normalize
    "augment": ("none", "rot90", "d4", "seed", "winner"),  # model/transforms.AUGMENT_PRESETS
    "optimizer": ("adam", "adamw", "sgd"),  # train/
    "scheduler": ("cosine", "step", "plateau", "constant"),  # train/
    "scheduler_interval": ("step", "epoch"),  # train/
    "loss": ("bce", "softmargin", "asl", "focal"),  # train/losses.build_loss
    "dense_target": ("sigmoid", "softmax"),  # train/losses.DENSE_LOSSES
    "mix": ("none", "mixup", "cutmix"),  # train/mixing.KINDS
    "amp": ("auto", "bf16", "fp16", "off"),  # model/precision.resolve_amp
    "channels_last": ("auto", "on", "off"),  # model/precision.use_channels_last
    "best_metric": ("label_acc", "loss"),  # train/
    "folds_method": ("stratified", "kfold"),  # data/folds.METHODS
    "pseudo_targets": ("hard", "soft"),  # train/pseudo.make_targets
    "tracking": ("none", "mlflow"),  # tracking.start_tracking
}
STAGE_SOURCES = ("data", "synth", "dense", "glyphs")  # a stage's `source` (train/stages.py)
AUTO_CHANS = 0  # in_chans: derived from denoise

# Keys that configs once had and no code reads any more. A stored config (a run's config.yaml,
# a checkpoint's) may still carry them: they are dropped on reading. A preset or --set naming
# one is an error, like any unknown key.
REMOVED_KEYS = {"log_every": "it was never read"}


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
    hard_share: float = 0.0  # source=synth/dense: share of each batch drawn with `hard_knobs` too
    hard_knobs: dict = field(default_factory=dict)  # SceneKnobs overrides on top of `knobs` for those


@dataclass
class Recipe:
    """What changes the result: a run resumes only when every one of these is the same."""

    # --- model
    model: str = "resnet18"  # any timm model name
    in_chans: int = AUTO_CHANS  # 0 or auto = from denoise: 2 with ink (grey, ink share), else 1;
    # set 3 on purpose for ImageNet's RGB stem (the seed preset); a value denoise contradicts is an error
    pretrained: str = ""  # "" (random init) | ready (the package's own, model/ready/) | imagenet (alias hub: timm's weights via the HF cache) | PATH
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
    augment: str = "rot90"  # none | rot90 | d4 | seed | winner (transforms.AUGMENT_PRESETS)
    # --- optimisation
    epochs: int = 10
    epoch_fraction: float = 1.0  # share of the fold's training rows a data-stage epoch draws (a fresh
    # shuffle each epoch, so every row is seen over the epochs); `run --minutes` sets it to fit the budget
    batch_size: int = 32  # global batch (split over DDP ranks)
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adam | adamw | sgd
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # cosine | step | plateau | constant
    scheduler_interval: str = "step"  # step | epoch: when cosine / constant move (step and plateau move once per epoch)
    warmup_epochs: float = 0.0
    step_size: int = 5  # scheduler=step: epochs per decay
    gamma: float = 0.75  # scheduler=step: decay factor
    plateau_patience: int = 2  # scheduler=plateau: epochs without a lower validation loss
    plateau_factor: float = 0.5  # scheduler=plateau: decay factor
    min_lr_ratio: float = 0.01  # cosine floor, as a share of the peak lr
    loss: str = "bce"  # bce | softmargin | asl | focal
    dense_target: str = "sigmoid"  # dense stages: 26 focal sigmoids per cell | softmax over 26
    # letters + background per cell (letters rarely share a cell; issue 14, lever 2)
    dense_softmax_epochs: int = 0  # dense_target softmax for the plan's first N epochs, then as set
    grad_clip: float = 0.0  # max grad norm, 0 = off
    ema: float = 0.0  # EMA decay of weights, 0 = off
    distill: float = 0.0  # dense stages: + distill x the class-map KL to `teacher`'s maps (0 = off; issue 14, lever 5)
    teacher: str = ""  # the teacher's weights: ready | ready.TAG | PATH (of `teacher_model`)
    teacher_model: str = ""  # the teacher's net ("" = `model`)
    swa_epochs: int = 0  # average the weights of the last N epochs into fold{k}/swa.pt (averaging.py), 0 = off
    mix: str = "none"  # none | mixup | cutmix (multi-label targets: see mixing.py)
    mix_alpha: float = 1.0  # lam ~ Beta(alpha, alpha)
    mix_prob: float = 0.5  # share of batches mixed
    sam_rho: float = 0.0  # sharpness-aware minimisation radius (0 = off; 0.05 is usual); 2 passes per step
    amp: str = "auto"  # auto (CUDA: bf16 at compute capability >= 8.0, fp16 below; bf16 on AMX CPUs; else off) |
    # bf16 | fp16 | off
    channels_last: str = "auto"  # auto (on CUDA, and wherever amp resolves to bf16) | on | off
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
    # --- randomness
    seed: int = 0
    deterministic: bool = True


@dataclass
class RunOptions:
    """How a run is carried out, not what it computes: free to change when a run resumes."""

    num_workers: int = 0  # loader processes; batches are the same for any number
    checkpoint_minutes: float = 0.0  # also checkpoint inside an epoch every N minutes
    keep_last: int = 0  # also keep the K newest epoch checkpoints (epoch{N}.pt); 0 = only last/best
    tensorboard: bool = False  # also log to fold{k}/tb/
    tracking: str = "none"  # none | mlflow (tracking.py: config, per-epoch metrics, checkpoints, report)
    tracking_uri: str = ""  # MLflow tracking URI; "" = a local store in RUN/../mlruns/
    compile: bool = False  # torch.compile: speed, not the recipe
    grad_checkpointing: bool = False  # timm's set_grad_checkpointing: blocks recomputed in backward, far less memory
    pretrained_record: str = ""  # what `pretrained` loaded (hub id@revision or path + sha256); set by train
    preset: str = ""  # the preset's name: a label for runs/ and reports


@dataclass
class TrainConfig(RunOptions, Recipe):
    """The config a run is made with: its Recipe and its RunOptions, one flat set of keys."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPE_KEYS = tuple(f.name for f in fields(Recipe))
RUN_OPTION_KEYS = tuple(f.name for f in fields(RunOptions))
# The one set of keys that do not change results: they may differ between a run and its
# resumption, and the runs table does not compare them. Derived, never listed by hand.
RESUME_SAFE_KEYS = frozenset(RUN_OPTION_KEYS) | frozenset(REMOVED_KEYS)


def preset_dir() -> Path:
    return Path(str(resources.files("dirtymnist") / "configs"))


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_config(preset: str | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults -> preset (a name in configs/ or a YAML path, its `base:` chain applied) -> overrides
    ("key=value" strings, or a dict). Errors name the file (or --set) that gave the bad value."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}  # key -> the file (or --set) its value came from
    if preset:
        values, origin = read_preset(_preset_path(preset))
        values.setdefault("preset", Path(preset).stem)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    for key, value in items:
        values[key], origin[key] = value, "--set"
    return _build(values, lambda key: origin.get(key, "config"), stored=False)


def read_preset(path: Path, _chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """A preset's keys with its `base:` chain applied: ({key: value}, {key: the file that set it}).

    A key the preset names replaces the base's value whole (lists such as `stages` too); the
    base's own `preset` name is not inherited."""
    values = read_yaml_mapping(path)
    base = values.pop("base", None)
    origin = {key: str(path) for key in values}
    if base is None:
        return values, origin
    chain = (*_chain, path.resolve())
    base_path = _preset_path(base, named_in=path)
    if base_path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base_path))
        raise ConfigError(f"{path}: base {base!r} makes a cycle ({cycle})")
    inherited, inherited_origin = read_preset(base_path, chain)
    inherited.pop("preset", None)
    return {**inherited, **values}, {**inherited_origin, **origin}


def _preset_path(name: Any, named_in: Path | None = None) -> Path:
    """A preset name (configs/NAME.yaml) or a YAML path (relative to the preset naming it as base)."""
    where = f"{named_in}: base" if named_in else "preset"
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} must be a preset name or a YAML path, got {name!r}")
    path = Path(name)
    if not path.suffix:
        path = preset_dir() / f"{name}.yaml"
        if not path.is_file():
            what = f"{named_in}: unknown base" if named_in else "unknown preset"
            raise ConfigError(f"{what} {name!r}; choose from {', '.join(list_presets())} or give a YAML path"
                              f"{_did_you_mean(name, list_presets())}")
        return path
    if named_in is not None and not path.is_absolute():
        path = named_in.parent / path
    if named_in is not None and not path.is_file():
        raise ConfigError(f"{where} {name!r}: {path} not found")
    return path


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """A stored config (a run's config.yaml, a checkpoint's, an export's) as a TrainConfig; keys
    removed since it was written are dropped, any other unknown key is an error naming `source`."""
    return _build(values, lambda key: source, stored=True)


def _build(values: dict[str, Any], source: Callable[[str], str], *, stored: bool) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig()
    for key, value in values.items():
        if key not in known:
            if stored and key in REMOVED_KEYS:
                log.debug("%s: dropped the removed key %r (%s)", source(key), key, REMOVED_KEYS[key])
                continue
            extra = f" (removed: {REMOVED_KEYS[key]})" if key in REMOVED_KEYS else _did_you_mean(key, known)
            raise ConfigError(f"{source(key)}: unknown key {key!r}{extra}")
        setattr(cfg, key, _coerce(key, value, getattr(cfg, key), source(key)))
    _validate(cfg, source)
    return cfg


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    hint = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


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
        if isinstance(value, bool) and isinstance(default, (int, float)):
            raise ValueError(value)  # YAML's true/on is no number: `epochs: true` would train 1 epoch
        if isinstance(default, int):
            if key == "in_chans" and value == "auto":
                return AUTO_CHANS
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            number = float(value)
            if not math.isfinite(number):  # nan / inf pass every range check and fail deep in torch
                raise ValueError(value)
            return number
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


def check_choice(source: str, key: str, value: Any, choices: Iterable[str]) -> None:
    """One line naming the source, the key, the bad value and its choices (and the closest one)."""
    choices = sorted(choices)
    if value not in choices:
        raise ConfigError(f"{source}: {key}={value!r}; choose from {', '.join(choices)}"
                          f"{_did_you_mean(value, choices)}")


def _settle_in_chans(cfg: TrainConfig, source: Callable[[str], str]) -> None:
    """in_chans from denoise (ink: grey + ink share = 2, else 1), or an explicit value that fits it."""
    if cfg.in_chans == AUTO_CHANS:
        cfg.in_chans = 2 if cfg.denoise == "ink" else 1
    elif cfg.denoise == "ink" and cfg.in_chans != 2:
        elsewhere = f" ({source('denoise')})" if source("denoise") != source("in_chans") else ""
        raise ConfigError(f"{source('in_chans')}: denoise=ink{elsewhere} gives 2 channels (grey, ink), "
                          f"in_chans={cfg.in_chans} contradicts it; set in_chans=auto")
    elif cfg.denoise != "ink" and cfg.in_chans not in (1, 3):
        raise ConfigError(f"{source('in_chans')}: in_chans must be 1 or 3 (2 only with denoise=ink), "
                          f"got {cfg.in_chans}")


# float keys where a negative value means nothing (0 = off for most of them)
_NON_NEGATIVE = ("weight_decay", "warmup_epochs", "grad_clip", "time_limit", "checkpoint_minutes", "drop_rate")


def _validate(cfg: TrainConfig, source: Callable[[str], str]) -> None:
    for key, choices in CHOICES.items():
        check_choice(source(key), key, getattr(cfg, key), choices)
    _settle_in_chans(cfg, source)
    for key in ("epochs", "batch_size", "accum_steps", "image_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{source(key)}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ConfigError(f"{source('lr')}: lr must be > 0, got {cfg.lr}")
    for key in _NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{source(key)}: {key} must be >= 0, got {getattr(cfg, key)}")
    for key in ("mix_prob", "min_lr_ratio"):
        if not 0 <= getattr(cfg, key) <= 1:
            raise ConfigError(f"{source(key)}: {key} must be in [0, 1], got {getattr(cfg, key)}")
    if not 0 < cfg.epoch_fraction <= 1:
        raise ConfigError(f"{source('epoch_fraction')}: epoch_fraction must be in (0, 1], got {cfg.epoch_fraction}")
    if not 0 <= cfg.ema < 1:
        raise ConfigError(f"{source('ema')}: ema must be in [0, 1), got {cfg.ema}")
    if cfg.distill < 0 or (cfg.distill > 0 and not cfg.teacher):
        raise ConfigError(f"{source('distill')}: distill must be >= 0 and needs a teacher (--set teacher=PATH), "
                          f"got distill={cfg.distill} teacher={cfg.teacher!r}")
    if not 0 <= cfg.pseudo_margin < 0.5:
        raise ConfigError(f"{source('pseudo_margin')}: pseudo_margin must be in [0, 0.5), got {cfg.pseudo_margin}")
    if cfg.swa_epochs < 0:
        raise ConfigError(f"{source('swa_epochs')}: swa_epochs must be >= 0, got {cfg.swa_epochs}")
    if cfg.mix != "none" and not (cfg.mix_alpha > 0 and 0 < cfg.mix_prob <= 1):
        raise ConfigError(f"{source('mix')}: mix needs mix_alpha > 0 and 0 < mix_prob <= 1, "
                          f"got {cfg.mix_alpha} and {cfg.mix_prob}")
    if cfg.sam_rho < 0:
        raise ConfigError(f"{source('sam_rho')}: sam_rho must be >= 0, got {cfg.sam_rho}")
    if cfg.sam_rho > 0 and (cfg.accum_steps > 1 or cfg.amp == "fp16"):
        raise ConfigError(f"{source('sam_rho')}: sam_rho > 0 needs accum_steps 1 and no fp16 loss scaling "
                          "(bf16 is fine)")
    if cfg.feature_stride not in (0, 4, 8, 16, 32):
        raise ConfigError(f"{source('feature_stride')}: feature_stride must be 0, 4, 8, 16 or 32, "
                          f"got {cfg.feature_stride}")
    if cfg.folds_k < 2:
        raise ConfigError(f"{source('folds_k')}: folds_k must be >= 2, got {cfg.folds_k}")
    where = source("stages")
    cfg.stages = [dataclasses.asdict(stage_from_dict(s, f"{where}: stages[{i}]")) for i, s in enumerate(cfg.stages)]


def stage_from_dict(values: Any, source: str) -> StageConfig:
    if isinstance(values, StageConfig):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a stage is a mapping, got {values!r}")
    known = [f.name for f in fields(StageConfig)]
    for key in values:
        if key not in known:
            raise ConfigError(f"{source}: unknown stage key {key!r}; known: {', '.join(sorted(known))}"
                              f"{_did_you_mean(key, known)}")
    stage = StageConfig(**values)
    check_choice(source, "source", stage.source, STAGE_SOURCES)
    if stage.source != "data" and stage.steps < 1:
        raise ConfigError(f"{source}: a {stage.source} stage needs steps >= 1")
    _check_knobs(stage, source)
    _check_hard(stage, source)
    return stage


def _check_hard(stage: StageConfig, source: str) -> None:
    """`hard_share` / `hard_knobs`: both or neither, on a scene stage."""
    if not stage.hard_share and not stage.hard_knobs:
        return
    if stage.source not in ("synth", "dense"):
        raise ConfigError(f"{source}: hard_share / hard_knobs need a synth or dense stage, not {stage.source}")
    if not isinstance(stage.hard_knobs, dict):
        raise ConfigError(f"{source}: hard_knobs is a mapping of SceneKnobs fields, got {stage.hard_knobs!r}")
    if not isinstance(stage.hard_share, (int, float)) or not 0 < stage.hard_share < 1:
        raise ConfigError(f"{source}: hard_share must be in (0, 1) with hard_knobs, got {stage.hard_share}")
    if not stage.hard_knobs:
        raise ConfigError(f"{source}: hard_share {stage.hard_share} needs hard_knobs (what its scenes change)")
    merged = dataclasses.replace(stage, knobs={**(stage.knobs or {}), **stage.hard_knobs})
    _check_knobs(merged, f"{source}: hard_knobs")


def _check_knobs(stage: StageConfig, source: str) -> None:
    """A stage's scene knobs as the batch source will read them, so a typo fails at load."""
    if not stage.knobs:
        return
    if not isinstance(stage.knobs, dict):
        raise ConfigError(f"{source}: knobs is a mapping of SceneKnobs fields, got {stage.knobs!r}")
    from dirtymnist.data import crops, synth  # numpy + cv2, no torch

    known = [f.name for f in fields(synth.SceneKnobs)]
    for key in stage.knobs:
        if key not in known:
            raise ConfigError(f"{source}: unknown knob {key!r}; known: {', '.join(known)}{_did_you_mean(key, known)}")
    try:
        crops.make_knobs(stage.knobs, crops.CROP_DEFAULTS if stage.source == "glyphs" else None)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: knobs {stage.knobs!r} are not valid ({exc})") from None


def read_yaml_mapping(path: Path, what: str = "preset") -> dict[str, Any]:
    """A YAML file holding a mapping; one-line ConfigErrors naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (its bytes are not UTF-8)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what} file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of key: value")
    return data


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Recipe keys whose values differ (run options and removed keys do not change the result)."""
    keys = sorted(set(old) | set(new))
    defaults = TrainConfig().to_dict()  # a key added since the run started has its default
    return [k for k in keys if k not in RESUME_SAFE_KEYS and old.get(k, defaults.get(k)) != new.get(k, defaults.get(k))]


def dump_yaml(cfg: TrainConfig) -> str:
    """config.yaml: one flat mapping (as every reader expects), the recipe first, then the run options."""
    values = cfg.to_dict()
    recipe = yaml.safe_dump({k: values[k] for k in RECIPE_KEYS}, sort_keys=False)
    options = yaml.safe_dump({k: values[k] for k in RUN_OPTION_KEYS}, sort_keys=False)
    return ("# recipe: what changes the result (a run resumes only under the same)\n" + recipe
            + "# run options: how the run is carried out (free to change when it resumes)\n" + options)
