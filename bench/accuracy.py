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
from precision import train_steps_per_minute  # bench/precision.py (this folder)

from dirtymnist import layout
from dirtymnist.arrays import sigmoid
from dirtymnist.config import load_config
from dirtymnist.data.cache import build_cache, open_split
from dirtymnist.data.dataset import DataPaths
from dirtymnist.data.synth import write_dataset
from dirtymnist.infer.predict import predict_rows
from dirtymnist.infer.thresholds import GRID, fit
from dirtymnist.metrics import exact_match, label_accuracy
from dirtymnist.model.transforms import TTA_PRESETS
from dirtymnist.train.loop import StopTraining, train


class BudgetProbe:
    """on_step hook: evaluates at budget points (training seconds), stops at the last one."""

    def __init__(self, recipe, points_s, val, test, device):
        self.recipe, self.points = recipe, list(points_s)
        self.budget = self.points[-1] / 60 if self.points else 0.0  # the run's planned minutes
        self.val, self.test, self.device = val, test, device  # (images, rows, labels)
        self.rows: list[dict] = []
        self.eval_seconds = 0.0

    def __call__(self, info) -> bool:
        self.last = info
        if not self.points or info.train_seconds < self.points[0]:
            return False
        t0 = time.perf_counter()
        point = self.points.pop(0)
        self.rows.append({"recipe": self.recipe, "budget": self.budget, "minutes": point / 60, "trained_s": info.train_seconds,
                          "samples": info.samples, **self._evaluate(info.model, info.cfg)})
        print(json.dumps(self.rows[-1]), flush=True)
        self.eval_seconds += time.perf_counter() - t0
        info.model.train()
        return not self.points

    def _probs(self, model, cfg, part, tta):
        images, rows, _ = part
        return sigmoid(predict_rows(model, cfg, images, rows, self.device, TTA_PRESETS[tta], 32))

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
            val_scores = ", ".join(f"{k} {v[0].acc_chosen:.3f}" for k, v in scores.items())
            pred, how = thr.apply(pt), f"{tta}, per-letter OOF ({thr.decode}); val: {val_scores}"
        return {"label_acc": label_accuracy(pred, yt), "exact_match": exact_match(pred, yt), "inference": how}


