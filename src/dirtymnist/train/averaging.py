"""Weight averaging: SWA along a run (`swa_epochs`), and the mechanisms of `dirtymnist average`
(`average.py`).

Both write an ordinary checkpoint beside `best.pt` (`fold{k}/swa.pt`, `fold{k}/averaged.pt`)
that `predict` / `export` / `package` take with `--checkpoint swa|averaged`, and note it in
RUN/run.json. Averaged weights come with stale batch-norm statistics (the mean of running
means is not the running mean of the averaged net), so both recompute them on the fold's
training images, in order, without augmentation (`torch.optim.swa_utils.update_bn`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError
from dirtymnist.rundir import FoldDir, RunDir

log = logging.getLogger(__name__)


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
    from dirtymnist.train.engine import to_input
    from dirtymnist.train.sources import CachedBatches

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
    from dirtymnist.model.checkpoint import save_checkpoint

    save_checkpoint({
        "model": model_state, "ema": ema_state, "config": cfg.to_dict(), "letters": list(letters),
        "fold": fold, "epoch": epoch, "best": val, "averaged": {"kind": kind, "from": sources},
    }, path)
    note_checkpoint(path.parent.parent, path, kind, sources, val)


def note_checkpoint(run_dir: Path, path: Path, kind: str, sources: list[str], val: dict | None) -> None:
    """Record an averaged checkpoint in RUN/run.json under `checkpoints` (other keys kept),
    under RUN/.lock: workers sharing a run's folds each note their own fold's."""
    from dirtymnist.locks import FileLock
    from dirtymnist.train.guards import RUN_LOCK_WAIT_S

    run = RunDir(run_dir)
    with FileLock(run.lock, what="a run.json update").acquire(timeout=RUN_LOCK_WAIT_S):
        record = run.read_record()
        entry = {"kind": kind, "from": sources}
        if val:
            entry.update({k: val[k] for k in ("label_acc", "val_loss", "exact_match") if k in val})
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
                      epoch=epochs_done, kind="swa", sources=epochs, val=val, path=path)
        log.info("fold %d: swa of %d epochs: label_acc %.4f val_loss %.4f -> %s", fold_dir.fold, n,
                 val["label_acc"], val["val_loss"], path)
        return val


def validate(model, cfg, split, val_rows: np.ndarray, device, loss_fn) -> dict:
    """Validation metrics of `model` on `split` rows `val_rows` (no probabilities)."""
    from dirtymnist.train.engine import evaluate
    from dirtymnist.train.sources import CachedBatches, make_loader

    val_set = CachedBatches(split.images, split.labels, val_rows, 64, shuffle=False, drop_last=False)
    val = evaluate(model, make_loader(val_set, 0, 0, False), split.labels[val_rows].astype(np.uint8),
                   cfg, device, loss_fn, gather=False)  # all rows here, whatever the DDP rank
    val.pop("probs")
    val["epoch"] = None
    return val
