"""Train k folds: `dirtymnist train DATA_DIR --preset cpu --folds 0,1,2,3,4 [--set key=value]`.

Reads top to bottom: seed -> data -> model -> loss -> optimizer/scheduler -> resume ->
epoch loop -> save. Running the same command again resumes from `last.pt` bit-exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dirtymnist.arrays import positions
from dirtymnist.atomic import atomic_write_text
from dirtymnist.config import TrainConfig, diff_configs
from dirtymnist.data.crops import CROP_CANVAS
from dirtymnist.errors import ConfigError
from dirtymnist.infer.thresholds import OOF_SET, labels_digest
from dirtymnist.layout import IMAGE_SIZE
from dirtymnist.model.build import check_input_size
from dirtymnist.model.checkpoint import rng_state, save_checkpoint, set_rng_state
from dirtymnist.model.precision import choose_device, resolve_amp, use_channels_last
from dirtymnist.model.precision import describe as describe_precision
from dirtymnist.model.weights import settle as settle_weights
from dirtymnist.outputs import write_set
from dirtymnist.train import claims
from dirtymnist.train import distributed as dist
from dirtymnist.train import guards as runfolder
from dirtymnist.train.averaging import finish_swa, in_swa_window, start_swa
from dirtymnist.train.pseudo import MixedBatches, load_pseudo, settle_pseudo
from dirtymnist.train.sources import CachedBatches, SynthBatches, make_loader

log = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raised inside the loop when an `on_step` hook asks to stop (state is saved first)."""


@dataclass
class StepInfo:
    """What an `on_step` hook sees: where training is and the model to evaluate."""

    fold: int
    epoch: int
    step: int
    train_seconds: float  # training time so far in this fold, hooks and validation excluded
    samples: int  # training samples seen so far in this fold
    model: torch.nn.Module  # the weights validation uses (EMA when enabled)
    cfg: TrainConfig


# --------------------------------------------------------------------------- helpers
def seed_everything(seed: int, deterministic: bool = True) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass
class EpochPlan:
    """One epoch of the curriculum: which stage, its source, how many batches, its lr."""

    stage: int
    stage_epoch: int  # epoch number inside the stage
    stage_epochs: int
    source: str  # data | synth | glyphs
    steps: int  # batches in this epoch
    lr: float
    knobs: dict
    pool: int = 0
    dense_weight: float = 1.0


def build_plan(cfg: TrainConfig, data_batches: int) -> list[EpochPlan]:
    stages = cfg.stages or [{"name": "main", "source": "data", "epochs": 0, "steps": 0, "lr": 0.0, "knobs": {}}]
    plan = []
    for i, s in enumerate(stages):
        epochs = s["epochs"] or (cfg.epochs if s["source"] == "data" else 1)
        steps = data_batches if s["source"] == "data" else s["steps"]
        for e in range(epochs):
            plan.append(EpochPlan(i, e, epochs, s["source"], steps, s["lr"] or cfg.lr, s["knobs"],
                                  s.get("pool", 0), s.get("dense_weight", 1.0)))
    return plan


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


def build_grad_scaler(cfg: TrainConfig, device: torch.device):
    """fp16 autocast needs loss scaling (T4 / V100 / P100 under amp: auto); bf16 and fp32 do not."""
    if resolve_amp(cfg, device) != "fp16":
        return None
    if cfg.sam_rho > 0:  # SAM's second pass is not loss-scaled: its gradients would be unscaled to ~0
        raise ConfigError(f"sam_rho > 0 needs bf16 or fp32, and amp resolves to fp16 on this {device.type} "
                          "device (compute capability < 8.0); set --set amp=off")
    return torch.amp.GradScaler(device.type)


