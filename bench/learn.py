"""Learning curves on held-out glyph families: minutes of CPU training -> test label accuracy.

    .venv/bin/python bench/learn.py --minutes 8 --arms plain,curriculum,glyphs+curriculum

Training scenes use the TRAINING glyph families (`split_families(0.2, seed=0)`), the test set
(default 1,000 images) only the HELD-OUT families. One fixed pool of scenes with letter
positions is rendered first (its time reported separately); every arm trains on it through
the training engine (`train_fold`), evaluating on the test set once per ~minute of training:
  plain             the cpu preset's net, image-level BCE on the pool's images, from random init
  curriculum        dense position targets: easy scenes (few, large, opaque letters), then full
  glyphs+curriculum a single-glyph softmax stage first, then the same dense stages
  curriculum+hard   the curriculum whose last third of full epochs draws hard scenes (HARD)
  preset            the dense stages of --preset as it ships (its net, `pretrained`, steps, lr,
                    its main stage's generator knobs), drawing the training families from the
                    bench's pools; its data stage dropped
Writes curves.csv, curves.png and table.md under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

EASY = {"letters": [3, 6], "height": [30.0, 55.0], "transparent": 0.0, "distractors": [0, 0]}
# what the model misses most (docs/learning.md): small, faint, overlapping letters among distractors
HARD = {"height": [17.0, 35.0], "transparent": 0.5, "distractors": [1, 3], "max_overlap": 0.2}


def _fill(kind, knobs, seed, n, args) -> list:
    """sources.fill_pool, kept on disk under --pool-cache so that parallel and later runs of
    this bench skip rendering the same scenes (npz of arrays: no pickle)."""
    from dirtymnist.train import sources
    if not args.pool_cache:
        return sources.fill_pool(kind, knobs, seed, n, args.workers)
    import dirtymnist

    key = json.dumps([dirtymnist.__version__, kind, seed, n, sorted((k, v) for k, v in knobs.items())])
    import hashlib

    path = Path(args.pool_cache) / f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            parts = [z[f"a{i}"] for i in range(len(z.files))]
        samples = list(zip(*parts))
        for index, sample in enumerate(samples):
            sources._POOL[sources._pool_key(kind, seed, knobs, index)] = sample
        return samples
    samples = sources.fill_pool(kind, knobs, seed, n, args.workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    from dirtymnist.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"a{i}": np.stack(part) for i, part in enumerate(zip(*samples))})
    return samples


def heldout_test(seed: int, n: int, pool_cache: str = "", workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The bench's test set: n scenes of the HELD-OUT glyph families (seed + 1000), as
    (images uint8 (n, 256, 256), labels float32 (n, 26)); other bench scripts score on it too."""
    from dirtymnist.glyphs import split_families

    _, held = split_families(0.2, seed=0)
    test = _fill("synth", {"families": list(held)}, seed + 1000, n,
                 types.SimpleNamespace(pool_cache=pool_cache, workers=workers))
    return np.stack([s[0] for s in test]), np.stack([s[1] for s in test]).astype(np.float32)


