"""Weight averaging: SWA along a run (`swa_epochs`), and the `dirtymnist average RUN --last N |
--best K` command (`average_run`, as timm's `avg_checkpoints.py`: each fold's kept epoch
checkpoints, `keep_last`, averaged into `fold{k}/averaged.pt`).

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
from dirtymnist.model.batches import in_order, make_loader
from dirtymnist.model.transforms import to_input
from dirtymnist.rundir import FoldDir, RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Averaged:
    """Where an averaged checkpoint came from: its kind (`swa`, `last N`, `best K`), the epochs or
    files averaged, and its validation metrics (None when not validated)."""

    kind: str
    sources: list[str]
    val: dict | None


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


# --------------------------------------------------------------------------- batch norm
def recompute_bn(model: torch.nn.Module, cfg, images, rows: np.ndarray, device: torch.device,
                 batch_size: int = 64) -> None:
    """Re-estimate batch-norm running statistics of `model` on memmap `images[rows]`: one pass,
    the network input of inference (no augmentation), a cumulative average (momentum None)."""
    batches = in_order(images, None, rows, batch_size)

    def inputs():
        for i in range(len(batches)):
            yield to_input(batches[i][0], cfg, device, None, "none")  # (B, C, S, S) float

    # update_bn runs the net in train mode: fork the RNG so dropout draws leave no trace
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        update_bn(inputs(), model)
    model.eval()


# --------------------------------------------------------------------------- writing
def save_averaged(model_state: dict, ema_state: dict | None, *, cfg, letters, fold: int, epoch: int,
                  origin: Averaged, path: Path) -> None:
    """An ordinary checkpoint (what predict / export / package read) plus where it came from."""
    from dirtymnist.model.checkpoint import save_checkpoint

    save_checkpoint({
        "model": model_state, "ema": ema_state, "config": cfg.to_dict(), "letters": list(letters),
        "fold": fold, "epoch": epoch, "best": origin.val,
        "averaged": {"kind": origin.kind, "from": origin.sources},
    }, path)
    note_checkpoint(path.parent.parent, path, origin)


def note_checkpoint(run_dir: Path, path: Path, origin: Averaged) -> None:
    """Record an averaged checkpoint in RUN/run.json under `checkpoints` (other keys kept),
    under RUN/.lock: workers sharing a run's folds each note their own fold's."""
    from dirtymnist.locks import FileLock
    from dirtymnist.train.runfolder import RUN_LOCK_WAIT_S

    run = RunDir(run_dir)
    with FileLock(run.lock, what="a run.json update").acquire(timeout=RUN_LOCK_WAIT_S):
        record = run.read_record()
        entry = {"kind": origin.kind, "from": origin.sources}
        if origin.val:
            entry.update({k: origin.val[k] for k in ("label_acc", "val_loss", "exact_match") if k in origin.val})
        record.setdefault("checkpoints", {})[str(path.relative_to(run_dir))] = entry
        atomic_write_text(run.record, json.dumps(record, indent=2) + "\n")


class SwaAverage:
    """SWA along a run (`swa_epochs` > 0): the running mean of the last `swa_epochs` epochs'
    weights, kept in last.pt (key `swa`) and written to `fold{k}/swa.pt` when the fold ends.
    Every method does nothing when `swa_epochs` is 0, so the loop calls them unconditionally."""

    def __init__(self, model: torch.nn.Module, cfg, n_epochs: int, device: torch.device):
        self.cfg, self.n_epochs, self.device = cfg, n_epochs, device
        self.average = AveragedModel(model) if cfg.swa_epochs > 0 else None

    def state_dict(self) -> dict | None:
        return self.average.state_dict() if self.average is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.average is not None and state is not None:
            self.average.load_state_dict(state)

    def after_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """Add the weights of epoch `epoch` (0-based) when it is one of the last `swa_epochs`."""
        if self.average is not None and epoch >= self.n_epochs - self.cfg.swa_epochs:
            self.average.update_parameters(model)

    def finish(self, split, train_rows: np.ndarray, val_rows: np.ndarray, fold_dir: FoldDir,
               epochs_done: int, *, missing_only: bool = False) -> dict | None:
        """Batch-norm statistics for the averaged weights, validation, then `fold_dir`'s swa.pt.
        missing_only: the fold had finished before; write swa.pt only if a kill lost it. Returns the
        validation metrics (None when off, or when no epoch reached the SWA window)."""
        from dirtymnist.train.losses import build_loss

        cfg, device, path = self.cfg, self.device, fold_dir.checkpoint("swa")
        if self.average is None or (missing_only and path.is_file()):
            return None
        n = int(self.average.n_averaged)
        if n == 0:
            log.warning("fold %d: training stopped before the last %d epochs: no swa.pt", fold_dir.fold,
                        cfg.swa_epochs)
            return None
        recompute_bn(self.average.module, cfg, split.images, train_rows, device)
        val = validate(self.average.module, cfg, split, val_rows, device, build_loss(cfg.loss))
        epochs = [f"epoch {e}" for e in range(epochs_done - n + 1, epochs_done + 1)]
        save_averaged(self.average.module.state_dict(), None, cfg=cfg, letters=split.letters, fold=fold_dir.fold,
                      epoch=epochs_done, origin=Averaged("swa", epochs, val), path=path)
        log.info("fold %d: swa of %d epochs: label_acc %.4f val_loss %.4f -> %s", fold_dir.fold, n,
                 val["label_acc"], val["val_loss"], path)
        return val


def validate(model, cfg, split, val_rows: np.ndarray, device, loss_fn) -> dict:
    """Validation metrics of `model` on `split` rows `val_rows` (no probabilities)."""
    from dirtymnist.train.engine import evaluate

    val_set = in_order(split.images, split.labels, val_rows)
    val = evaluate(model, make_loader(val_set, 0, 0, False), split.labels[val_rows].astype(np.uint8),
                   cfg, device, loss_fn, gather=False)  # all rows here, whatever the DDP rank
    val.pop("probs")
    val["epoch"] = None
    return val


# --------------------------------------------------------------------------- the average command
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
    from dirtymnist.train.losses import build_loss
    from dirtymnist.train.stages import load_training_data

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
            data = load_training_data(run.data_dir(data_dir), cfg, cache_dir)
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
                      origin=Averaged(f"{'last' if last else 'best'} {last or best}", sources, val), path=path)
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
