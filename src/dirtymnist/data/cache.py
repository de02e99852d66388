"""A uint8 memory-mapped `.npy` cache of the train and test images, rebuilt only when sources change.

Layout of the cache folder (default `DATA_DIR/.dirtymnist_cache/`):
    {split}_images.npy  (N, 256, 256) uint8      {split}_index.npy  (N,) int64
    train_labels.npy    (N, 26) uint8            test_labels.npy    only with test_answer.csv
    manifest.json       one entry per cached split, written last: a split is valid only
                        while its entry is there (a folder may hold only one split)
    .build.lock         held by the one process building (the others wait, then reuse)

A build first rewrites the manifest without the splits it rebuilds, checks that their arrays
fit on the disk and reserves their blocks, writes each array under a `.partial` name, renames
it, then writes the manifest atomically; a build killed at any moment leaves those splits out
of the manifest, so `open_split` refuses them and the next `build_cache` rebuilds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.data import dataset
from dirtymnist.data.dataset import DataPaths, SplitFiles
from dirtymnist.errors import DataError
from dirtymnist.locks import FileLock, LockHeld
from dirtymnist.parallel import process_pool
from dirtymnist.space import ensure_free, preallocate, space_errors

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: one manifest entry per split (a folder may hold only one)
CACHE_DIRNAME = ".dirtymnist_cache"
MANIFEST = "manifest.json"
_PARTIAL = ".partial"
_LOCK = ".build.lock"  # held by the one process building this cache folder
_CHUNK = 256  # images per worker task


@dataclass(frozen=True)
class CachedSplit:
    """One split of the cache. `images` is a read-only memmap: slicing reads only those pages."""

    split: str
    images: np.memmap  # (N, 256, 256) uint8
    labels: np.ndarray | None  # (N, 26) uint8, None for an unlabelled test split
    index: np.ndarray  # (N,) int64, row i is image `index[i]`
    letters: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.index)


def default_cache_dir(paths: DataPaths) -> Path:
    return paths.root / CACHE_DIRNAME


def build_cache(
    paths: DataPaths,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    force: bool = False,
    splits: tuple[str, ...] | None = None,
    verify: bool = False,
) -> Path:
    """Decode the PNGs of `splits` once into the cache; return the cache folder.

    `splits`: the ones a command reads (default: those present in the folder), so a folder
    holding only the test images and the sample submission is enough to predict. A split is
    reused as is when its manifest entry matches the sources (names, sizes, mtimes of the PNGs;
    contents of the CSVs); `verify` also hashes every PNG's contents. One process builds a
    cache folder at a time: the others wait for it, then reuse what it built. `workers`:
    decoding processes (default: all usable CPUs; 0 or 1 = in this process).
    """
    cache_dir = Path(cache_dir).expanduser().absolute() if cache_dir else default_cache_dir(paths)
    splits = present_splits(paths) if splits is None else tuple(splits)
    # deciding what is stale needs no test answers: they are read only to build (pseudo.py)
    files = {s: dataset.list_split(paths, s, labels=False) for s in splits}
    manifest_path = cache_dir / MANIFEST
    if not force and not _stale_splits(cache_dir, _read_manifest(manifest_path), paths, files, verify):
        log.info("cache up to date: %s", cache_dir)
        _remove_leftovers(cache_dir)
        return cache_dir

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache_dir}: cannot create cache folder ({exc.strerror}); "
                        "pass --cache-dir to put it elsewhere") from None
    if not os.access(cache_dir, os.W_OK):
        raise DataError(f"{cache_dir}: cache folder not writable; pass --cache-dir DIR")
    lock = FileLock(cache_dir / _LOCK, what="a cache build")
    try:
        lock.acquire(timeout=0)
    except LockHeld as held:
        log.info("waiting for the cache build that holds %s", held)
        lock.acquire(timeout=None)
    with lock:
        # read again under the lock: the build we waited for may have made what we need
        old = _read_manifest(manifest_path)
        stale = (dict.fromkeys(files, "forced") if force
                 else _stale_splits(cache_dir, old, paths, files, verify))
        if not stale:
            log.info("cache built meanwhile by another process, reused: %s", cache_dir)
            return cache_dir
        files.update({s: dataset.list_split(paths, s) for s in stale})  # now with the labels
        for split, reason in stale.items():
            known = old is not None and split in old["splits"]
            log.info("%s %s cache in %s: %s", "rebuilding" if known else "building", split, cache_dir, reason)
        ensure_free(cache_dir, sum(_split_bytes(files[s]) for s in stale), "the cache")
        # Splits not rebuilt keep their entries; those being rebuilt must not look valid until
        # the new manifest is written.
        kept = {s: e for s, e in (_usable(old) or {}).get("splits", {}).items() if s not in stale}
        if old is not None:
            _write_manifest(manifest_path, kept)
        _remove_leftovers(cache_dir, lock)
        workers = _default_workers() if workers is None else workers
        for split in stale:
            entry = _describe_split(paths, files[split])
            entry["arrays"], hashes = _write_split(cache_dir, files[split], workers, hashing=verify)
            if hashes is not None:
                entry["sha256"] = hashes
            kept[split] = entry
        _write_manifest(manifest_path, kept)
    log.info("cache written: %s (%s)", cache_dir, ", ".join(f"{s} {len(files[s])}" for s in stale))
    return cache_dir


def _remove_leftovers(cache_dir: Path, lock: FileLock | None = None) -> None:
    """Delete the partial and temp files of a build that was killed -- only while no build runs."""
    leftovers = [*cache_dir.glob(f"*{_PARTIAL}"), *cache_dir.glob(".*.tmp")]
    if not leftovers:
        return
    with contextlib.ExitStack() as stack:
        if lock is None:
            try:
                stack.enter_context(FileLock(cache_dir / _LOCK, what="a cache build"))
            except LockHeld:
                return  # a build is running: these may be its files
        for path in leftovers:
            path.unlink(missing_ok=True)


def present_splits(paths: DataPaths) -> tuple[str, ...]:
    """The splits this folder holds (either its images or its CSV); a DataError when none."""
    found = tuple(s for s in dataset.SPLITS
                  if any(p.exists() for p in dataset.split_sources(paths, s)))
    if not found:
        raise DataError(f"{paths.root}: holds neither the training split ({paths.train_dir.name}/, "
                        f"{paths.train_csv.name}) nor the test split ({paths.test_dir.name}/, "
                        f"{paths.sample_csv.name})")
    return found


def open_split(cache_dir_or_paths: str | os.PathLike | DataPaths, split: str,
               labels: bool = True) -> CachedSplit:
    """Open one split of a built cache (images memory-mapped read-only; < 1 s for 50,000).

    labels=False leaves the label array unread (pseudo labelling must never see test answers).
    """
    with_labels = labels
    if split not in dataset.SPLITS:
        raise ValueError(f"split must be one of {dataset.SPLITS}, got {split!r}")
    cache_dir = _resolve_cache_dir(cache_dir_or_paths)
    hint = "run `dirtymnist cache DATA_DIR` first"
    if not cache_dir.is_dir():
        raise DataError(f"{cache_dir}: no cache here; {hint}")
    manifest = _read_manifest(cache_dir / MANIFEST)
    if manifest is None:
        raise DataError(f"{cache_dir}: cache incomplete (no valid {MANIFEST}); {hint}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{cache_dir / MANIFEST}: cache format {manifest.get('format_version')}, "
                        f"expected {FORMAT_VERSION}; run `dirtymnist cache DATA_DIR --force`")
    entry = manifest["splits"].get(split)
    if entry is None:
        raise DataError(f"{cache_dir}: cache incomplete (no {split} split in {MANIFEST}); "
                        f"run `dirtymnist cache DATA_DIR` on a folder that holds the {split} split")
    names, count = entry["arrays"], entry["count"]
    try:
        images = np.load(cache_dir / names["images"], mmap_mode="r")
        index = np.load(cache_dir / names["index"])
        labels = np.load(cache_dir / names["labels"]) if with_labels and "labels" in names else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{cache_dir}: cache array unreadable ({exc}); {hint}") from None
    size = layout.IMAGE_SIZE
    if (images.shape != (count, size, size) or images.dtype != np.uint8
            or index.shape != (count,)
            or (labels is not None and labels.shape != (count, len(manifest["letters"])))):
        raise DataError(f"{cache_dir}: {split} arrays do not match {MANIFEST}; {hint} --force")
    return CachedSplit(split=split, images=images, labels=labels, index=index,
                       letters=tuple(manifest["letters"]))


def _resolve_cache_dir(where: str | os.PathLike | DataPaths) -> Path:
    # Accept a DataPaths, a cache folder, or a data folder holding the default cache.
    if isinstance(where, DataPaths):
        return default_cache_dir(where)
    where = Path(where).expanduser().absolute()
    if not (where / MANIFEST).exists() and (where / CACHE_DIRNAME).is_dir():
        return where / CACHE_DIRNAME
    return where


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- describing the sources -------------------------------------------------------------


def _stat(path: Path, contents: bool = True) -> dict:
    # CSVs are small: their contents are hashed, so an edit that keeps size and mtime is seen
    # (but not the test answers: training must never read them, see pseudo.py)
    st = path.stat()
    record = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if contents:
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def _describe_split(paths: DataPaths, files: SplitFiles) -> dict:
    """The manifest entry of one split that must match the data for it to be reused."""
    csvs = {"csv": files.csv}
    if files.split == "test" and paths.test_answer_csv.is_file():
        csvs["test_answer_csv"] = paths.test_answer_csv
    stats = [p.stat() for p in files.paths]
    return {
        "folder": str(files.folder),
        "count": len(files),
        "csv": {role: _stat(p, contents=role != "test_answer_csv") for role, p in csvs.items()},
        "files": [p.name for p in files.paths],
        "sizes": [s.st_size for s in stats],
        "mtime_ns": [s.st_mtime_ns for s in stats],
    }


def _stale_splits(cache_dir: Path, manifest: dict | None, paths: DataPaths,
                  files: dict[str, SplitFiles], verify: bool) -> dict[str, str]:
    """{split: why it must be (re)built} for the splits in `files`; {} when all are up to date."""
    if manifest is not None and _usable(manifest) is None:
        return dict.fromkeys(files, f"cache format {manifest['format_version']} -> {FORMAT_VERSION} "
                             "or another class list")
    stale = {}
    for split, f in files.items():
        entry = (manifest or {}).get("splits", {}).get(split)
        if entry is None:
            stale[split] = "not cached yet"
            continue
        changes = _diff_split(split, entry, _describe_split(paths, f))
        if not changes and not all((cache_dir / n).is_file() for n in entry["arrays"].values()):
            changes = ["cache arrays missing"]
        if not changes and verify:
            changes = _verify_contents(entry, f)
        if changes:
            stale[split] = "; ".join(changes)
    return stale


def _diff_split(split: str, before: dict, now: dict) -> list[str]:
    """What changed between a split's manifest entry and its current sources, as short phrases."""
    changes = []
    for role in sorted(set(before["csv"]) | set(now["csv"])):
        b, a = before["csv"].get(role), now["csv"].get(role)
        if b != a:
            state = "added" if b is None else "removed" if a is None else "changed"
            changes.append(f"{(a or b)['name']} {state}")
    b = {n: (s, m) for n, s, m in zip(before["files"], before["sizes"], before["mtime_ns"])}
    a = {n: (s, m) for n, s, m in zip(now["files"], now["sizes"], now["mtime_ns"])}
    added = [n for n in a if n not in b]
    removed = [n for n in b if n not in a]
    modified = [n for n in a if n in b and a[n] != b[n]]
    for what, names in (("added", added), ("removed", removed), ("modified", modified)):
        if names:
            changes.append(f"{split}: {len(names)} images {what} ({', '.join(names[:3])}"
                           f"{', ...' if len(names) > 3 else ''})")
    if not (added or removed or modified) and before["files"] != now["files"]:
        changes.append(f"{split}: image order changed")
    return changes


