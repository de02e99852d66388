"""Weight averaging: SWA along a run (`swa_epochs`) and `dirtymnist average RUN --last N | --best K`.

Both write an ordinary checkpoint beside `best.pt` (`fold{k}/swa.pt`, `fold{k}/averaged.pt`)
that `predict` / `export` / `package` take with `--checkpoint swa|averaged`, and note it in
RUN/run.json. Averaged weights come with stale batch-norm statistics (the mean of running
means is not the running mean of the averaged net), so both recompute them on the fold's
training images, in order, without augmentation (`torch.optim.swa_utils.update_bn`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("best", "last", "averaged", "swa")  # fold{k}/NAME.pt that predict can pick


# --------------------------------------------------------------------------- averaging
def mean_state_dict(states: list[dict]) -> dict:
    """Mean of state dicts with the same keys: float tensors averaged (in float64, cast back);
    integer tensors (batch norm's `num_batches_tracked`) taken from the last one."""
    if not states:
        raise ConfigError("nothing to average: no checkpoints given")
    out = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def start_swa(model: torch.nn.Module, cfg) -> AveragedModel | None:
    """The running average of the last `cfg.swa_epochs` epochs' weights (None when off)."""
    return AveragedModel(model) if cfg.swa_epochs > 0 else None


def in_swa_window(cfg, epoch: int, n_epochs: int) -> bool:
    """Whether epoch `epoch` (0-based, of `n_epochs` planned) is one SWA averages."""
    return cfg.swa_epochs > 0 and epoch >= n_epochs - cfg.swa_epochs


# --------------------------------------------------------------------------- batch norm
def recompute_bn(model: torch.nn.Module, cfg, images, rows: np.ndarray, device: torch.device,
                 batch_size: int = 64) -> None:
    """Re-estimate batch-norm running statistics of `model` on memmap `images[rows]`: one pass,
    the network input of inference (no augmentation), a cumulative average (momentum None)."""
    from dirtymnist.engine import to_input
    from dirtymnist.sources import CachedBatches

    batches = CachedBatches(images, None, rows, batch_size, shuffle=False, drop_last=False)

    def inputs():
        for i in range(len(batches)):
            yield to_input(batches[i][0], cfg, device, None, "none")  # (B, C, S, S) float

    # update_bn runs the net in train mode: fork the RNG so dropout draws leave no trace
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        update_bn(inputs(), model)
    model.eval()


# --------------------------------------------------------------------------- writing
def save_averaged(model_state: dict, ema_state: dict | None, *, cfg, letters, fold: int, epoch: int,
                  kind: str, sources: list[str], val: dict | None, path: Path) -> None:
    """An ordinary checkpoint (what predict / export / package read) plus where it came from."""
    from dirtymnist.checkpoint import save_checkpoint

    save_checkpoint({
        "model": model_state, "ema": ema_state, "config": cfg.to_dict(), "letters": list(letters),
        "fold": fold, "epoch": epoch, "best": val, "averaged": {"kind": kind, "from": sources},
    }, path)
    note_checkpoint(path.parent.parent, path, kind, sources, val)


def note_checkpoint(run_dir: Path, path: Path, kind: str, sources: list[str], val: dict | None) -> None:
    """Record an averaged checkpoint in RUN/run.json under `checkpoints` (other keys kept),
    under RUN/.lock: workers sharing a run's folds each note their own fold's."""
    from dirtymnist.locks import FileLock
    from dirtymnist.runfolder import RUN_LOCK_WAIT_S, read_run_json

    record_path = run_dir / "run.json"
    with FileLock(run_dir / ".lock", what="a run.json update").acquire(timeout=RUN_LOCK_WAIT_S):
        record = read_run_json(record_path)
        entry = {"kind": kind, "from": sources}
        if val:
            entry.update({k: val[k] for k in ("label_acc", "val_loss", "exact_match") if k in val})
        record.setdefault("checkpoints", {})[str(path.relative_to(run_dir))] = entry
        atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")


def finish_swa(swa: AveragedModel, cfg, letters, split, train_rows, val_rows, device,
               fold_dir: Path, fold: int, epochs_done: int) -> dict | None:
    """Batch-norm statistics for the averaged weights, validation, then `fold_dir/swa.pt`.
    Returns the validation metrics (None when no epoch reached the SWA window)."""
    from dirtymnist.losses import build_loss

    n = int(swa.n_averaged)
    if n == 0:
        log.warning("fold %d: training stopped before the last %d epochs: no swa.pt", fold, cfg.swa_epochs)
        return None
    recompute_bn(swa.module, cfg, split.images, train_rows, device)
    val = validate(swa.module, cfg, split, val_rows, device, build_loss(cfg.loss))
    epochs = [f"epoch {e}" for e in range(epochs_done - n + 1, epochs_done + 1)]
    save_averaged(swa.module.state_dict(), None, cfg=cfg, letters=letters, fold=fold, epoch=epochs_done,
                  kind="swa", sources=epochs, val=val, path=fold_dir / "swa.pt")
    log.info("fold %d: swa of %d epochs: label_acc %.4f val_loss %.4f -> %s", fold, n, val["label_acc"],
             val["val_loss"], fold_dir / "swa.pt")
    return val


def validate(model, cfg, split, val_rows: np.ndarray, device, loss_fn) -> dict:
    """Validation metrics of `model` on `split` rows `val_rows` (no probabilities)."""
    from dirtymnist.engine import evaluate
    from dirtymnist.sources import CachedBatches, make_loader

    val_set = CachedBatches(split.images, split.labels, val_rows, 64, shuffle=False, drop_last=False)
    val = evaluate(model, make_loader(val_set, 0, 0, False), split.labels[val_rows].astype(np.uint8),
                   cfg, device, loss_fn, gather=False)  # all rows here, whatever the DDP rank
    val.pop("probs")
    val["epoch"] = None
    return val


# --------------------------------------------------------------------------- the command
@dataclass
class AverageResult:
    fold: int
    path: Path  # the averaged checkpoint written
    sources: list[str]  # the epoch checkpoints averaged
    label_acc: float  # validation label accuracy of the averaged weights
    best_label_acc: float  # the fold's best.pt, for comparison


def average_run(run_dir: str | os.PathLike, *, last: int = 0, best: int = 0, data_dir=None,
                cache_dir=None, bn: bool = True, device: str | torch.device | None = None,
                name: str = "averaged") -> list[AverageResult]:
    """Average each fold's kept epoch checkpoints (`keep_last`) into `fold{k}/{name}.pt`.

    last=N: the N newest; best=K: the K with the best validation `best_metric` among those
    kept. Batch norm is re-estimated on the fold's training rows unless `bn=False`.
    """
    from dirtymnist.checkpoint import load_checkpoint
    from dirtymnist.config import config_from_dict
    from dirtymnist.losses import build_loss
    from dirtymnist.models import build_model
    from dirtymnist.runs import find_data_dir
    from dirtymnist.train import _load_training_data, choose_device

    if (last > 0) == (best > 0):
        raise ConfigError("average: give one of --last N or --best K (N, K >= 1)")
    run_dir = Path(run_dir)
    fold_dirs = sorted(p for p in run_dir.glob("fold*") if p.is_dir() and p.name[4:].isdigit())
    if not fold_dirs:
        raise ConfigError(f"{run_dir}: no fold*/ folders (not a run directory?)")
    device = torch.device(device) if device is not None else choose_device()
    if cache_dir is None:  # the cache the run trained from, not a new one in the data folder
        from dirtymnist.runfolder import read_run_json

        cache_dir = read_run_json(run_dir / "run.json").get("cache_dir")
    data = None
    results = []
    for fold_dir in fold_dirs:
        chosen = _choose_epochs(fold_dir, last, best)
        states = [load_checkpoint(p) for p in chosen]
        cfg = config_from_dict({**states[-1]["config"], "pretrained": ""}, source=str(chosen[-1]))
        letters, fold = list(states[-1]["letters"]), int(fold_dir.name[4:])
        if data is None:
            data = _load_training_data(find_data_dir(run_dir, data_dir), cfg, cache_dir)
        split, rows, fold_of = data
        train_rows, val_rows = rows[fold_of != fold], rows[fold_of == fold]
        parts = {}
        for part in ("model", "ema"):
            if any(s.get(part) is None for s in states):
                parts[part] = None
                continue
            model = build_model(cfg, len(letters)).to(device)
            model.load_state_dict(mean_state_dict([s[part] for s in states]))
            if bn:
                recompute_bn(model, cfg, split.images, train_rows, device)
            parts[part] = model
        use = parts["ema"] or parts["model"]  # what load_model would use
        val = validate(use.eval(), cfg, split, val_rows, device, build_loss(cfg.loss))
        sources = [p.name for p in chosen]
        path = fold_dir / f"{name}.pt"
        save_averaged(parts["model"].state_dict(), parts["ema"].state_dict() if parts["ema"] else None,
                      cfg=cfg, letters=letters, fold=fold, epoch=int(states[-1]["epoch"]),
                      kind=f"{'last' if last else 'best'} {last or best}", sources=sources, val=val, path=path)
        best_acc = (load_checkpoint(fold_dir / "best.pt").get("best") or {}).get("label_acc", float("nan")) \
            if (fold_dir / "best.pt").is_file() else float("nan")
        results.append(AverageResult(fold, path, sources, val["label_acc"], best_acc))
        log.info("fold %d: averaged %s: label_acc %.4f (best.pt %.4f)", fold, ", ".join(sources),
                 val["label_acc"], best_acc)
    return results


def _choose_epochs(fold_dir: Path, last: int, best: int) -> list[Path]:
    """The epoch checkpoints to average, oldest first."""
    kept = sorted(fold_dir.glob("epoch*.pt"))
    n = last or best
    if len(kept) < n:
        raise ConfigError(f"{fold_dir}: {len(kept)} epoch checkpoints kept, {n} needed; "
                          f"train with --keep-last {n} (or --set keep_last={n})")
    if last:
        return kept[-last:]
    history = {}
    metrics = fold_dir / "metrics.jsonl"
    if metrics.is_file():
        history = {row["epoch"]: row for row in map(json.loads, metrics.read_text().splitlines()) if row}
    from dirtymnist.checkpoint import load_checkpoint

    metric = load_checkpoint(kept[-1])["config"].get("best_metric", "label_acc")

    def score(path: Path) -> float:
        row = history.get(int(path.stem.removeprefix("epoch")))
        if row is None:
            raise ConfigError(f"{metrics}: no line for {path.name}")
        return -row["val_loss"] if metric == "loss" else row["label_acc"]

    return sorted(sorted(kept, key=score, reverse=True)[:best])
