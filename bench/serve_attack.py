"""The serve attack and load campaign at length: the "Serve under attack" table (the campaign
itself: tests/serve_campaign.py; CI runs it in tests/test_serve_attack.py).

    .venv/bin/python bench/serve_attack.py RUN --data DATA [--parallel 50] [--timeout 2]

Starts `dirtymnist serve RUN --data DATA` on a free loopback port (OMP_NUM_THREADS=1), runs
every case against it and prints the table: case, answer, peak memory above idle, time, server
still up, the slowest answer to other requests meanwhile. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mdtable import print_campaign  # noqa: E402
from serve_campaign import campaign, table  # noqa: E402

from dirtymnist import layout  # noqa: E402
from dirtymnist.data.dataset import DataPaths, list_split  # noqa: E402
from dirtymnist.look.serve import launch  # noqa: E402
from dirtymnist.look.uploads import MAX_UPLOAD_BYTES  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True, help="a data folder (its first test image is the upload)")
    ap.add_argument("--parallel", type=int, default=50, help="parallel uploads (default 50)")
    ap.add_argument("--timeout", type=float, default=2.0, help="the server's --timeout (default 2)")
    args = ap.parse_args()
    files = list_split(DataPaths.from_root(args.data), "test", labels=False)
    png = (Path(files.folder) / layout.png_name(int(files.index[0]))).read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dm-serve-attack-") as tmp:
        log = Path(tmp) / "serve.log"
        with open(log, "w") as err:
            server, url = launch([args.run, "--data", args.data, "--timeout", str(args.timeout)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
        try:
            rows = campaign(server.pid, int(url.rsplit(":", 1)[1]), png, MAX_UPLOAD_BYTES, args.timeout,
                            log=log, parallel=args.parallel)
        finally:
            server.terminate()
            server.wait(10)
    print_campaign("Serve under attack", table(rows), time.perf_counter() - t0,
                   [(r.case, p) for r in rows for p in r.problems])
    return 1 if any(r.problems for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
