"""Round-trip time of one upload to the `serve` page (PNG in, probabilities + heat maps out).

    python bench/serve.py RUN PNG [--n 25] [--threads 1]

Starts `dirtymnist serve RUN` on a free port, posts PNG --n times (the first 5 not counted:
warm-up), prints the median, min and max in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dirtymnist.look.serve import launch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("png")
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    server, url = launch([args.run], env=env, stderr=subprocess.DEVNULL)
    try:
        png = Path(args.png).read_bytes()
        times = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            req = urllib.request.Request(f"{url}/api/predict?name={Path(args.png).name}", data=png,
                                         headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
            times.append(time.perf_counter() - t0)
        times = times[5:]
        print(f"upload round trip over {len(times)} uploads: median {1000 * statistics.median(times):.1f} ms, "
              f"min {1000 * min(times):.1f}, max {1000 * max(times):.1f}")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
