"""Batches of cached image rows and the network's logits over them: the one batching of training
data, validation, batch-norm re-estimation and inference.

A batch source is indexed by batch number inside an epoch, so the data of any (epoch, step) is
a pure function of the seed (`EpochDraw`): a resumed run sees exactly the batches it would have.
Each batch is (images uint8 (B, H, W), targets float32 (B, K)) CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dirtymnist.model.precision import autocast_context
from dirtymnist.model.transforms import to_input


@dataclass(frozen=True)
class EpochDraw:
    """Which batches a source yields: those of epoch `epoch` under `seed`, and of each batch the
    share of process `rank` of `world` (DDP: rows rank, rank + world, ...)."""

    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world: int = 1

    def permutation(self, n: int) -> np.ndarray:
        """The epoch's order of n items."""
        return epoch_permutation(n, self.seed, self.epoch)

    def share(self, items: np.ndarray) -> np.ndarray:
        """This process's members of one batch."""
        return items[self.rank::self.world]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 11]).permutation(n)


class CachedBatches(Dataset):
    """Batch `i` of an epoch over `rows` of a memmap (shuffled per epoch, or in order)."""

    def __init__(self, images, labels, rows: np.ndarray, batch_size: int, draw: EpochDraw = EpochDraw(), *,
                 shuffle: bool = True, drop_last: bool = True):
        self.images, self.labels, self.draw = images, labels, draw
        self.rows = np.asarray(rows)
        self.order = self.rows[draw.permutation(len(rows))] if shuffle else self.rows
        self.batch_size = batch_size
        n = len(self.order)
        self.num_batches = n // batch_size if drop_last else -(-n // batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, i: int):
        rows = self.draw.share(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        imgs = read_rows(self.images, rows)
        labels = self.labels[rows] if self.labels is not None else np.zeros((len(rows), 26), np.uint8)
        return torch.from_numpy(imgs), torch.from_numpy(labels.astype(np.float32))


def read_rows(images, rows: np.ndarray) -> np.ndarray:
    """images[rows] of a memmap (or array, `PngFolder`), read in file order (faster) and given
    back in the order asked."""
    sort = np.argsort(rows)
    inv = np.empty_like(sort)
    inv[sort] = np.arange(len(sort))
    return np.asarray(images[rows[sort]])[inv]


def in_order(images, labels, rows: np.ndarray, batch_size: int = 64, draw: EpochDraw = EpochDraw()) -> CachedBatches:
    """`rows` in order, the last batch short: what validation and inference read."""
    return CachedBatches(images, labels, rows, batch_size, draw, shuffle=False, drop_last=False)


def make_loader(dataset: Dataset, start: int, num_workers: int, pin: bool) -> DataLoader:
    """Batches start..len-1 of `dataset`, prefetched by `num_workers` processes."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, len(dataset)),
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


@torch.no_grad()
def predict_logits(model, loader, cfg, device, views=None) -> np.ndarray:
    """Logits (N, K) float32 over the loader's batches; `views` = TTA list of (name, fn), averaged."""
    model.eval()
    out = []
    for images, *_ in loader:
        x = to_input(images, cfg, device, None, "none")
        acc = None
        for _, fn in views or [("id", lambda t: t)]:
            with autocast_context(cfg, device, training=False):
                logits = model(fn(x)).float()
            acc = logits if acc is None else acc + logits
        out.append((acc / len(views or [0])).cpu().numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)
