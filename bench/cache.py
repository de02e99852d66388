"""Benchmark: our memory-mapped cache against the 9th-place team's way of loading the data.

    .venv/bin/python bench/cache.py                 # 2,000 generated train PNGs (+200 test)
    .venv/bin/python bench/cache.py --n 500         # quicker
    .venv/bin/python bench/cache.py --data-dir DATA # on a real competition-layout folder

Team's way: a loop of cv2.imread(path, cv2.IMREAD_COLOR), np.array(list), np.save, per split.
Ours: dirtymnist.data.cache.build_cache (grayscale, process pool, writes straight into a memmap).
Both read the same files, after one warm-up pass so the page cache favours neither.
Opening is timed on a 50,000-image cache made cheaply as a sparse file with a valid manifest
(its pixels are all zero: opening does not read pixels), in a fresh process.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dirtymnist import layout
from dirtymnist.data.cache import FORMAT_VERSION, MANIFEST, build_cache, open_split
from dirtymnist.data.dataset import DataPaths, list_split


def make_images(root: Path, n_train: int, n_test: int, seed: int = 0) -> DataPaths:
    """Noise plus 10-14 bright letters of random size per image, competition layout."""
    rng = np.random.default_rng(seed)
    letters = layout.LETTERS
    for folder, csv_name, start, n in ((layout.TRAIN_DIR, layout.TRAIN_CSV, 0, n_train),
                                       (layout.TEST_DIR, layout.SAMPLE_CSV, 50_000, n_test)):
        (root / folder).mkdir(parents=True)
        rows = [",".join(["index", *letters])]
        for i in range(start, start + n):
            img = rng.integers(0, 256, (256, 256), dtype=np.uint8)
            present = rng.choice(26, rng.integers(10, 15), replace=False)
            for j in present:
                ch = letters[j].upper() if rng.random() < 0.5 else letters[j]
                scale = rng.uniform(0.7, 2.0)
                org = (int(rng.integers(0, 220)), int(rng.integers(30, 250)))
                cv2.putText(img, ch, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                            int(rng.integers(3, 8)), cv2.LINE_AA)
            cv2.imwrite(str(root / folder / layout.png_name(i)), img)
            row = np.zeros(26, int) if csv_name == layout.SAMPLE_CSV else np.isin(np.arange(26), present)
            rows.append(",".join([str(i), *(str(int(v)) for v in row)]))
        (root / csv_name).write_text("\n".join(rows) + "\n")
    return DataPaths.from_root(root)


def team_way(paths: DataPaths, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images = []
        for p in list_split(paths, split).paths:
            images.append(cv2.imread(str(p), cv2.IMREAD_COLOR))
        np.save(out / f"{split}.npy", np.array(images))


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def warm(paths: DataPaths) -> None:
    for split in ("train", "test"):
        for p in list_split(paths, split).paths:
            p.read_bytes()


def folder_bytes(folder: Path, pattern: str = "*.npy") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def make_sparse_cache(cache_dir: Path, n_train: int = 50_000, n_test: int = 5_000) -> None:
    """A valid-looking cache of the full competition size without decoding anything."""
    cache_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    manifest = {"format_version": FORMAT_VERSION, "letters": list(layout.LETTERS), "splits": {}}
    csvs = {"train": {"name": layout.TRAIN_CSV, "size": 2_700_000, "mtime_ns": 1, "sha256": ""},
            "test": {"name": layout.SAMPLE_CSV, "size": 270_000, "mtime_ns": 1, "sha256": ""}}
    for split, start, n in (("train", 0, n_train), ("test", 50_000, n_test)):
        index = np.arange(start, start + n, dtype=np.int64)
        images = np.lib.format.open_memmap(cache_dir / f"{split}_images.npy", mode="w+",
                                           dtype=np.uint8, shape=(n, 256, 256))
        del images  # sparse: nothing but the header and the last byte is written
        np.save(cache_dir / f"{split}_index.npy", index)
        names = {"images": f"{split}_images.npy", "index": f"{split}_index.npy"}
        if split == "train":
            np.save(cache_dir / "train_labels.npy", (rng.random((n, 26)) < 0.46).astype(np.uint8))
            names["labels"] = "train_labels.npy"
        manifest["splits"][split] = {
            "folder": f"/data/{split}", "count": n, "csv": {"csv": csvs[split]}, "arrays": names,
            "files": [layout.png_name(i) for i in index],
            "sizes": rng.integers(60_000, 70_000, n).tolist(),
            "mtime_ns": (1_600_000_000_000_000_000 + rng.integers(0, 10**12, n)).tolist()}
    (cache_dir / MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")))


_OPEN_PROBE = """
import json, sys, time
def rss_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
from dirtymnist.data.cache import open_split
before = rss_mb()
t = time.perf_counter()
train = open_split(sys.argv[1], 'train')
test = open_split(sys.argv[1], 'test')
opened = time.perf_counter() - t
batch = train.images[[0, 777, 25_000, 49_999]]  # touch a few images
print(json.dumps({'open_s': opened, 'rss_before_mb': before, 'rss_after_mb': rss_mb(),
                  'n': len(train) + len(test)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="generated training images (test: n/10)")
    ap.add_argument("--data-dir", help="use this competition-layout folder instead")
    ap.add_argument("--workers", type=int, default=None, help="build_cache workers (default all)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, best counts (default 3)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dm_bench_") as tmp:
        tmp = Path(tmp)
        if args.data_dir:
            paths = DataPaths.from_root(args.data_dir)
        else:
            t = time.perf_counter()
            paths = make_images(tmp / "data", args.n, max(1, args.n // 10))
            print(f"generated {args.n} + {max(1, args.n // 10)} PNGs in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        n_images = len(list_split(paths, "train")) + len(list_split(paths, "test"))
        warm(paths)
        load_before = os.getloadavg()[0]

        # Alternate the two, best of --repeat each: the machine may be shared.
        team_times, ours_times, team_cpu, ours_cpu = [], [], [], []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), cpu_seconds()
            team_way(paths, tmp / "team")
            team_times.append(time.perf_counter() - t)
            team_cpu.append(cpu_seconds() - c)
            t, c = time.perf_counter(), cpu_seconds()
            ours_dir = build_cache(paths, cache_dir=tmp / "ours", workers=args.workers, force=True)
            ours_times.append(time.perf_counter() - t)
            ours_cpu.append(cpu_seconds() - c)  # pool workers are reaped, so they count
        team_s, ours_s = min(team_times), min(ours_times)
        team_c, ours_c = min(team_cpu), min(ours_cpu)
        print("wall times (s): team " + " ".join(f"{x:.2f}" for x in team_times)
              + " | ours " + " ".join(f"{x:.2f}" for x in ours_times), file=sys.stderr)
        check = open_split(ours_dir, "train")
        first = cv2.imread(str(list_split(paths, "train").paths[0]), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(check.images[0], first), "cache differs from the PNG"

        team_bytes = folder_bytes(tmp / "team")
        ours_img_bytes = folder_bytes(ours_dir, "*_images.npy")
        ours_bytes = folder_bytes(ours_dir) + (ours_dir / MANIFEST).stat().st_size

        make_sparse_cache(tmp / "sparse")
        probe = subprocess.run([sys.executable, "-c", _OPEN_PROBE, str(tmp / "sparse")],
                               capture_output=True, text=True, check=True)
        opened = json.loads(probe.stdout)

    workers = args.workers or len(os.sched_getaffinity(0))
    gib = 1024**3
    rows = [
        ("images decoded (train + test)", f"{n_images}", f"{n_images}"),
        (f"build time (best of {args.repeat})", f"{team_s:.2f} s",
         f"{ours_s:.2f} s ({workers} workers, incl. fsync)"),
        ("speed-up (wall clock)", "1x", f"**{team_s / ours_s:.2f}x** (target >= 2.5x)"),
        ("CPU time, all processes (best)", f"{team_c:.2f} s",
         f"{ours_c:.2f} s (**{team_c / ours_c:.2f}x** less work)"),
        ("load average before / after", "", f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"),
        ("per 55,000 images (extrapolated)", f"{team_s / n_images * 55_000 / 60:.1f} min",
         f"{ours_s / n_images * 55_000 / 60:.1f} min"),
        ("disk, image arrays", f"{team_bytes / 2**20:.1f} MiB",
         f"{ours_img_bytes / 2**20:.1f} MiB (**{ours_img_bytes / team_bytes:.3f}x**, target 1/3)"),
        ("disk, everything", f"{team_bytes / 2**20:.1f} MiB",
         f"{ours_bytes / 2**20:.1f} MiB (+ labels, index, manifest)"),
        ("disk per 55,000 images", f"{team_bytes / n_images * 55_000 / gib:.1f} GiB",
         f"{ours_img_bytes / n_images * 55_000 / gib:.1f} GiB"),
        ("RAM to load (55,000 images)", f"~{team_bytes / n_images * 55_000 * 2 / gib:.0f} GiB "
         "(list + array while saving, then np.load)", "memory-mapped: pages read on use"),
        (f"open {opened['n']:,} images (sparse test cache)", "np.load: reads the whole file",
         f"{opened['open_s'] * 1000:.0f} ms, VmRSS {opened['rss_after_mb']:.0f} MB "
         f"(+{opened['rss_after_mb'] - opened['rss_before_mb']:.0f} MB over the imports)"),
    ]
    print(f"\n### Image cache: build and open ({'generated' if not args.data_dir else 'given'} "
          f"data, {os.cpu_count()} CPUs)\n")
    print("| | team (cv2.imread colour, np.array, np.save) | ours (`dirtymnist cache`) |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nOpening was timed on a 50,000 + 5,000 image cache written as a sparse file with a "
          "valid manifest (no decoding), in a fresh process; VmRSS from /proc/self/status.")


if __name__ == "__main__":
    main()
