"""A uint8 memory-mapped `.npy` cache of the train and test images, rebuilt only when sources change.

Layout of the cache folder (default `DATA_DIR/.dirtymnist_cache/`):
    {split}_images.npy  (N, 256, 256) uint8      {split}_index.npy  (N,) int64
    train_labels.npy    (N, 26) uint8            test_labels.npy    only with test_answer.csv
    manifest.json       written last: its presence is what makes the cache valid

A build first deletes the manifest, writes every array under a `.partial` name, renames them,
then writes the manifest atomically; a build killed at any moment leaves no manifest, so
`open_split` refuses the cache and the next `build_cache` rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist import dataset, layout
from dirtymnist.atomic import atomic_path, atomic_write_text
from dirtymnist.dataset import DataPaths, SplitFiles
from dirtymnist.errors import DataError
from dirtymnist.parallel import process_pool

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_DIRNAME = ".dirtymnist_cache"
MANIFEST = "manifest.json"
_PARTIAL = ".partial"
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
) -> Path:
    """Decode every train and test PNG once into the cache; return the cache folder.

    Reused as is when its manifest matches the sources (names, sizes, mtimes of the PNGs and
    CSVs). `workers`: decoding processes (default: all usable CPUs; 0 or 1 = in this process).
    """
    cache_dir = Path(cache_dir).expanduser().absolute() if cache_dir else default_cache_dir(paths)
    # comparing with the manifest needs no test answers: they are read only to build (pseudo.py)
    splits = {s: dataset.list_split(paths, s, labels=False) for s in dataset.SPLITS}
    sources = _describe_sources(paths, splits)

    manifest_path = cache_dir / MANIFEST
    old = _read_manifest(manifest_path)
    if old is not None and not force:
        changes = _diff_sources(old, sources)
        if not changes and _arrays_present(cache_dir, old):
            log.info("cache up to date: %s", cache_dir)
            return cache_dir
        reason = "; ".join(changes) or "cache arrays missing or damaged"
        log.info("rebuilding cache in %s: %s", cache_dir, reason)
    else:
        log.info("%s cache in %s", "rebuilding (forced)" if old else "building", cache_dir)

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache_dir}: cannot create cache folder ({exc.strerror}); "
                        "pass --cache-dir to put it elsewhere") from None
    if not os.access(cache_dir, os.W_OK):
        raise DataError(f"{cache_dir}: cache folder not writable; pass --cache-dir DIR")
    # From here on the cache must not look valid until the new manifest is written.
    manifest_path.unlink(missing_ok=True)
    for stale in cache_dir.glob(f"*{_PARTIAL}"):
        stale.unlink()

    workers = _default_workers() if workers is None else workers
    splits = {s: dataset.list_split(paths, s) for s in dataset.SPLITS}  # now with test labels
    arrays: dict[str, dict[str, str]] = {}
    for split, files in splits.items():
        arrays[split] = _write_split(cache_dir, files, workers)

    manifest = {"format_version": FORMAT_VERSION, **sources, "arrays": arrays}
    atomic_write_text(manifest_path, json.dumps(manifest, separators=(",", ":")))
    log.info("cache written: %s (%s)", cache_dir,
             ", ".join(f"{s} {len(f)}" for s, f in splits.items()))
    return cache_dir


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
    names = manifest["arrays"][split]
    count = manifest["splits"][split]["count"]
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


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _describe_sources(paths: DataPaths, splits: dict[str, SplitFiles]) -> dict:
    """The part of the manifest that must match the data for the cache to be reused."""
    desc = {"letters": list(layout.LETTERS), "csv": {
        "train_csv": _stat(paths.train_csv),
        "sample_csv": _stat(paths.sample_csv),
        "test_answer_csv": _stat(paths.test_answer_csv) if paths.test_answer_csv.is_file() else None,
    }, "splits": {}}
    for split, files in splits.items():
        stats = [p.stat() for p in files.paths]
        desc["splits"][split] = {
            "folder": str(files.folder),
            "count": len(files),
            "files": [p.name for p in files.paths],
            "sizes": [s.st_size for s in stats],
            "mtime_ns": [s.st_mtime_ns for s in stats],
        }
    return desc


def _diff_sources(old: dict, new: dict) -> list[str]:
    """What changed between a manifest and the current sources, as short phrases."""
    if old.get("format_version") != FORMAT_VERSION:
        return [f"cache format {old.get('format_version')} -> {FORMAT_VERSION}"]
    changes = []
    if old.get("letters") != new["letters"]:
        changes.append("letter list changed")
    for key, now in new["csv"].items():
        before = old.get("csv", {}).get(key)
        if before != now:
            name = (now or before or {}).get("name", key)
            state = "added" if before is None else "removed" if now is None else "changed"
            changes.append(f"{name} {state}")
    for split, now in new["splits"].items():
        before = old.get("splits", {}).get(split)
        if before is None:
            changes.append(f"{split}: not cached yet")
            continue
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


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = ("format_version", "letters", "csv", "splits", "arrays")
    return manifest if isinstance(manifest, dict) and all(k in manifest for k in needed) else None


def _arrays_present(cache_dir: Path, manifest: dict) -> bool:
    return all((cache_dir / name).is_file()
               for names in manifest["arrays"].values() for name in names.values())


# --- writing ----------------------------------------------------------------------------


def _write_split(cache_dir: Path, files: SplitFiles, workers: int) -> dict[str, str]:
    """Write one split's arrays; return their file names by role."""
    split = files.split
    names = {"images": f"{split}_images.npy", "index": f"{split}_index.npy"}
    _save_small(cache_dir / names["index"], files.index.astype(np.int64))
    if files.labels is not None:
        names["labels"] = f"{split}_labels.npy"
        _save_small(cache_dir / names["labels"], files.labels.astype(np.uint8))

    final = cache_dir / names["images"]
    partial = cache_dir / (names["images"] + _PARTIAL)
    size = layout.IMAGE_SIZE
    # A .npy file sized up front (sparse on most filesystems); workers write their rows into it.
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8,
                                    shape=(len(files), size, size))
    del out
    try:
        colour = _decode_all(partial, files, workers)
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    if colour:
        log.warning("%s: %d colour images converted to grayscale (first: %s)",
                    files.folder, len(colour), colour[0])
    return names


