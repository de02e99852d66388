"""Fault campaign at length: the "Faults survived" table (the campaign itself: tests/faultkit.py).

    .venv/bin/python bench/faults.py                 # the table (~5 min, 2 cores)
    .venv/bin/python bench/faults.py --rounds 2      # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from faultkit import campaign, table  # noqa: E402
from mdtable import print_campaign  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per fault (kills: twice this)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated fault names (default all)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dm-faults-") as tmp:
        rows = campaign(Path(tmp), args.rounds, args.seed,
                        set(args.only.split(",")) if args.only else None)
    print_campaign("Faults survived", table(rows), time.perf_counter() - t0,
                   [(r.fault, p) for r in rows for p in r.problems])


if __name__ == "__main__":
    main()