def build_scheduler(cfg: TrainConfig, optimizer, plan: list[EpochPlan], stage: int):
    """The stage's schedule, starting from its peak lr. Cosine/constant may step per batch."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = next(p.lr for p in plan if p.stage == stage)
    epochs = [p for p in plan if p.stage == stage]
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    per_step = cfg.scheduler_interval == "step"
    opt_steps = [math.ceil(p.steps / cfg.accum_steps) for p in epochs]
    total = sum(opt_steps) if per_step else len(epochs)
    warm = cfg.warmup_epochs * (opt_steps[0] if per_step else 1)
    floor = cfg.min_lr_ratio

    def factor(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (t - warm) / max(1.0, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- data
def _load_training_data(data_dir, cfg: TrainConfig, cache_dir=None):
    """Cache (built once, reused) and folds. Returns (split, fold per row, rows in the subset)."""
    from dirtymnist.data.cache import build_cache, open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.data.folds import make_folds, read_folds

    paths = DataPaths.from_root(data_dir)
    if dist.is_main():
        cache = build_cache(paths, cache_dir=cache_dir, splits=("train",))
        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed,
                                   subset=cfg.subset or None, method=cfg.folds_method)
    dist.barrier()
    if not dist.is_main():
        cache = build_cache(paths, cache_dir=cache_dir, splits=("train",))
        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed,
                                   subset=cfg.subset or None, method=cfg.folds_method)
    split = open_split(cache, "train")
    if split.labels is None:
        raise ConfigError(f"{data_dir}: the training split has no labels")
    fold_index, fold_of = read_folds(folds_path)
    pos = positions(split.index, fold_index)
    if np.any(pos < 0):
        raise ConfigError(f"{folds_path}: holds indices that are not in the dataset; delete it to rebuild")
    return split, pos, fold_of


# --------------------------------------------------------------------------- entry points
def train(data_dir, cfg: TrainConfig, *, folds: list[int] | None = None, run_dir=None,
          force: bool = False, cache_dir=None, on_epoch=None, on_step=None) -> dict[int, dict]:
    """Train each fold in turn (each resumable). Returns {fold: best validation metrics}.

    Hooks for tools built on top (tune, benchmarks): `on_epoch(fold, epoch, row)` after each
    epoch's checkpoint is written (it may raise, e.g. to prune a trial); `on_step(StepInfo)`
    at optimizer steps -- returning True saves last.pt and stops the fold there.
    """
    device = dist.init_from_env() or choose_device()
    run_dir = Path(run_dir or Path("runs") / (cfg.preset or "run"))
    folds = folds if folds is not None else [0]
    for f in folds:
        if not 0 <= f < cfg.folds_k:
            raise ConfigError(f"fold {f} is out of range for folds_k={cfg.folds_k}")
    if cfg.batch_size % dist.world_size():
        raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the {dist.world_size()} processes")
    check_input_size(cfg)
    cfg = settle_weights(cfg)  # hub weights fetched once into the HF cache; normalize: auto resolved
    cfg = settle_pseudo(cfg)  # the pseudo-label file named by its content
    if dist.is_main():  # refuse another config or data folder before any work
        runfolder.check_run(run_dir, cfg, data_dir, force=force)
    split, rows, fold_of = _load_training_data(data_dir, cfg, cache_dir)
    pseudo = load_pseudo(cfg, data_dir, cache_dir)  # confident test images, or None
    with contextlib.ExitStack() as held:
        if dist.world_size() == 1 and len(folds) == 1:
            # one fold asked for: claim it before anything is written, so a refused train changes nothing
            held.enter_context(claims.claim(run_dir, folds[0]))
        if dist.is_main():  # config.yaml, run.json: written only now that every check passed
            runfolder.record_run(run_dir, cfg, data_dir, cache_dir, force=force)
        return _train_folds(cfg, split, rows, fold_of, run_dir, folds, device, force=force,
                            on_epoch=on_epoch, on_step=on_step, pseudo=pseudo)


def _train_folds(cfg, split, rows, fold_of, run_dir: Path, folds: list[int], device, *, force, on_epoch,
                 on_step, pseudo) -> dict[int, dict]:
    """Each fold once (claimed when several workers share the run), with tracking around it."""
    from dirtymnist.train.tracking import chain, start_tracking

    tracker = start_tracking(cfg, run_dir) if dist.is_main() else None  # tracking: mlflow
    hook = chain(tracker.on_epoch, on_epoch) if tracker else on_epoch
    results: dict[int, dict] = {}

    def train_one(f: int) -> dict:
        # one writer per fold: a second train of it is refused, naming this one's PID and host
        with runfolder.lock_fold(run_dir / f"fold{f}", f) if dist.is_main() else contextlib.nullcontext():
            return train_fold(cfg, split, rows[fold_of != f], rows[fold_of == f], run_dir / f"fold{f}",
                              device, force=force, fold=f, on_epoch=hook, on_step=on_step, pseudo=pseudo)

    try:
        if dist.world_size() > 1 or len(folds) == 1:  # a torchrun group trains its folds in order
            results = {f: train_one(f) for f in folds}
        else:  # other processes or hosts may share this run folder: each fold is trained once
            results = claims.train_claimed(run_dir, folds, train_one)
        if len(folds) > 1 and dist.is_main():
            claims.gather_oof(run_dir, folds)
    finally:
        dist.barrier()
        if tracker:
            tracker.finish(ok=len(results) == len(folds))
    return results


def train_fold(cfg: TrainConfig, split, train_rows: np.ndarray, val_rows: np.ndarray,
               fold_dir: Path, device: torch.device, *, force: bool = False, fold: int = 0,
               on_epoch=None, on_step=None, pseudo=None) -> dict:
    from timm.utils import ModelEmaV3

    from dirtymnist.model.build import build_model
    from dirtymnist.train.engine import evaluate, train_one_epoch
    from dirtymnist.train.losses import build_loss

    rank, world, main = dist.rank(), dist.world_size(), dist.is_main()
    letters = list(split.letters)
    seed_everything(cfg.seed, cfg.deterministic)

    # data
    per_rank = cfg.batch_size // world
    n_data_batches = (len(train_rows) + (len(pseudo) if pseudo else 0)) // cfg.batch_size
    if n_data_batches < 1 and not cfg.stages:
        raise ConfigError(f"fold {fold}: {len(train_rows)} training images is less than one batch of {cfg.batch_size}")
    plan = build_plan(cfg, n_data_batches)
    val_targets = split.labels[val_rows].astype(np.uint8)
    val_set = CachedBatches(split.images, split.labels, val_rows, max(1, 2 * per_rank) * world,
                            shuffle=False, drop_last=False, rank=rank, world=world)

    # model, loss, optimizer
    model = build_model(cfg, len(letters)).to(device)
    if any(p.source == "dense" for p in plan) and not cfg.pretrained and model.head is not None:
        # class maps start at p=0.1 (CenterNet): the focal loss over thousands of empty cells
        # would otherwise swamp the first steps
        torch.nn.init.constant_(model.head.conv.bias, -2.19)
    if use_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss)
    optimizer = build_optimizer(cfg, model)
    ema = ModelEmaV3(model, decay=cfg.ema) if cfg.ema > 0 else None
    swa = start_swa(model, cfg)
    scaler = build_grad_scaler(cfg, device)
    if main:
        log.info("fold %d: %s on %s", fold, describe_precision(cfg, device), device.type)

    # resume
    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": -1, "history": [], "stale": 0,
             "stopped": False}
    last = fold_dir / "last.pt"
    if main and fold_dir.is_dir():
        for stale in fold_dir.glob(".*.tmp"):  # temp files of a write that was killed
            stale.unlink()
    sched_state, resume_lrs = None, None
    if last.exists():
        ckpt = runfolder.load_resume_point(fold_dir, fold)  # an unreadable last.pt: the newest epoch*.pt
        changed = diff_configs(ckpt["config"], cfg.to_dict())
        if changed and not force:
            raise ConfigError(
                f"{last}: was trained with another config (differs in {', '.join(changed)}); "
                "use the same settings, another --run-dir, or --force")
        if list(ckpt["letters"]) != letters:
            raise ConfigError(f"{last}: class list {ckpt['letters']} differs from the data's")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        if swa is not None and ckpt.get("swa") is not None:
            swa.load_state_dict(ckpt["swa"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        sched_state = ckpt.get("scheduler")
        resume_lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
        set_rng_state(ckpt["rng"])
        state.update({k: ckpt[k] for k in state if k in ckpt})
        if main:
            log.info("fold %d: resuming from %s (epoch %d, step %d)", fold, last, state["epoch"] + 1, state["step"])
            was = ckpt.get("precision")
            if was and was != describe_precision(cfg, device):
                log.warning("fold %d: started with %s, resumes with %s on this machine: the run goes on, "
                            "but not bit-identically to an uninterrupted one", fold, was,
                            describe_precision(cfg, device))
    if state["epoch"] >= len(plan) or state["stopped"]:
        if main:
            log.info("fold %d: already finished (%d epochs)", fold, len(plan))
            if swa is not None and not (fold_dir / "swa.pt").is_file():  # killed before writing it
                finish_swa(swa, cfg, letters, split, train_rows, val_rows, device, fold_dir, fold, len(state["history"]))
        return state["best"] or {}

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    eval_model = ema.module if ema is not None else model

    def checkpoint(epoch: int, step: int, scheduler) -> dict:
        return {
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "swa": swa.state_dict() if swa is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "step": step, "best": state["best"], "best_epoch": state["best_epoch"],
            "history": state["history"], "stale": state["stale"], "stopped": state["stopped"],
            "config": cfg.to_dict(), "letters": letters, "rng": rng_state(), "fold": fold,
            "precision": describe_precision(cfg, device),
        }

    writer = _tensorboard(fold_dir) if cfg.tensorboard and main else None
    scheduler = None
    for epoch in range(state["epoch"], len(plan)):
        spec = plan[epoch]
        start_step = state["step"] if epoch == state["epoch"] else 0
        stage_start = spec.stage_epoch == 0 and start_step == 0
        if scheduler is None or stage_start:
            scheduler = build_scheduler(cfg, optimizer, plan, spec.stage)
            if sched_state is not None and epoch == state["epoch"] and not stage_start:
                # mid-stage resume: the schedule's position and the lr it had reached
                scheduler.load_state_dict(sched_state)
                for group, lr in zip(optimizer.param_groups, resume_lrs):
                    group["lr"] = lr
        step_cfg = cfg
        if spec.source == "data":
            if pseudo is None:
                batches = CachedBatches(split.images, split.labels, train_rows, cfg.batch_size,
                                        seed=cfg.seed, epoch=epoch, rank=rank, world=world)
            else:  # the fold's rows and the pseudo-labelled test images, shuffled together
                batches = MixedBatches(split.images, split.labels, train_rows, pseudo, cfg.batch_size,
                                       seed=cfg.seed, epoch=epoch, rank=rank, world=world)
            aug = cfg.augment
        else:
            batches = SynthBatches(spec.source, spec.knobs, cfg.batch_size, spec.steps,
                                   seed=cfg.seed, epoch=epoch, rank=rank, world=world, pool=spec.pool)
            # scenes are drawn at any angle already; dense targets would need the same warp
            aug = "rot90" if cfg.augment != "none" and spec.source != "dense" else "none"
            if spec.source == "glyphs":  # crops keep the scale letters have in resized scenes
                step_cfg = dataclasses.replace(cfg, image_size=max(8, round(
                    spec.knobs.get("canvas", CROP_CANVAS) * cfg.image_size / IMAGE_SIZE)))
        loader = make_loader(batches, start_step, cfg.num_workers, device.type == "cuda")
        last_save = [time.monotonic()]
        hook_seconds = [0.0]
        t0 = time.perf_counter()
        done_seconds = sum(r["data_time"] + r["step_time"] for r in state["history"])
        done_samples = sum(r["samples"] for r in state["history"])

        def step_hook(step: int, epoch=epoch, t0=t0, hook_seconds=hook_seconds, last_save=last_save,
                      done_seconds=done_seconds, done_samples=done_samples, start_step=start_step,
                      scheduler=scheduler) -> None:
            if cfg.checkpoint_minutes > 0 and time.monotonic() - last_save[0] >= cfg.checkpoint_minutes * 60:
                if main:
                    save_checkpoint(checkpoint(epoch, step, scheduler), last)
                last_save[0] = time.monotonic()
            if on_step is None:
                return
            h0 = time.perf_counter()
            info = StepInfo(fold, epoch, step, done_seconds + h0 - t0 - hook_seconds[0],
                            done_samples + (step - start_step) * cfg.batch_size, eval_model, cfg)
            stop = on_step(info)
            hook_seconds[0] += time.perf_counter() - h0
            if stop:
                if main:
                    save_checkpoint(checkpoint(epoch, step, scheduler), last)
                raise StopTraining(f"stopped by a hook at epoch {epoch + 1} step {step}")

        try:
            stats = train_one_epoch(
                train_model, loader, epoch=epoch, start_step=start_step, steps=len(batches),
                optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, cfg=step_cfg, device=device,
                ema=ema, raw_model=model, scaler=scaler, aug=aug, softmax=spec.source == "glyphs",
                dense_weight=spec.dense_weight, on_step=step_hook,
                desc=f"fold {fold} epoch {epoch + 1}/{len(plan)}")
        except StopTraining as exc:
            if main:
                log.info("fold %d: %s", fold, exc)
            return state["best"] or {}
        stats["data_time"] -= hook_seconds[0]  # the hook ran between batches
        if swa is not None and in_swa_window(cfg, epoch, len(plan)):
            swa.update_parameters(model)
        train_seconds = time.perf_counter() - t0 - hook_seconds[0]
        val_loader = make_loader(val_set, 0, 0, False)
        val = evaluate(eval_model, val_loader, val_targets, cfg, device, loss_fn)
        if scheduler is not None:
            if cfg.scheduler == "plateau":
                scheduler.step(val["val_loss"])
            elif cfg.scheduler == "step" or cfg.scheduler_interval == "epoch":
                scheduler.step()
        probs = val.pop("probs")
        row = {
            "epoch": epoch + 1, "stage": spec.stage, "source": spec.source, **stats, **val,
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
            "samples_per_s": stats["samples"] / max(train_seconds, 1e-9),
        }
        state["history"].append(row)
        better = _is_better(cfg, val, state["best"])
        if better:
            state["best"], state["best_epoch"], state["stale"] = {k: row[k] for k in ("epoch", "val_loss", "label_acc", "exact_match")}, epoch, 0
        else:
            state["stale"] += 1
        stop = cfg.early_stopping > 0 and state["stale"] >= cfg.early_stopping
        trained_min = sum(r["data_time"] + r["step_time"] for r in state["history"]) / 60
        out_of_time = cfg.time_limit > 0 and trained_min >= cfg.time_limit
        stop = stop or out_of_time
        if main:
            fold_dir.mkdir(parents=True, exist_ok=True)
            if better:
                best = checkpoint(epoch + 1, 0, scheduler)
                best.pop("optimizer")
                best.pop("swa")  # only last.pt carries the running average
                save_checkpoint(best, fold_dir / "best.pt")
                # the best epoch's OOF pair, committed as one set (outputs.write_set)
                write_set(fold_dir / OOF_SET, {"oof": (fold_dir / "oof.npy", probs.astype(np.float32)),
                                               "oof_index": (fold_dir / "oof_index.npy", split.index[val_rows])},
                          epoch=epoch + 1, labels_sha256=labels_digest(val_targets))
            state["stopped"] = stop
            ck = checkpoint(epoch + 1, 0, scheduler)
            save_checkpoint(ck, last)
            if cfg.keep_last > 0:
                save_checkpoint(ck, fold_dir / f"epoch{epoch + 1:03d}.pt")
                for old in sorted(fold_dir.glob("epoch*.pt"))[:-cfg.keep_last]:
                    old.unlink()
            _write_metrics(fold_dir / "metrics.jsonl", state["history"])
            if writer is not None:
                for key in ("train_loss", "val_loss", "label_acc", "exact_match", "lr", "samples_per_s"):
                    writer.add_scalar(key, row[key], epoch + 1)
                writer.flush()
            log.info("fold %d epoch %d/%d: train_loss %.4f val_loss %.4f label_acc %.4f exact %.3f "
                     "(%.0f samples/s, %.0fs)%s", fold, epoch + 1, len(plan), row["train_loss"],
                     row["val_loss"], row["label_acc"], row["exact_match"], row["samples_per_s"],
                     row["seconds"], " *" if better else "")
        dist.barrier()
        if on_epoch is not None:
            on_epoch(fold, epoch, row)
        if stop:
            if main and out_of_time:
                log.info("fold %d: stopped at the time limit (%.1f min of training)", fold, trained_min)
            elif main:
                log.info("fold %d: early stop, no better %s for %d epochs", fold, cfg.best_metric, cfg.early_stopping)
            break
    if swa is not None and main:
        finish_swa(swa, cfg, letters, split, train_rows, val_rows, device, fold_dir, fold, len(state["history"]))
    return state["best"]


def _tensorboard(fold_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(fold_dir / "tb"))


def _is_better(cfg: TrainConfig, val: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if cfg.best_metric == "loss":
        return val["val_loss"] < best["val_loss"]
    return val["label_acc"] > best["label_acc"]


def _write_metrics(path: Path, history: list[dict]) -> None:
    # Rewritten whole from the checkpointed history, so a kill never leaves a torn or doubled line.
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))
