"""The `dirtymnist average RUN --last N | --best K` command (as timm's `avg_checkpoints.py`).

Averages each fold's kept epoch checkpoints (`keep_last`) into `fold{k}/averaged.pt` with the
mechanisms of `averaging.py` (mean of state dicts, batch norm re-estimated, an ordinary
checkpoint noted in RUN/run.json). Apart from `averaging.py` because it reads the data the way
training does (`train._load_training_data`), while training itself uses `averaging.py`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dirtymnist.errors import ConfigError
from dirtymnist.rundir import FoldDir, RunDir
from dirtymnist.train.averaging import mean_state_dict, recompute_bn, save_averaged, validate

log = logging.getLogger(__name__)


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
    from dirtymnist.config import config_from_dict
    from dirtymnist.model.build import build_model
    from dirtymnist.model.checkpoint import load_checkpoint
    from dirtymnist.model.precision import choose_device
    from dirtymnist.train.loop import _load_training_data
    from dirtymnist.train.losses import build_loss

    if (last > 0) == (best > 0):
        raise ConfigError("average: give one of --last N or --best K (N, K >= 1)")
    run = RunDir(run_dir)
    fold_dirs = run.folds()
    if not fold_dirs:
        raise ConfigError(f"{run}: no fold folders (not a run directory?)")
    device = torch.device(device) if device is not None else choose_device()
    if cache_dir is None:  # the cache the run trained from, not a new one in the data folder
        cache_dir = run.read_record().get("cache_dir")
    data = None
    results = []
    for fold_dir in fold_dirs:
        chosen = _choose_epochs(fold_dir, last, best)
        states = [load_checkpoint(p) for p in chosen]
        cfg = config_from_dict({**states[-1]["config"], "pretrained": ""}, source=str(chosen[-1]))
        letters, fold = list(states[-1]["letters"]), fold_dir.fold
        if data is None:
            data = _load_training_data(run.data_dir(data_dir), cfg, cache_dir)
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
        path = fold_dir.checkpoint(name)
        save_averaged(parts["model"].state_dict(), parts["ema"].state_dict() if parts["ema"] else None,
                      cfg=cfg, letters=letters, fold=fold, epoch=int(states[-1]["epoch"]),
                      kind=f"{'last' if last else 'best'} {last or best}", sources=sources, val=val, path=path)
        best_acc = (load_checkpoint(fold_dir.best).get("best") or {}).get("label_acc", float("nan")) \
            if fold_dir.best.is_file() else float("nan")
        results.append(AverageResult(fold, path, sources, val["label_acc"], best_acc))
        log.info("fold %d: averaged %s: label_acc %.4f (best.pt %.4f)", fold, ", ".join(sources),
                 val["label_acc"], best_acc)
    return results


def _choose_epochs(fold_dir: FoldDir, last: int, best: int) -> list[Path]:
    """The epoch checkpoints to average, oldest first."""
    kept = fold_dir.epoch_checkpoints()
    n = last or best
    if len(kept) < n:
        raise ConfigError(f"{fold_dir.path}: {len(kept)} epoch checkpoints kept, {n} needed; "
                          f"train with --keep-last {n} (or --set keep_last={n})")
    if last:
        return kept[-last:]
    history = {row["epoch"]: row for row in fold_dir.read_metrics() if row}
    from dirtymnist.model.checkpoint import load_checkpoint

    metric = load_checkpoint(kept[-1])["config"].get("best_metric", "label_acc")

    def score(path: Path) -> float:
        row = history.get(FoldDir.epoch_of(path))
        if row is None:
            raise ConfigError(f"{fold_dir.metrics}: no line for {path.name}")
        return -row["val_loss"] if metric == "loss" else row["label_acc"]

    return sorted(sorted(kept, key=score, reverse=True)[:best])
