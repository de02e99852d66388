"""Competition delivery: `dirtymnist package RUN [RUN ...] --out submit/` assembles the
organisers' Docker code-submission folder.

    submit/
      Dockerfile                    FROM pytorch/pytorch:<version>-runtime, copies the folder
      main.py                       entry: ./data/test_dirty_mnist_2nd/ -> ./output/submission.csv
      dirtymnist/                   our package (pure Python), imported by main.py
      input/requirements.txt        pinned
      input/settings.json           TTA, thresholds, decoding, averaging, the model list
      input/models/run0_fold0.safetensors + .json   weights (no pickle) + config and letters
      input/sample_submission.csv
      output/                       written by main.py

main.py predicts as `predict` does: the models open with `infer.loader.open_model`, combine by
`ensemble.ensemble_probs` and are decided by `Thresholds.apply` with settings.json's thresholds
(read by `thresholds.load_thresholds`), so its submission equals predict's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.atomic import atomic_path, atomic_write_text, check_writable, current_umask
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.rundir import RunDir, model_files, model_name

log = logging.getLogger(__name__)

MODELS = Path("input") / "models"  # <name>.safetensors + <name>.json, in the submission folder
SETTINGS = Path("input") / "settings.json"

BASE_IMAGE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
# What the entry script imports besides torch (which the base image has), pinned.
REQUIREMENTS = ("numpy", "timm", "safetensors", "opencv-python-headless", "pyyaml", "tqdm")

DOCKERFILE = """\
# The organisers' template: the submit/ folder copied into a PyTorch runtime image.
FROM {base_image}
WORKDIR /workspace
COPY . /workspace
RUN pip install --no-cache-dir -r input/requirements.txt
# Test images are mounted at ./data/test_dirty_mnist_2nd/; the result goes to ./output/.
CMD ["python", "main.py"]
"""

MAIN_PY = '''\
"""Code submission entry: predict ./data/test_dirty_mnist_2nd/*.png -> ./output/submission.csv.

Runs offline on CPU or GPU with exactly the settings in ./input/settings.json.
Usage (in this folder): python main.py [--data DIR] [--out FILE]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dirtymnist.deliver.package import run_submission  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_submission(Path(__file__).resolve().parent, sys.argv[1:]))
'''


@dataclass
class PackagePlan:
    out: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (relative path, bytes)
    settings: dict = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def format(self) -> str:
        lines = [f"{size / 1e6:8.2f} MB  {name}" for name, size in self.files]
        lines.append(f"{self.total_bytes / 1e6:8.2f} MB  total ({len(self.files)} files) -> {self.out}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PackageOptions:
    """What goes into the submission folder: the TTA preset baked in, thresholds ("auto":
    RUN/thresholds.json of a single run if present, else 0.5; a number; a thresholds.json path),
    averaging (or weights fitted by `dirtymnist blend`), which checkpoint of each run, the folder
    holding sample_submission.csv (default: the run's data), and the Docker base image."""

    tta: str = "rot90"
    thresholds: str = "auto"
    average: str = "prob"
    blend: str | os.PathLike | None = None
    checkpoint: str = "best"
    data_dir: str | os.PathLike | None = None
    base_image: str = BASE_IMAGE


def package(runs, out="submit", *, dry_run: bool = False,
            options: PackageOptions = PackageOptions()) -> PackagePlan:
    """Assemble the submission folder from the runs' fold `best.pt` files (`dry_run`: only
    list what would go in and its size)."""
    from dirtymnist.infer.thresholds import parse_thresholds, run_thresholds
    from dirtymnist.model.transforms import TTA_PRESETS

    tta, thresholds, average, blend = options.tta, options.thresholds, options.average, options.blend
    if not runs:
        raise ConfigError("give at least one RUN (run directory or checkpoint)")
    if tta not in TTA_PRESETS:
        raise ConfigError(f"--tta {tta!r}; choose from {', '.join(TTA_PRESETS)}")
    members = [model_files(r, checkpoint=options.checkpoint) for r in runs]
    weights = None
    if blend is not None:  # weights fitted out of fold (`dirtymnist blend`), one (or 26) per run
        from dirtymnist.infer.blend import blend_for_runs

        weights, average = blend_for_runs(blend, runs)
    if thresholds == "auto":  # a single run's own thresholds.json, else 0.5
        thr = run_thresholds(runs[0]) if len(runs) == 1 else parse_thresholds("0.5")
    else:
        thr = parse_thresholds(thresholds)
    sample = _find_sample(runs, options.data_dir)

    out = Path(out)
    plan = PackagePlan(out)
    models = [(f"run{r}_{model_name(ckpt)}", r, ckpt) for r, group in enumerate(members) for ckpt in group]
    settings = {
        "tta": tta, "average": average,
        "weights": weights.tolist() if weights is not None else None,  # per run (or run x letter); None = equal
        **thr.to_dict(),  # thresholds and decode, as thresholds.json holds them
        "thresholds_source": thr.source,
        "models": [{"name": name, "run": r} for name, r, _ in models],
        "made": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    plan.settings = settings
    src_pkg = Path(__file__).resolve().parents[1]  # the dirtymnist package (this is deliver/package.py)
    pkg_files = [p for p in sorted(src_pkg.rglob("*")) if p.is_file() and _ship(p.relative_to(src_pkg))]
    if dry_run:
        for p in pkg_files:
            plan.files.append((f"dirtymnist/{p.relative_to(src_pkg)}", p.stat().st_size))
        for name, _, ckpt in models:
            plan.files.append(((MODELS / f"{name}.safetensors").as_posix(), _weights_size(ckpt)))
        plan.files.append(("input/sample_submission.csv", sample.stat().st_size))
        return plan

    if out.exists() and any(out.iterdir()) and not (out / "main.py").is_file():
        raise ConfigError(f"{out}: exists and is not a submission folder; choose another --out")
    # built beside `out`, then swapped in: a failure half-way (a bad checkpoint, a full disk)
    # leaves the previous submission folder whole and no half-built one
    check_writable(out)  # makes out's parent; a read-only one is one line naming `out`
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.building.", dir=out.parent))
    try:
        _assemble(build, pkg_files, src_pkg, models, sample, settings, options.base_image)
        _swap_in(build, out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    plan.files = [(str(p.relative_to(out)), p.stat().st_size) for p in sorted(out.rglob("*")) if p.is_file()]
    return plan


def _assemble(out: Path, pkg_files, src_pkg: Path, models, sample: Path, settings: dict, base_image: str) -> None:
    """Write the whole submission folder into `out` (an empty folder)."""
    (out / MODELS).mkdir(parents=True)
    (out / "output").mkdir()
    for p in pkg_files:
        target = out / "dirtymnist" / p.relative_to(src_pkg)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    for name, _, ckpt in models:
        export_weights(ckpt, out / MODELS / name)
    shutil.copy2(sample, out / "input" / layout.SAMPLE_CSV)
    atomic_write_text(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
    atomic_write_text(out / "input" / "requirements.txt", _requirements())
    atomic_write_text(out / "Dockerfile", DOCKERFILE.format(base_image=base_image))
    atomic_write_text(out / "main.py", MAIN_PY)
    (out / "data").mkdir(exist_ok=True)
    os.chmod(out, 0o777 & ~current_umask())  # mkdtemp makes 0700; give the usual permissions


def _swap_in(build: Path, out: Path) -> None:
    """Rename the finished `build` folder to `out`; a previous `out` is moved aside, then removed."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old)  # rename(2) of a folder over an empty folder
        else:
            out.rmdir()
    os.replace(build, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_weights(ckpt: Path, target_stem: Path) -> None:
    """best.pt -> <stem>.safetensors (EMA weights when present) + <stem>.json (config, letters)."""
    from safetensors.torch import save_file

    from dirtymnist.model.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    weights = {k: v.contiguous() for k, v in weights.items()}
    with atomic_path(target_stem.with_suffix(".safetensors"), suffix=".safetensors") as tmp:
        save_file(weights, str(tmp))
    meta = {"config": {**state["config"], "pretrained": ""}, "letters": list(state["letters"]),
            "source": str(ckpt), "epoch": state.get("epoch"), "best": state.get("best")}
    atomic_write_text(target_stem.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")


class PngFolder:
    """Images of a folder decoded on demand: `folder[rows]` -> uint8 (len(rows), 256, 256).

    Lets the batched predictor stream PNGs with memory independent of the folder's size.
    """

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, rows):
        from dirtymnist.data.dataset import read_image

        return np.stack([read_image(self.files[i]) for i in np.atleast_1d(rows)])


def run_submission(folder: Path, argv: list[str] | None = None) -> int:
    """The entry script's body: predict the test folder with the packaged settings."""
    import argparse

    import torch

    from dirtymnist.errors import DirtyMnistError
    from dirtymnist.infer.ensemble import EnsembleOptions, ensemble_probs
    from dirtymnist.infer.thresholds import load_thresholds
    from dirtymnist.submission import read_submission, write_submission

    ap = argparse.ArgumentParser(description="predict the test images with the packaged models")
    ap.add_argument("--data", default="data", help="folder holding test_dirty_mnist_2nd/ (default ./data)")
    ap.add_argument("--out", default="output/submission.csv")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.chdir(folder)
    try:
        thr = load_thresholds(SETTINGS)  # the thresholds and decoding package() wrote there
        settings = json.loads(SETTINGS.read_text(encoding="utf-8"))
        sample_csv = Path("input") / layout.SAMPLE_CSV
        sample = read_submission(sample_csv)
        test_dir = Path(args.data) / layout.TEST_DIR
        if not test_dir.is_dir():
            raise DataError(f"{test_dir}: test image folder not found")
        files = [test_dir / layout.png_name(i) for i in sample.index]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{test_dir}: {len(missing)} images of {sample_csv} are missing (e.g. {missing[0]})")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        runs: dict[int, list[Path]] = {}
        for m in settings["models"]:
            runs.setdefault(m["run"], []).append(MODELS / f"{m['name']}.json")
        t0 = time.perf_counter()
        how = EnsembleOptions(average=settings["average"], weights=settings.get("weights"),
                              batch_size=args.batch_size)
        probs = ensemble_probs([runs[r] for r in sorted(runs)], PngFolder(files), tta=settings["tta"],
                               device=device, options=how)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_submission(args.out, sample.index, thr.apply(probs), sample_csv)
        log.info("wrote %s: %d images, %d models, TTA %s, %.1fs", args.out, len(files),
                 len(settings["models"]), settings["tta"], time.perf_counter() - t0)
    except DirtyMnistError as exc:
        print(f"submission: error: {exc}", file=__import__("sys").stderr)
        return 2
    return 0


def _ship(rel: Path) -> bool:
    # The entry needs the inference code only: no caches, no glyph fonts, no ready weights
    # (the models carry their own weights in input/models/).
    parts = rel.parts
    return ("__pycache__" not in parts and parts[0] != "glyphs" and rel.suffix != ".pyc"
            and parts[:2] != ("model", "ready"))


def _weights_size(ckpt: Path) -> int:
    from dirtymnist.model.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    return sum(v.numel() * v.element_size() for v in weights.values())


def _find_sample(runs, data_dir) -> Path:
    candidates = []
    if data_dir:
        candidates.append(Path(data_dir) / layout.SAMPLE_CSV)
    for r in runs:
        d = RunDir(r).read_record().get("data_dir")
        if d:
            candidates.append(Path(d) / layout.SAMPLE_CSV)
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"{candidates[0] if candidates else 'sample_submission.csv'}: not found; "
                    "pass --data DATA_DIR (the folder with sample_submission.csv)")


def _requirements() -> str:
    from importlib.metadata import PackageNotFoundError, version

    lines = ["# pinned to the versions this submission was built and tested with",
             "# (torch comes from the base image)"]
    for name in REQUIREMENTS:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"
