"""Equal-budget accuracy study: the `seed`, `winner` and `default` recipes side by side.

    .venv/bin/python bench/accuracy.py --minutes 10 [--train 5000 --test 1000] [--recipes seed,winner,default]

Same synthetic data for every recipe (fixed seed), one fold, the same training wall-clock
budget for each (evaluation time excluded). Each recipe is evaluated at 1/4, 1/2 and all of
the budget with its own inference:
  seed    -- mean of folds, no TTA, threshold 0.5 (the 9th-place team)
  winner  -- rot90 TTA, one global threshold tuned on the validation fold (the 1st place)
  default -- the TTA preset that scores best on the validation fold, per-letter OOF thresholds
Writes OUT/accuracy.md (table) and OUT/accuracy.png (accuracy against minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dirtymnist import layout
from dirtymnist.cache import build_cache, open_split
from dirtymnist.config import load_config
from dirtymnist.dataset import DataPaths
from dirtymnist.metrics import exact_match, label_accuracy
from dirtymnist.predict import predict_rows
from dirtymnist.synth import write_dataset
from dirtymnist.thresholds import GRID, fit
from dirtymnist.train import StopTraining, train
from dirtymnist.transforms import TTA_PRESETS


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


class BudgetProbe:
    """on_step hook: evaluates at budget points (training seconds), stops at the last one."""

    def __init__(self, recipe, points_s, val, test, device):
        self.recipe, self.points = recipe, list(points_s)
        self.val, self.test, self.device = val, test, device  # (images, rows, labels)
        self.rows: list[dict] = []
        self.eval_seconds = 0.0

    def __call__(self, info) -> bool:
        if not self.points or info.train_seconds < self.points[0]:
            return False
        t0 = time.perf_counter()
        point = self.points.pop(0)
        self.rows.append({"recipe": self.recipe, "minutes": point / 60, "trained_s": info.train_seconds,
                          "samples": info.samples, **self._evaluate(info.model, info.cfg)})
        print(json.dumps(self.rows[-1]), flush=True)
        self.eval_seconds += time.perf_counter() - t0
        info.model.train()
        return not self.points

    def _probs(self, model, cfg, part, tta):
        images, rows, _ = part
        return _sigmoid(predict_rows(model, cfg, images, rows, self.device, TTA_PRESETS[tta], 32))

    def _evaluate(self, model, cfg) -> dict:
        model.eval()
        yv, yt = self.val[2], self.test[2]
        if self.recipe == "seed":
            pt = self._probs(model, cfg, self.test, "none")
            pred, how = (pt > 0.5).astype(np.uint8), "no TTA, 0.5"
        elif self.recipe == "winner":
            pv, pt = self._probs(model, cfg, self.val, "rot90"), self._probs(model, cfg, self.test, "rot90")
            best = max(GRID, key=lambda t: (label_accuracy((pv > t).astype(np.uint8), yv), -abs(t - 0.5)))
            pred, how = (pt > best).astype(np.uint8), f"rot90, global {best:.2f}"
        else:
            scores = {}
            for tta in ("none", "rot90", "d4"):
                pv = self._probs(model, cfg, self.val, tta)
                scores[tta] = (fit(pv, yv), pv)
            tta = max(scores, key=lambda k: scores[k][0].acc_chosen)
            thr = scores[tta][0].thresholds
            pt = self._probs(model, cfg, self.test, tta)
            pred, how = thr.apply(pt), f"{tta}, per-letter OOF ({thr.decode})"
        return {"label_acc": label_accuracy(pred, yt), "exact_match": exact_match(pred, yt), "inference": how}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per recipe")
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--recipes", default="seed,winner,default")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="RECIPE:key=value override for one recipe (e.g. default:epochs=3)")
    ap.add_argument("--out", default="bench/out/accuracy")
    ap.add_argument("--tag", default="", help="suffix for this invocation's run dirs and files")
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    t0 = time.perf_counter()
    if not (data / layout.TEST_ANSWER_CSV).is_file():
        write_dataset(data, args.train, args.test, seed=1234)
    paths = DataPaths.from_root(data)
    cache = build_cache(paths)
    gen_s = time.perf_counter() - t0
    test = open_split(cache, "test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    points = [args.minutes * 60 * f for f in (0.25, 0.5, 1.0)]
    results = []
    for recipe in args.recipes.split(","):
        extra = [o.split(":", 1)[1] for o in args.overrides if o.startswith(recipe + ":")]
        cfg = load_config(recipe, extra)
        from dirtymnist.folds import make_folds, read_folds

        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed, method=cfg.folds_method)
        train_split = open_split(cache, "train")
        idx, fold = read_folds(folds_path)
        val_rows = np.searchsorted(train_split.index, idx[fold == 0])
        probe = BudgetProbe(recipe, points,
                            (train_split.images, val_rows, train_split.labels[val_rows]),
                            (test.images, np.arange(len(test)), test.labels), device)
        run_dir = out / "runs" / (recipe + (f"-{args.tag}" if args.tag else ""))
        t1 = time.perf_counter()
        try:
            train(data, cfg, folds=[0], run_dir=run_dir, on_step=probe, force=True)
        except StopTraining:
            pass
        while probe.points:  # the run ended before the budget (early stop, short schedule)
            print(f"{recipe}: schedule ended before {probe.points[0] / 60:.1f} min")
            probe.points.pop(0)
        results += probe.rows
        print(f"{recipe}: wall {time.perf_counter() - t1:.0f}s (eval {probe.eval_seconds:.0f}s)")
    _write(out, results, args, gen_s)


def _write(out: Path, rows: list[dict], args, gen_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    lines = [f"`bench/accuracy.py --minutes {args.minutes} --train {args.train} --test {args.test}` "
             f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; data generation {gen_s:.0f}s, not counted)", "",
             "| recipe | minutes | samples seen | test label acc | exact match | inference |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['minutes']:.1f} | {r['samples']} | {r['label_acc']:.4f} | "
                     f"{r['exact_match']:.4f} | {r['inference']} |")
    name = "accuracy" + (f"-{args.tag}" if args.tag else "")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        pts = [(r["minutes"], r["label_acc"]) for r in rows if r["recipe"] == recipe]
        ax.plot(*zip(*pts), marker="o", label=recipe)
    ax.axhline(0.538, color="grey", ls=":", label="all zeros")
    ax.set_xlabel("training minutes (this CPU)")
    ax.set_ylabel("test label accuracy")
    ax.set_title("equal-budget study, synthetic data")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{name}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