def _load(args):
    from dirtymnist import layout
    from dirtymnist.glyphs import split_families

    train_fams, held = split_families(0.2, seed=0)
    knobs = {"families": list(train_fams), **_preset_knobs(args), **_knobs(args.knob)}
    t0 = time.perf_counter()
    pool = _fill("dense", knobs, args.seed, args.pool, args)
    t_pool = time.perf_counter() - t0
    t0 = time.perf_counter()
    easy = _fill("dense", {**EASY, **knobs}, args.seed, args.easy_pool, args)
    t_easy = time.perf_counter() - t0
    for hard_knobs, share in _preset_hard(args):  # scenes the preset mixes into its batches
        n = math.ceil(args.pool * share)
        t0 = time.perf_counter()
        _fill("dense", {**knobs, **hard_knobs}, args.seed, n, args)
        print(f"hard pool: {n} scenes ({hard_knobs}) in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    test = _fill("synth", {"families": list(held)}, args.seed + 1000, args.n_test, args)
    t_test = time.perf_counter() - t0
    images = np.stack([s[0] for s in pool] + [s[0] for s in test])
    labels = np.stack([s[1] for s in pool] + [s[1] for s in test])
    split = types.SimpleNamespace(images=images, labels=labels, letters=list(layout.LETTERS),
                                  index=np.arange(len(images)))
    gen = {"pool_scenes": args.pool, "pool_s": t_pool, "easy_scenes": len(easy), "easy_s": t_easy,
           "test_scenes": args.n_test, "test_s": t_test, "train_families": len(train_fams),
           "heldout_families": list(held)}
    return split, knobs, gen


def _is_easy(stage: dict) -> bool:
    """A preset's easy-scenes stage (few, large, opaque letters): it sets every EASY knob."""
    return set(EASY) <= set(stage.get("knobs") or {})


def _preset_knobs(args) -> dict:
    """The generator knobs of --preset's main dense stages (its non-easy ones; `default` widens
    its scenes), for the main pool when the preset arm runs; {} otherwise."""
    if "preset" not in args.arms.split(","):
        return {}
    from dirtymnist.config import load_config

    out = {}
    for stage in load_config(args.preset, list(args.set)).stages:
        if stage["source"] == "dense" and not _is_easy(stage):
            out.update({k: v for k, v in (stage.get("knobs") or {}).items() if k != "families"})
    return out


def _preset_hard(args) -> list[tuple[dict, float]]:
    """(hard_knobs, hard_share) of --preset's main dense stages that mix hard scenes in."""
    if "preset" not in args.arms.split(","):
        return []
    from dirtymnist.config import load_config

    return [(stage["hard_knobs"], stage["hard_share"]) for stage in load_config(args.preset, list(args.set)).stages
            if stage["source"] == "dense" and stage.get("hard_share") and not _is_easy(stage)]


def _knobs(items: list[str]) -> dict:
    """--knob KEY=VALUE (YAML values) -> generator knobs of the training pools (not the test set)."""
    from dirtymnist.config import parse_override
    from dirtymnist.data.crops import make_knobs
    from dirtymnist.errors import ConfigError

    try:
        out = dict(parse_override(item) for item in items)
        make_knobs(out)  # an unknown knob or a bad value stops here, before any rendering
    except (ConfigError, TypeError, ValueError) as e:
        raise SystemExit(f"--knob: {e}") from None
    return out


def _train_seed(args) -> int:
    return args.seed if args.train_seed is None else args.train_seed


def _alias_pools(seed: int, train_seed: int) -> None:
    """--train-seed: the arms' stages look their scenes up under their own seed, so the pools
    rendered with --seed are filed under it too, in an order shuffled by it (the same scenes in
    other batches: with ready weights and no augmentation on dense stages, the data order is
    what a training seed changes)."""
    if train_seed == seed:
        return
    from dirtymnist.train import sources

    groups: dict = {}
    for key in [k for k in sources._POOL if k[1] == seed and k[0] == "dense"]:
        groups.setdefault((key[0], key[2]), []).append(key[3])
    for (kind, knobs), indices in groups.items():
        order = np.random.default_rng([train_seed, 5]).permutation(len(indices))
        for index, src in zip(sorted(indices), order):
            sources._POOL[kind, train_seed, knobs, index] = sources._POOL[kind, seed, knobs, int(src)]


def _arm_config(arm: str, args, knobs: dict, steps_per_min: int):
    from dirtymnist.config import load_config

    minutes = args.minutes
    if arm == "preset":
        return _preset_config(args, knobs)
    # epochs of ~1 minute at the speed measured just before; the time limit ends the arm
    base = [f"model={args.model}", f"batch_size={args.batch}", f"seed={_train_seed(args)}", "ema=0",
            f"time_limit={minutes}", *args.set]
    if arm == "plain":
        epoch_min = args.pool / args.batch / steps_per_min
        epochs = max(1, math.ceil(minutes / epoch_min))
        return load_config("scratch", [*base, "stages=[]", f"epochs={epochs}", "warmup_epochs=0.2"])
    easy = {"name": "easy", "source": "dense", "steps": steps_per_min, "epochs": 1,
            "pool": args.easy_pool, "knobs": {**EASY, **knobs}}
    full = {"name": "full", "source": "dense", "steps": steps_per_min, "epochs": max(1, minutes - 1),
            "pool": args.pool, "knobs": knobs}
    stages = [easy, full]
    if arm == "curriculum+hard":  # issue 14, lever 4: hard examples once the easy ones are learned
        hard_epochs = max(1, (minutes - 1) // 3)
        full["epochs"] = max(1, minutes - 1 - hard_epochs)
        stages.append({**full, "name": "hard", "epochs": hard_epochs, "knobs": {**HARD, **knobs}})
    if arm == "glyphs+curriculum":
        glyph = {"name": "glyphs", "source": "glyphs", "steps": steps_per_min // 2, "epochs": 1,
                 "knobs": knobs, "lr": 0.004}
        full["epochs"] = max(1, minutes - 2)
        stages = [glyph, easy, full]
    cfg = load_config("scratch", [*base, "warmup_epochs=0.1"])
    cfg.stages = stages
    from dirtymnist.config import config_from_dict

    return config_from_dict(cfg.to_dict())


def _preset_config(args, knobs: dict):
    """--preset's own dense stages on the bench's scenes: its easy stages from the easy pool, the
    others from the main pool (drawn with their knobs, `_preset_knobs`); `data` stages dropped
    (the bench's pool has positions, so the dense stages are what a preset learns from here)."""
    from dirtymnist.config import config_from_dict, load_config

    cfg = load_config(args.preset, [f"seed={_train_seed(args)}", "ema=0", "time_limit=0", *args.set])
    stages = []
    for stage in cfg.to_dict()["stages"]:
        if stage.get("source") != "dense":
            continue
        easy = _is_easy(stage)
        stage = {**stage, "pool": args.easy_pool if easy else args.pool,
                 "knobs": {**EASY, **knobs} if easy else dict(knobs)}
        stages.append(stage)
    if not stages:
        raise SystemExit(f"--preset {args.preset}: no dense stage to run on the bench")
    cfg.stages = stages
    return config_from_dict(cfg.to_dict())


def _steps_per_minute(args) -> int:
    """Training speed of the preset's net on this machine now (20 timed steps)."""
    from precision import train_steps_per_minute  # bench/precision.py (this folder)

    from dirtymnist.config import load_config

    cfg = load_config("scratch", [f"model={args.model}", *args.set])
    return max(5, int(train_steps_per_minute(cfg, args.batch, steps=20)))


def run(args) -> None:
    import torch

    from dirtymnist.rundir import FoldDir
    from dirtymnist.train.loop import FoldContext, train_fold

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split, knobs, gen = _load(args)
    print(f"generation: {json.dumps(gen)}  (load {os.getloadavg()[0]:.1f})", flush=True)
    if "curriculum+hard" in args.arms.split(","):
        t0 = time.perf_counter()
        _fill("dense", {**HARD, **knobs}, args.seed, args.pool, args)
        print(f"hard pool: {args.pool} scenes in {time.perf_counter() - t0:.1f} s", flush=True)
    _alias_pools(args.seed, _train_seed(args))
    train_rows = np.arange(args.pool)
    val_rows = np.arange(args.pool, args.pool + args.n_test)
    curves, finals = {}, {}
    for arm in args.arms.split(","):
        spm = args.steps_per_min or (0 if arm == "preset" else _steps_per_minute(args))
        speed = f"{spm} steps per minute" if spm else f"steps as --preset {args.preset} plans them"
        print(f"{arm}: {speed} at batch {args.batch} (load {os.getloadavg()[0]:.1f})", flush=True)
        cfg = _arm_config(arm, args, knobs, spm)
        run_dir = out / arm.replace("+", "_")
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        loads = []
        fold = FoldDir(run_dir, 0)
        train_fold(FoldContext(cfg, torch.device("cpu"), force=True), split, train_rows, val_rows, fold)
        rows = fold.read_metrics()
        loads.append(os.getloadavg()[0])
        t = np.cumsum([r["data_time"] + r["step_time"] for r in rows]) / 60
        curves[arm] = [(float(m), r["label_acc"], r["train_loss"], r["val_loss"], r["stage"]) for m, r in zip(t, rows)]
        print(f"{arm}: " + ", ".join(f"{m:.1f}min {a:.3f}" for m, a, *_ in curves[arm])
              + f"  (load {loads[-1]:.1f})", flush=True)
        finals[arm] = _final_tta(fold.last, split, val_rows)
        print(f"{arm}: final model, " + ", ".join(f"{k} TTA {v:.4f}" for k, v in finals[arm].items()), flush=True)
        _write(out, curves, gen, spm, args, finals)


def _final_tta(checkpoint: Path, split, rows) -> dict:
    """Label accuracy (threshold 0.5) of the arm's last model on the test rows, per TTA preset;
    with `ema` on, of its EMA weights (what predict uses) and of its trained weights."""
    import torch

    from dirtymnist.infer.predict import predict_rows
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.model.checkpoint import load_checkpoint, load_model
    from dirtymnist.model.transforms import TTA_PRESETS

    out = {}
    has_ema = load_checkpoint(checkpoint).get("ema") is not None
    for weights in ("ema", "raw") if has_ema else ("raw",):
        model, cfg, _ = load_model(checkpoint, use_ema=weights == "ema")
        for tta in ("none", "rot90"):
            logits = predict_rows(model, cfg, split.images, rows, torch.device("cpu"), TTA_PRESETS[tta], 64)
            pred = (logits > 0).astype(np.uint8)  # sigmoid > 0.5
            out[f"{tta} (raw weights)" if has_ema and weights == "raw" else tta] = label_accuracy(pred, split.labels[rows])
    return out


def _write(out: Path, curves: dict, gen: dict, spm: int, args, finals: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["arm,minutes,label_acc,train_loss,val_loss,stage"]
    for arm, pts in curves.items():
        lines += [f"{arm},{m:.3f},{a:.4f},{tl:.4f},{vl:.4f},{s}" for m, a, tl, vl, s in pts]
    (out / "curves.csv").write_text("\n".join(lines) + "\n")
    table = ["| arm | minutes of training -> held-out label accuracy (after each epoch) |", "|---|---|"]
    for arm, pts in curves.items():
        tta = ", ".join(f"{k} TTA {v:.3f}" for k, v in finals.get(arm, {}).items())
        table.append(f"| {arm} | " + ", ".join(f"{m:.1f}: {a:.3f}" for m, a, *_ in pts) + f" (last model: {tta}) |")
    note = (f"\nmodel {args.model}, batch {args.batch}, {spm} steps/min measured; load "
            f"{os.getloadavg()[0]:.1f} at the end; generation (not in minutes): {json.dumps(gen)}\n")
    (out / "table.md").write_text("\n".join(table) + "\n" + note)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, pts in curves.items():
        ax.plot([0] + [p[0] for p in pts], [0.538] + [p[1] for p in pts], marker="o", label=arm)
    ax.axhline(0.538, color="grey", ls=":", label="all zeros")
    ax.axhline(0.80, color="grey", ls="--", lw=0.8)
    ax.set_xlabel(f"minutes of training ({args.threads} thread(s) of the shared 2-core CPU)")
    ax.set_ylabel("held-out-family test label accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=10, help="training minutes per arm (approx.)")
    p.add_argument("--arms", default="plain,curriculum,glyphs+curriculum")
    p.add_argument("--model", default="dm_fcn")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps-per-min", type=int, default=0,
                   help="plan stages at this speed (0 = time 20 steps first; that often underestimates)")
    p.add_argument("--pool", type=int, default=8000, help="fixed training scenes (with positions)")
    p.add_argument("--easy-pool", type=int, default=1500, help="fixed easy scenes")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the pools and the test set (and of training)")
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of training only (init, augmentation, mixing, and the order of --seed's pool "
                        "scenes), on the same scenes and test set: the spread of training alone")
    p.add_argument("--workers", type=int, default=2, help="processes for generation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pool-cache", default="", help="folder keeping rendered pools between runs (npz)")
    p.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE",
                   help="generator knob of the training pools (repeatable), e.g. --knob speckle=0.5")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every arm (repeatable), e.g. --set denoise=ink --set in_chans=2")
    p.add_argument("--preset", default="default",
                   help="preset (name or YAML path) whose dense stages the `preset` arm runs")
    p.add_argument("--out", default="bench/out/learn")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