def fit_stages(cfg, minutes: float, spm: float, n_train: int) -> str:
    """Scale a staged recipe to the budget: ~10% easy dense steps, ~75% full dense steps, the
    rest on the data folder; generator pools scaled so that rendering them (which counts: it
    happens during training) stays a small share. Returns a one-line plan."""
    steps = minutes * spm
    data_steps = max(1, n_train // cfg.batch_size)
    plan = []
    for st in cfg.stages:  # dicts (config.StageConfig fields)
        if st["source"] == "data":
            st["epochs"] = max(1, int(0.15 * steps / data_steps))
            plan.append(f"{st['name']}: {st['epochs']} x {data_steps} steps")
            continue
        share = 0.10 if st["name"] == "easy" else 0.70
        total = max(10, round(share * steps))
        if total < st["steps"]:
            st["steps"], st["epochs"] = total, 1
        else:
            st["epochs"] = round(total / st["steps"])
        if st.get("pool"):
            st["pool"] = int(min(st["pool"], max(1000, 500 * minutes)))
        plan.append(f"{st['name']}: {st['epochs']} x {st['steps']} steps (pool {st.get('pool', 0)})")
    cfg.time_limit = minutes
    return f"planned at {spm:.0f} steps/min; " + ", ".join(plan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per recipe")
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--recipes", default="seed,winner,default")
    ap.add_argument("--test-max", type=int, default=0, help="evaluate on the first N test images (0 = all)")
    ap.add_argument("--val-max", type=int, default=500,
                    help="validation rows used to choose thresholds / TTA (evaluation time is not budget)")
    ap.add_argument("--merge", default="", help="JSON rows of an earlier invocation to show beside these")
    ap.add_argument("--steps-per-min", type=float, default=0,
                    help="plan staged recipes at this speed (0 = time 10 steps first)")
    ap.add_argument("--keep-stages", action="store_true",
                    help="run staged recipes as written (default: scale their stages to the budget)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="RECIPE:key=value override for one recipe (e.g. default:epochs=3)")
    ap.add_argument("--out", default="bench/out/accuracy")
    ap.add_argument("--tag", default="", help="suffix for this invocation's run dirs and files")
    ap.add_argument("--replot", default="",
                    help="only rewrite the table and plot from these JSON rows (files, comma-separated)")
    args = ap.parse_args()
    if args.replot:
        rows = [r for f in args.replot.split(",") for r in json.loads(Path(f).read_text())]
        _write(Path(args.out), rows, args, 0.0)
        return
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
    if args.threads:
        torch.set_num_threads(args.threads)
    points = [args.minutes * 60 * f for f in (0.25, 0.5, 1.0)]
    test_rows = np.arange(min(len(test), args.test_max or len(test)))
    results = []
    if args.merge:  # rows of recipes measured by an earlier invocation (same data, same budget)
        results = [r for r in json.loads(Path(args.merge).read_text()) if r["recipe"] not in args.recipes.split(",")]
    for recipe in args.recipes.split(","):
        extra = [o.split(":", 1)[1] for o in args.overrides if o.startswith(recipe + ":")]
        cfg = load_config(recipe, extra)
        if cfg.stages and not args.keep_stages:
            spm = args.steps_per_min or train_steps_per_minute(cfg, cfg.batch_size)
            n_rows = args.train * (cfg.folds_k - 1) // cfg.folds_k  # the training folds
            print(f"{recipe}: " + fit_stages(cfg, args.minutes, spm, n_rows))
        from dirtymnist.data.folds import make_folds, read_folds

        folds_path, _ = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed, method=cfg.folds_method)
        train_split = open_split(cache, "train")
        idx, fold = read_folds(folds_path)
        val_rows = np.searchsorted(train_split.index, idx[fold == 0])[:args.val_max or None]
        probe = BudgetProbe(recipe, points,
                            (train_split.images, val_rows, train_split.labels[val_rows]),
                            (test.images, test_rows, test.labels[test_rows]), device)
        run_dir = out / "runs" / (recipe + (f"-{args.tag}" if args.tag else ""))
        if run_dir.exists():  # a fresh run: train() would resume a finished one from last.pt
            import shutil

            shutil.rmtree(run_dir)
        t1 = time.perf_counter()
        try:
            train(data, cfg, folds=[0], run_dir=run_dir, on_step=probe, force=True)
        except StopTraining:
            pass
        if probe.points and getattr(probe, "last", None) is not None:
            # the schedule ended before the budget: its final model, at the time it ended
            info = probe.last
            print(f"{recipe}: schedule ended after {info.train_seconds / 60:.1f} min, before "
                  f"{probe.points[0] / 60:.1f}; the final model stands for the remaining points")
            probe.points = [info.train_seconds]
            probe(info)
            probe.rows[-1]["inference"] += " (schedule ended)"
        probe.points = []
        results += probe.rows
        print(f"{recipe}: wall {time.perf_counter() - t1:.0f}s (eval {probe.eval_seconds:.0f}s)")
    _write(out, results, args, gen_s)


def _write(out: Path, rows: list[dict], args, gen_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import sys

    from matplotlib.figure import Figure

    for r in rows:  # rows written before budgets were recorded came from --minutes runs
        r.setdefault("budget", args.minutes)
    lines = [f"`bench/accuracy.py {' '.join(sys.argv[1:])}` "
             f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; data generation {gen_s:.0f}s, not counted)", "",
             *summary_lines(rows), "",
             "| recipe | run's budget (min) | minutes | samples seen | test label acc | exact match | inference |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['budget']:g} | {r['minutes']:.1f} | {r['samples']} | "
                     f"{r['label_acc']:.4f} | {r['exact_match']:.4f} | {r['inference']} |")
    name = "accuracy" + (f"-{args.tag}" if args.tag else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    colours = {"seed": "tab:blue", "winner": "tab:orange", "default": "tab:green", "gpu": "tab:red"}
    budgets = sorted({r["budget"] for r in rows})
    styles = dict(zip(budgets, ["-", "--", ":", "-."] * 3))
    for recipe, budget in dict.fromkeys((r["recipe"], r["budget"]) for r in rows):
        pts = [(r["minutes"], r["label_acc"]) for r in rows if (r["recipe"], r["budget"]) == (recipe, budget)]
        label = f"{recipe} ({budget:g}-min run)" if len(budgets) > 1 else recipe
        ax.plot(*zip(*pts), marker="o", ls=styles[budget], color=colours.get(recipe), label=label)
    ax.axhline(0.538, color="grey", ls=":", label="all zeros")
    ax.set_xlabel(f"training minutes ({args.threads or 'all'} thread(s) per recipe, this CPU)")
    ax.set_ylabel("test label accuracy")
    ax.set_title("equal-budget study, synthetic data")
    ax.legend(loc="center right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png")
    print("\n".join(lines))


def at_budget(rows: list[dict], recipe: str, budget: float) -> dict | None:
    """The recipe's accuracy after `budget` training minutes: the final point of its run planned
    for that budget, else (recipes whose schedule does not depend on the budget, or a longer
    run) the point at that time."""
    own = [r for r in rows if r["recipe"] == recipe and r["budget"] == budget]
    if own:
        return max(own, key=lambda r: r["minutes"])
    later = [r for r in rows if r["recipe"] == recipe and abs(r["minutes"] - budget) < 1e-6]
    return later[0] if later else None


def summary_lines(rows: list[dict]) -> list[str]:
    """One row per budget: each recipe's accuracy at it, and when `default` (in its run planned
    for that budget) first reached `seed`'s accuracy at the budget."""
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    out = ["| budget (min) | " + " | ".join(recipes) + " | `default` reaches `seed`'s final accuracy at |",
           "|---|" + "---|" * len(recipes) + "---|"]
    for budget in sorted({r["budget"] for r in rows if r["recipe"] == "default"}):
        cells = []
        for recipe in recipes:
            r = at_budget(rows, recipe, budget)
            cells.append("--" if r is None else f"{r['label_acc']:.3f}")
        seed = at_budget(rows, "seed", budget)
        reach = "--"
        if seed is not None:
            own = sorted((r for r in rows if r["recipe"] == "default" and r["budget"] == budget),
                         key=lambda r: r["minutes"])
            hits = [r["minutes"] for r in own if r["label_acc"] >= seed["label_acc"]]
            reach = "not reached"
            if hits:
                first = "; first point" if hits[0] == own[0]["minutes"] else ""
                reach = f"{hits[0]:.1f} min ({hits[0] / budget:.0%} of the budget{first})"
        out.append(f"| {budget:g} | " + " | ".join(cells) + f" | {reach} |")
    return out


if __name__ == "__main__":
    main()