def _verify_contents(entry: dict, files: SplitFiles) -> list[str]:
    """Hash every source PNG and compare with the hashes stored at build time."""
    if "sha256" not in entry:
        return [f"{files.split}: built without content hashes (rebuilt once to store them)"]
    changed = [p.name for p, h in zip(files.paths, entry["sha256"]) if _sha256(p) != h]
    if changed:
        return [f"{files.split}: {len(changed)} images changed in content ({', '.join(changed[:3])}"
                f"{', ...' if len(changed) > 3 else ''})"]
    return []


def _sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = ("format_version", "letters", "splits")
    return manifest if isinstance(manifest, dict) and all(k in manifest for k in needed) else None


def _usable(manifest: dict | None) -> dict | None:
    """The manifest, or None when it is of another format or class list (all rebuilt then)."""
    if manifest is None or manifest["format_version"] != FORMAT_VERSION:
        return None
    return manifest if manifest["letters"] == list(layout.LETTERS) else None


def _write_manifest(path: Path, splits: dict[str, dict]) -> None:
    manifest = {"format_version": FORMAT_VERSION, "letters": list(layout.LETTERS), "splits": splits}
    atomic_write_text(path, json.dumps(manifest, separators=(",", ":")))


def _split_bytes(files: SplitFiles) -> int:
    """Bytes a split's arrays take: images (N, 256, 256) uint8, index int64, labels (N, 26)."""
    n = len(files)
    return n * (layout.IMAGE_SIZE ** 2 + 8 + len(layout.LETTERS)) + 3 * 128


