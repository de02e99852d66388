"""Process pools that are safe to start from a process that already runs torch.

Forking a process whose OpenMP/torch threads hold locks can deadlock the child (seen in the
test suite: decode workers forked after training steps hung on a futex). Workers therefore
start from a clean forkserver (spawn where there is none); they import only what they need.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(max_workers: int, **kwargs) -> ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=context, **kwargs)
