"""Input pipeline benchmark: ours (uint8 memmap -> device -> batched augmentation) against the
9th-place team's (per-sample PIL: ToPILImage -> Resize(331) -> flips -> RandomRotation ->
ToTensor -> Normalize in a DataLoader), side by side in one run, same model and batch size.

    .venv/bin/python bench/pipeline.py [--steps 6] [--model efficientnet_b0] [--batch-size 8]

Prints (1) images/s of the input pipeline alone, (2) training samples/s with the model, and
the ratio of data time to step time, as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dirtymnist.config import load_config
from dirtymnist.model.batches import CachedBatches, EpochDraw, make_loader
from dirtymnist.model.build import build_model
from dirtymnist.model.transforms import to_input


class TeamDataset(Dataset):
    """The team's way: a numpy array of 3-channel images, torchvision transforms per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from torchvision import transforms as T

        self.images, self.labels = images, labels
        self.tf = T.Compose([
            T.ToPILImage(), T.Resize(331), T.RandomHorizontalFlip(0.6), T.RandomVerticalFlip(0.6),
            T.RandomRotation(40), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.tf(self.images[i]), torch.from_numpy(self.labels[i].astype(np.float32))


def _batches_team(images3, labels, batch_size):
    return DataLoader(TeamDataset(images3, labels), batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)


def _batches_ours(images, labels, batch_size, cfg, epoch=0):
    ds = CachedBatches(images, labels, np.arange(len(images)), batch_size, EpochDraw(0, epoch))
    for i, (x, y) in enumerate(make_loader(ds, 0, 0, False)):
        g = torch.Generator().manual_seed(i)
        yield to_input(x, cfg, torch.device("cpu"), g, cfg.augment), y


def pipeline_only(make_iter, n_batches):
    t0 = time.perf_counter()
    n = 0
    for i, (x, _) in enumerate(make_iter()):
        n += x.shape[0]
        if i + 1 >= n_batches:
            break
    return n / (time.perf_counter() - t0)


def train_steps(make_iter, model, steps):
    """Returns (samples/s, data seconds, step seconds) over `steps` steps after one warm-up."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    data_t = step_t = 0.0
    n = 0
    it = iter(make_iter())
    for i in range(steps + 1):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i > 0:  # skip warm-up
            data_t += t1 - t0
            step_t += t2 - t1
            n += x.shape[0]
    return n / (data_t + step_t), data_t, step_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--images", type=int, default=256)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = load_config("seed", [f"model={args.model}", f"batch_size={args.batch_size}", "pretrained="])
    labels = (rng.random((args.images, 26)) < 0.46).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        # ours reads a uint8 grayscale memmap, as the cache stores it
        mm = np.lib.format.open_memmap(os.path.join(tmp, "x.npy"), mode="w+", dtype=np.uint8, shape=(args.images, 256, 256))
        mm[:] = rng.integers(0, 256, mm.shape, dtype=np.uint8)
        mm.flush()
        images = np.load(os.path.join(tmp, "x.npy"), mmap_mode="r")
        images3 = np.repeat(np.asarray(images)[..., None], 3, axis=-1)  # the team's colour array

        team_iter = lambda: _batches_team(images3, labels, args.batch_size)  # noqa: E731
        ours_iter = lambda: _batches_ours(images, labels, args.batch_size, cfg)  # noqa: E731
        n_b = max(4, args.images // args.batch_size // 2)
        p_team, p_ours = pipeline_only(team_iter, n_b), pipeline_only(ours_iter, n_b)

        model = build_model(cfg, 26)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        s_team, d_team, st_team = train_steps(team_iter, model, args.steps)
        model.load_state_dict(state)
        s_ours, d_ours, st_ours = train_steps(ours_iter, model, args.steps)

    print(f"# input pipeline, {args.model} 3ch 331px, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| pipeline | pipeline only (img/s) | training (samples/s) | data time / step time |")
    print("|---|---|---|---|")
    print(f"| team (PIL per sample, DataLoader) | {p_team:.1f} | {s_team:.2f} | {d_team / st_team:.3f} |")
    print(f"| ours (memmap uint8, batched on device) | {p_ours:.1f} | {s_ours:.2f} | {d_ours / st_ours:.3f} |")
    print(f"| **ratio ours/team** | **{p_ours / p_team:.2f}x** | **{s_ours / s_team:.2f}x** | |")


if __name__ == "__main__":
    main()
