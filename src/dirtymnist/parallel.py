"""Process pools that are safe to start from a process that already runs torch.

Forking a process whose OpenMP/torch threads hold locks can deadlock the child (seen in the
test suite: decode workers forked after training steps hung on a futex). So once torch is
loaded, workers start from a clean forkserver (spawn where there is none) and import only what
they need; before that, plain fork is safe and works from unguarded scripts too.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor


def process_pool(max_workers: int, **kwargs) -> ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    if "torch" not in sys.modules and "fork" in methods:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(method)
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=context, **kwargs)
