"""The fault campaign: full disks, parallel jobs and SIGKILLs against cache / train / predict.

Every fault runs real `dirtymnist` processes on a tiny generated folder. A full disk is a
size-limited tmpfs (`mount -t tmpfs -o size=...`, needs root) filled to a random level; where
mounting is not permitted the child instead runs under a file-size limit (RLIMIT_FSIZE), so its
writes fail with EFBIG at random points. After each round the invariants are checked:

- the command ended with exit 0, or exit 2 and one line naming the path (never a traceback,
  a SIGBUS or a dead worker pool);
- no partial or temp file is left; every checkpoint, cache and output set present is loadable
  and consistent (a set that is not is refused by `ensemble` / `thresholds`, never mixed);
- the same command run again completes, and a resumed training ends bit-identical to an
  uninterrupted one.

A round that breaks an invariant counts as "data lost". `tests/test_faults.py` runs one round
of each fault in CI; `bench/faults.py` runs the campaign at length for the BENCHMARKS table.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import mdtable
import numpy as np

from dirtymnist import layout
from dirtymnist.rundir import RunDir

TINY = ["model=test_resnet", "image_size=32", "batch_size=8", "epochs=2", "stages=[]",
        "augment=winner", "ema=0.9", "checkpoint_minutes=0.000001"]
MB = 1_000_000


@dataclass
class Row:
    """One fault's result: rounds tried, rounds that broke an invariant, and why."""

    fault: str
    rounds: int = 0
    hit: int = 0  # rounds where the fault struck: the command was refused, failed or killed
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    mode: str = ""

    def check(self, problems: list[str], hit: bool) -> None:
        self.rounds += 1
        self.hit += bool(hit)
        if problems:
            self.lost += 1
            self.problems += problems


