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
    from dirtymnist.train.guards import RUN_LOCK_WAIT_S, read_run_json

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
    from dirtymnist.train.losses import build_loss

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
    from dirtymnist.train.engine import evaluate
    from dirtymnist.train.sources import CachedBatches, make_loader

    val_set = CachedBatches(split.images, split.labels, val_rows, 64, shuffle=False, drop_last=False)
    val = evaluate(model, make_loader(val_set, 0, 0, False), split.labels[val_rows].astype(np.uint8),
                   cfg, device, loss_fn, gather=False)  # all rows here, whatever the DDP rank
    val.pop("probs")
    val["epoch"] = None
    return val