# --- writing ----------------------------------------------------------------------------


def _write_split(cache_dir: Path, files: SplitFiles, workers: int,
                 hashing: bool = False) -> tuple[dict[str, str], list[str] | None]:
    """Write one split's arrays; return their file names by role (and the PNGs' sha256 if asked)."""
    split = files.split
    names = {"images": f"{split}_images.npy", "index": f"{split}_index.npy"}
    _save_small(cache_dir / names["index"], files.index.astype(np.int64))
    if files.labels is not None:
        names["labels"] = f"{split}_labels.npy"
        _save_small(cache_dir / names["labels"], files.labels.astype(np.uint8))

    final = cache_dir / names["images"]
    partial = cache_dir / (names["images"] + _PARTIAL)
    size = layout.IMAGE_SIZE
    try:
        with space_errors(partial, "the cache"):
            # A .npy file sized up front; workers write their rows into it through memmaps.
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8,
                                            shape=(len(files), size, size))
            total = out.offset + out.nbytes
            del out
            # Its blocks are reserved now: a full disk is this clean ENOSPC, not a SIGBUS later.
            preallocate(partial, total)
            colour, hashes = _decode_all(partial, files, workers, hashing)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    if colour:
        log.warning("%s: %d colour images converted to grayscale (first: %s)",
                    files.folder, len(colour), colour[0])
    return names, hashes