# --------------------------------------------------------------------------- plumbing
def make_data(root: Path, n_train: int = 48, n_test: int = 8, seed: int = 0) -> Path:
    """A tiny competition-layout folder of noise PNGs with 10-14 letters per label row."""
    rng = np.random.default_rng(seed)
    for folder, csv_name, start, n in ((layout.TRAIN_DIR, layout.TRAIN_CSV, 0, n_train),
                                       (layout.TEST_DIR, layout.SAMPLE_CSV, 50_000, n_test)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        labels = np.zeros((n, 26), np.uint8)
        for i in range(n):
            cv2.imwrite(str(root / folder / layout.png_name(start + i)),
                        rng.integers(0, 256, (256, 256), dtype=np.uint8))
            if folder == layout.TRAIN_DIR:
                labels[i, rng.choice(26, rng.integers(10, 15), replace=False)] = 1
        rows = [",".join(["index", *layout.LETTERS])]
        rows += [",".join(map(str, [start + i, *labels[i]])) for i in range(n)]
        (root / csv_name).write_text("\n".join(rows) + "\n")
    return root


def dm(*args, env=None, limit: int | None = None) -> subprocess.Popen:
    """Start `python -m dirtymnist ARGS` (one thread); `limit`: a file-size limit in bytes."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DIRTYMNIST_KILL")},
           "OMP_NUM_THREADS": "1", **(env or {})}

    def pre():
        os.setsid()
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen([sys.executable, "-m", "dirtymnist", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pre)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def kill_group(p: subprocess.Popen) -> bool:
    """SIGKILL a command started by `dm` and its children; True when it was still running."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    return p.returncode == -signal.SIGKILL


def train_args(data: Path, run: Path, cache: Path, *extra) -> list:
    args = ["train", data, "--preset", "cpu", "--run-dir", run, "--cache-dir", cache]
    for item in TINY:
        args += ["--set", item]
    return [*args, *extra]  # after TINY: a later --set wins


def clean_exit(rc: int, err: str, where: Path) -> list[str]:
    """Exit 0, or exit 2 with one error line naming a path under `where`."""
    if rc == 0:
        return []
    last = err.strip().splitlines()[-1] if err.strip() else ""
    problems = []
    if rc != 2:
        problems.append(f"exit {rc} (not 0 or 2): {last}")
    if "Traceback" in err:
        problems.append(f"traceback: {err.strip()[-300:]}")
    if str(where) not in last:
        problems.append(f"error line does not name a path under {where}: {last}")
    return problems


def leftovers(folder: Path) -> list[str]:
    found = [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    return [f"left behind: {p}" for p in found]


@contextlib.contextmanager
def small_fs(root: Path, size: int):
    """A folder on a tmpfs of `size` bytes: yields (folder, mounted). Unmounted afterwards."""
    folder = Path(tempfile.mkdtemp(dir=root, prefix="smallfs-"))
    # DIRTYMNIST_FAULTS_NO_MOUNT=1 tries the fallback where mounting would work
    mounted = False
    if not os.environ.get("DIRTYMNIST_FAULTS_NO_MOUNT"):
        with contextlib.suppress(OSError):  # no `mount` program at all
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                     capture_output=True).returncode == 0
    try:
        yield folder, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def fill(folder: Path, leave: int) -> Path:
    """Take all the free space of `folder`'s filesystem but `leave` bytes; returns the filler."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        if free - leave > 0:
            os.posix_fallocate(f.fileno(), 0, free - leave)
    return filler


def same_weights(a: Path, b: Path) -> list[str]:
    import torch

    from dirtymnist.model.checkpoint import load_checkpoint

    x, y = load_checkpoint(a), load_checkpoint(b)
    if x["epoch"] != y["epoch"]:
        return [f"{b}: epoch {y['epoch']}, reference {x['epoch']}"]
    bad = [k for k in x["model"] if not torch.equal(x["model"][k], y["model"][k])]
    return [f"{b}: {len(bad)} tensors differ from the uninterrupted run ({bad[:2]})"] if bad else []


def loadable_run(run: Path) -> list[str]:
    """Every checkpoint present loads; every fold's OOF set verifies or is refused cleanly."""
    from dirtymnist.errors import DirtyMnistError
    from dirtymnist.model.checkpoint import load_checkpoint
    from dirtymnist.outputs import verify_set

    problems = []
    for ckpt in (c for f in RunDir(run).folds() for c in f.path.glob("*.pt")):
        try:
            load_checkpoint(ckpt)
        except DirtyMnistError as exc:
            problems.append(f"unloadable checkpoint: {exc}")
    for manifest in (f.oof_set for f in RunDir(run).folds() if f.oof_set.is_file()):
        with contextlib.suppress(DirtyMnistError):  # refused = detected, not mixed
            verify_set(manifest, "")
    return problems


def cache_ok(cache: Path, data: Path) -> list[str]:
    """The cache opens with the sources' pixels, or is refused as incomplete."""
    from dirtymnist.data.cache import open_split
    from dirtymnist.data.dataset import read_image
    from dirtymnist.errors import DataError

    problems = []
    for split, folder, start in (("train", layout.TRAIN_DIR, 0), ("test", layout.TEST_DIR, 50_000)):
        try:
            s = open_split(cache, split)
        except DataError:
            continue
        for row in (0, len(s) - 1):
            if not np.array_equal(s.images[row], read_image(data / folder / layout.png_name(start + row))):
                problems.append(f"{cache}: {split} row {row} differs from its PNG")
    return problems

def full_disk_rounds(row: Row, work: Path, size: int, rounds: int):
    """Yield (round, folder, mounted) `rounds` times, each on a fresh small filesystem (see small_fs)."""
    for r in range(rounds):
        with small_fs(work, size) as (fs, mounted):
            row.mode = "tmpfs" if mounted else "RLIMIT_FSIZE"
            yield r, fs, mounted


def full_then_free(fs: Path, mounted: bool, leave: int, args, check) -> tuple[list[str], bool, int, str]:
    """Run `dirtymnist *args` with `leave` bytes free on `fs`, check what it left, then run it again
    with space: (problems of the full run, whether the fault struck, exit code and stderr of the rerun)."""
    if mounted:
        fill(fs, leave)
    rc, err = finish(dm(*args, limit=None if mounted else leave))
    problems = clean_exit(rc, err, fs) + leftovers(fs) + check()
    hit = rc != 0
    if mounted:
        (fs / "filler").unlink()
    rc, err = finish(dm(*args))
    return problems, hit, rc, err


# --------------------------------------------------------------------------- faults
def disk_full_cache(work: Path, rounds: int, rng: random.Random, leaves: list[int] | None = None) -> Row:
    """`cache` onto a filesystem filled to a random level (0 .. 1.3x what the cache needs)."""
    row = Row("disk full while building the cache (`cache --workers 2`)")
    data = make_data(work / "data-cache-full")
    need = 56 * 256 * 256 + 8 * 4096
    for r, fs, mounted in full_disk_rounds(row, work, 4 * MB, rounds):
        leave = leaves[r] if leaves else rng.randint(0, int(1.3 * need))
        cache = fs / "cache"
        problems, hit, rc, err = full_then_free(
            fs, mounted, leave, ("cache", data, "--cache-dir", cache, "--workers", 2),
            partial(cache_ok, cache, data))
        problems += [] if rc == 0 else [f"rerun with space failed: {err.strip()[-300:]}"]
        row.check(problems + cache_ok(cache, data), hit)
    return row


def disk_full_checkpoint(work: Path, rounds: int, rng: random.Random, ref: Path, data: Path,
                         cache: Path) -> Row:
    """`train` into a run folder whose filesystem fills at a random point of the run."""
    row = Row("disk full while training (checkpoints, OOF, metrics)")
    for _, fs, mounted in full_disk_rounds(row, work, 40 * MB, rounds):
        run = fs / "run"
        # up to ~2.5 checkpoints of this tiny model (6 MB each with optimizer and EMA)
        leave = rng.randint(0, 15 * MB)
        problems, hit, rc, err = full_then_free(fs, mounted, leave, train_args(data, run, cache),
                                                partial(loadable_run, run))
        problems += [] if rc == 0 else [f"resume with space failed: {err.strip()[-300:]}"]
        if rc == 0:
            problems += same_weights(RunDir(ref).fold(0).last, RunDir(run).fold(0).last)
        row.check(problems, hit)
    return row


def disk_full_predict(work: Path, rounds: int, rng: random.Random, ref: Path, data: Path,
                      cache: Path) -> Row:
    """`predict --out` onto a filesystem filled to a random level, over an older good set."""
    from dirtymnist.errors import DirtyMnistError
    from dirtymnist.outputs import verify_set

    row = Row("disk full while writing predictions")
    for _, fs, mounted in full_disk_rounds(row, work, 1 * MB, rounds):
        out = fs / "sub.csv"
        base = ["predict", ref, "--data", data, "--cache-dir", cache, "--out", out]
        rc, err = finish(dm(*base))
        problems = [] if rc == 0 else [f"first predict failed: {err.strip()[-300:]}"]
        leave = rng.randint(0, 3000)
        if mounted:
            fill(fs, leave)
        rc, err = finish(dm(*base, "--thresholds", "0.3", limit=None if mounted else leave))
        problems += clean_exit(rc, err, fs) + leftovers(fs)
        try:
            verify_set(fs / "sub.set.json", "")
        except DirtyMnistError as exc:
            problems.append(f"the old set was not kept: {exc}")
        row.check(problems, rc != 0)
    return row


def two_writers(work: Path, rounds: int, data: Path, cache: Path) -> Row:
    """A second `train` into a run folder being written: same fold (refused, naming the PID),
    other settings (refused, nothing rewritten); the first is SIGKILLed and its lock dies too."""
    from dirtymnist.locks import FileLock

    row = Row("two trains into one run folder")
    for r in range(rounds):
        run = work / f"run-two-{r}"
        long = ("--set", "epochs=3000")  # still training while the others start (then killed)
        a = dm(*train_args(data, run, cache, *long))
        lock = RunDir(run).fold(0).lock
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        rc_b, err_b = finish(dm(*train_args(data, run, cache, *long)))
        rc_c, err_c = finish(dm(*train_args(data, run, cache, *long, "--set", "lr=0.5")))
        problems = []
        if a.poll() is not None:
            problems.append(f"the first train ended too soon (exit {a.returncode}: "
                            f"{a.communicate()[1].strip()[-300:]}) for this check")
        kill_group(a)
        if rc_b != 2 or f"PID {a.pid}" not in err_b:
            problems.append(f"second writer of fold 0 not refused by PID: exit {rc_b}, {err_b.strip()[-200:]}")
        if rc_c != 2 or "differs in lr" not in err_c:
            problems.append(f"other settings not refused: exit {rc_c}, {err_c.strip()[-200:]}")
        if "lr: 0.5" in RunDir(run).config.read_text():
            problems.append("config.yaml holds the refused run's settings")
        try:
            FileLock(lock).acquire(timeout=0).release()  # the killed holder left no stale lock
        except Exception as exc:  # noqa: BLE001
            problems.append(f"lock still held after its holder died: {exc}")
        row.check(problems + loadable_run(run), rc_b == 2 and rc_c == 2)
    return row


def parallel_folds(work: Path, rounds: int) -> Row:
    """`train --fold 0` and `--fold 1` started together on a folder with no cache yet."""
    from dirtymnist.model.checkpoint import load_checkpoint

    row = Row("parallel folds on an uncached folder")
    for r in range(rounds):
        data = make_data(work / f"data-par-{r}", seed=r)
        run, cache = work / f"run-par-{r}", data / ".dirtymnist_cache"
        procs = [dm(*train_args(data, run, cache, "--fold", f)) for f in (0, 1)]
        procs.append(dm("cache", data, "--cache-dir", cache, "--workers", 1))
        results = [finish(p) for p in procs]
        problems = [f"job {i} failed: exit {rc}, {err.strip()[-300:]}"
                    for i, (rc, err) in enumerate(results) if rc != 0]
        for f in (0, 1):
            last = RunDir(run).fold(f).last
            if last.is_file():
                if load_checkpoint(last)["epoch"] != 2:
                    problems.append(f"fold {f} did not finish")
            else:
                problems.append(f"fold {f}: no last.pt")
        row.check(problems + cache_ok(cache, data) + leftovers(run) + leftovers(cache), True)
    return row


def kill_cache(work: Path, rounds: int, rng: random.Random) -> Row:
    """SIGKILL `cache --force` at a random moment, then check and rebuild."""
    row = Row("SIGKILL during `cache` (random moment)")
    data = make_data(work / "data-kill-cache", n_train=160, n_test=16)
    cache = data / ".dirtymnist_cache"
    t0 = time.monotonic()
    finish(dm("cache", data, "--workers", 2))
    span = time.monotonic() - t0
    for _ in range(rounds):
        p = dm("cache", data, "--workers", 2, "--force")
        time.sleep(rng.uniform(0, span))
        hit = kill_group(p)  # the command and its decoding workers
        problems = cache_ok(cache, data)
        rc, err = finish(dm("cache", data, "--workers", 2))
        problems += [] if rc == 0 else [f"rebuild failed: {err.strip()[-300:]}"]
        row.check(problems + leftovers(cache) + cache_ok(cache, data), hit)
    return row


def kill_train(work: Path, rounds: int, rng: random.Random, ref: Path, data: Path, cache: Path,
               span: float) -> Row:
    """SIGKILL `train` at random moments; resume; compare with the uninterrupted run."""
    row = Row("SIGKILL during `train` (random moment), then resume")
    run = work / "run-kill"
    for _ in range(rounds):
        p = dm(*train_args(data, run, cache))
        time.sleep(rng.uniform(0, span))
        row.check(loadable_run(run), kill_group(p))
    rc, err = finish(dm(*train_args(data, run, cache)))
    final = [] if rc == 0 else [f"resume failed: {err.strip()[-300:]}"]
    if rc == 0:
        final += same_weights(RunDir(ref).fold(0).last, RunDir(run).fold(0).last) + leftovers(run)
    if final:
        row.lost += 1
        row.problems += final
    return row


def kill_predict(work: Path, rounds: int, rng: random.Random, ref: Path, data: Path,
                 cache: Path, span: float) -> Row:
    """SIGKILL `predict --out` at random moments over an older set: never a silently mixed set."""
    from dirtymnist.errors import DirtyMnistError
    from dirtymnist.infer.predict import ensemble

    row = Row("SIGKILL during `predict` (random moment)")
    out = work / "kill-predict" / "sub.csv"
    base = ["predict", ref, "--data", data, "--cache-dir", cache, "--out", out]
    finish(dm(*base))
    for r in range(rounds):
        p = dm(*base, "--thresholds", f"{0.3 + 0.01 * r:.2f}")
        time.sleep(rng.uniform(0, span))
        hit = kill_group(p)
        problems = []
        try:  # ensemble trusts the probabilities only when they match the CSV they came with
            ensemble([out.with_name("sub.probs.npy")], data)
        except DirtyMnistError as exc:
            if "set" not in str(exc):
                problems.append(f"refused for another reason: {exc}")
        rc, err = finish(dm(*base))
        problems += [] if rc == 0 else [f"rerun failed: {err.strip()[-300:]}"]
        ensemble([out.with_name("sub.probs.npy")], data)
        row.check(problems + leftovers(out.parent), hit)
    return row


# --------------------------------------------------------------------------- campaign
def campaign(work: Path, rounds: int, seed: int = 0, only: set[str] | None = None) -> list[Row]:
    rng = random.Random(seed)
    data = make_data(work / "data")
    cache = data / ".dirtymnist_cache"
    ref = work / "ref"
    t0 = time.monotonic()
    rc, err = finish(dm(*train_args(data, ref, cache)))
    if rc != 0:
        raise SystemExit(f"reference train failed: {err[-2000:]}")
    train_span = time.monotonic() - t0
    t0 = time.monotonic()
    finish(dm("predict", ref, "--data", data, "--out", work / "warm.csv"))
    predict_span = time.monotonic() - t0
    jobs = {
        "cache-full": lambda: disk_full_cache(work, rounds, rng),
        "train-full": lambda: disk_full_checkpoint(work, rounds, rng, ref, data, cache),
        "predict-full": lambda: disk_full_predict(work, rounds, rng, ref, data, cache),
        "two-writers": lambda: two_writers(work, max(1, rounds // 2), data, cache),
        "parallel-folds": lambda: parallel_folds(work, max(1, rounds // 2)),
        "kill-cache": lambda: kill_cache(work, 2 * rounds, rng),
        "kill-train": lambda: kill_train(work, 2 * rounds, rng, ref, data, cache, train_span),
        "kill-predict": lambda: kill_predict(work, 2 * rounds, rng, ref, data, cache, predict_span),
    }
    rows = []
    for name, job in jobs.items():
        if only is None or name in only:
            try:
                rows.append(job())
            except Exception as exc:  # noqa: BLE001 - a crash of the driver is a finding too
                rows.append(Row(name, 1, 0, 1, [f"driver crashed: {type(exc).__name__}: {exc}"]))
    return rows


def table(rows: list[Row]) -> str:
    return mdtable.table(["fault", "rounds tried", "rounds the fault struck", "data lost", "full disk made with"],
                          [[r.fault, r.rounds, r.hit, r.lost or "none", r.mode or "-"] for r in rows])