def _save_small(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _decode_all(target: Path, files: SplitFiles, workers: int) -> list[str]:
    """Decode `files` into rows of the .npy memmap at `target`; return names of colour images."""
    from tqdm import tqdm

    # Small enough chunks that every worker gets several (load balance), at most _CHUNK.
    size = max(1, min(_CHUNK, -(-len(files) // (4 * max(workers, 1)))))
    chunks = [(start, [str(p) for p in files.paths[start:start + size]])
              for start in range(0, len(files), size)]
    colour: list[str] = []

    def progress():
        return tqdm(total=len(files), desc=f"cache {files.split}", unit="img",
                    disable=None, leave=False)

    if workers <= 1 or len(chunks) == 1:
        with progress() as bar:
            for start, chunk in chunks:
                colour += _decode_chunk(str(target), start, chunk)
                bar.update(len(chunk))
        return sorted(colour)
    with process_pool(min(workers, len(chunks)), initializer=_init_worker) as pool:
        # Submit (and so start the workers) before tqdm may start its monitor thread.
        futures = {pool.submit(_decode_chunk, str(target), start, chunk): len(chunk)
                   for start, chunk in chunks}
        try:
            with progress() as bar:
                for fut in as_completed(futures):
                    colour += fut.result()
                    bar.update(futures[fut])
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return sorted(colour)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _decode_chunk(target: str, start: int, chunk: list[str]) -> list[str]:
    # Runs in a worker: opens the shared .npy file and fills rows start..start+len(chunk).
    out = np.load(target, mmap_mode="r+")
    colour = []
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
    return colour