def _save_small(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _decode_all(target: Path, files: SplitFiles, workers: int,
                hashing: bool = False) -> tuple[list[str], list[str] | None]:
    """Decode `files` into rows of the .npy memmap at `target`.

    Returns the names of colour images, and each PNG's sha256 in row order when `hashing`.
    """
    from tqdm.auto import tqdm  # a widget in notebooks, a text bar elsewhere

    # Small enough chunks that every worker gets several (load balance), at most _CHUNK.
    size = max(1, min(_CHUNK, -(-len(files) // (4 * max(workers, 1)))))
    chunks = [(start, [str(p) for p in files.paths[start:start + size]])
              for start in range(0, len(files), size)]
    colour: list[str] = []
    hashes: dict[int, list[str]] = {}

    def progress():
        return tqdm(total=len(files), desc=f"cache {files.split}", unit="img",
                    disable=None, leave=False)

    if workers <= 1 or len(chunks) == 1:
        with progress() as bar:
            for start, chunk in chunks:
                c, hashes[start] = _decode_chunk(str(target), start, chunk, hashing)
                colour += c
                bar.update(len(chunk))
        return sorted(colour), _in_order(hashes, hashing)
    with process_pool(min(workers, len(chunks)), initializer=_init_worker) as pool:
        # Submit (and so start the workers) before tqdm may start its monitor thread.
        futures = {pool.submit(_decode_chunk, str(target), start, chunk, hashing): (start, len(chunk))
                   for start, chunk in chunks}
        try:
            with progress() as bar:
                for fut in as_completed(futures):
                    start, n = futures[fut]
                    c, hashes[start] = fut.result()
                    colour += c
                    bar.update(n)
        except BrokenProcessPool:
            raise DataError(f"{target}: a decoding worker died (killed, or out of memory); "
                            "run the command again, or with --workers 1 to see why") from None
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return sorted(colour), _in_order(hashes, hashing)


def _in_order(hashes: dict[int, list[str]], hashing: bool) -> list[str] | None:
    return [h for start in sorted(hashes) for h in hashes[start]] if hashing else None


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _decode_chunk(target: str, start: int, chunk: list[str],
                  hashing: bool = False) -> tuple[list[str], list[str]]:
    # Runs in a worker: opens the shared .npy file and fills rows start..start+len(chunk).
    out = np.load(target, mmap_mode="r+")
    colour = []
    hashes = [_sha256(p) for p in chunk] if hashing else []
    for i, path in enumerate(chunk):
        img, channels = dataset.decode_image(path)
        out[start + i] = img
        if channels != 1:
            colour.append(Path(path).name)
    offset, length = out.offset + start * out[0].nbytes, len(chunk) * out[0].nbytes
    # No out.flush(): that is a synchronous msync per chunk. Instead ask the kernel to start
    # writing these rows back now, without waiting, so the parent's one fsync at the end
    # (before the rename) finds little left to write.
    del out
    if hasattr(os, "posix_fadvise"):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return colour, hashes
