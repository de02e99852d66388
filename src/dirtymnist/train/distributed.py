"""DDP helpers: a no-op in one process; `torchrun` sets RANK/WORLD_SIZE and we join the group."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as tdist


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> torch.device | None:
    """Join the process group if launched by torchrun; returns this rank's device, or None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        tdist.init_process_group("nccl")
        return torch.device("cuda", local)
    tdist.init_process_group("gloo")
    return torch.device("cpu")


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        t = t.clone()
        tdist.all_reduce(t)
    return t


def gather_rows(rows: np.ndarray, total: int) -> np.ndarray:
    """Re-assemble rows sharded as rank::world (each rank holds rows[rank::world]) in order."""
    w = world_size()
    if w == 1:
        return rows
    per = -(-total // w)
    k = rows.shape[1] if rows.ndim == 2 and rows.shape[0] else 0
    k = int(all_reduce_max(k))
    buf = torch.zeros(per, k)
    if rows.shape[0]:
        buf[: rows.shape[0]] = torch.from_numpy(rows)
    parts = [torch.zeros(per, k) for _ in range(w)]
    tdist.all_gather(parts, buf)
    out = np.zeros((total, k), np.float32)
    for r, part in enumerate(parts):
        n = len(range(r, total, w))
        out[r::w] = part[:n].numpy()
    return out


def all_reduce_max(v: float) -> float:
    t = torch.tensor([float(v)])
    if world_size() > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())
