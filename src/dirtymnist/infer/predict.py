"""Predict with one run or an ensemble, with TTA; write the submission and its probabilities.

    dirtymnist predict runs/cpu --data DATA --tta rot90 --out sub.csv
    dirtymnist predict runs/a runs/b/fold0/best.pt --data DATA --weights 2,1 --out sub.csv
    dirtymnist ensemble a.probs.npy b.probs.npy --data DATA --out sub.csv
    dirtymnist evaluate-tta runs/cpu --data DATA

A RUN is a run directory (every `fold*/best.pt`) or one checkpoint file (`rundir.model_files`).
Each model's logits are averaged over the TTA views; the models are combined by
`ensemble.ensemble_probs` (a run is the mean of its folds, the ensemble the weighted mean of its
runs, of probabilities or of logits) and decided by `thresholds.Thresholds.apply`.
Images stream from the memory-mapped cache in batches, one model in memory at a time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dirtymnist import layout
from dirtymnist.arrays import positions, sigmoid
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.infer.ensemble import AVERAGES, EnsembleOptions, combine, ensemble_probs
from dirtymnist.infer.loader import open_model
from dirtymnist.infer.loader import predict_rows as predict_rows  # bench/ imports it from here
from dirtymnist.infer.thresholds import Thresholds, decode, parse_thresholds
from dirtymnist.model.precision import choose_device
from dirtymnist.model.transforms import TTA_PRESETS
from dirtymnist.outputs import check_output_path
from dirtymnist.rundir import RunDir, model_files

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnx")
CONFUSABLE = ("b", "d", "p", "q", "n", "u")  # letters a rotation or mirror can turn into another
_SAME_VIEW = {"id": "rot0"}  # TTA views that are one transform under two names (transforms.TTA_PRESETS)


@dataclass
class PredictResult:
    index: np.ndarray  # (N,) int64 competition indices, the split's (sample submission's) order
    probs: np.ndarray  # (N, 26) float32 ensemble probabilities
    pred: np.ndarray  # (N, 26) uint8 decoded with `thresholds`
    thresholds: Thresholds
    members: list[Path]  # every model used
    submission: Path | None = None
    probs_file: Path | None = None
    score: object | None = None  # evaluate.EvalReport when the split has labels


@dataclass(frozen=True)
class PredictOptions:
    """How `predict` predicts: TTA preset, thresholds (a number, `NUMBER:count`, a thresholds.json,
    `fit`, or a `Thresholds`), engine, the ensemble's averaging and weights (or a `blend.json`),
    which checkpoint of each run, batch size, cache folder and device."""

    tta: str = "none"
    thresholds: str | float | Thresholds = "0.5"
    engine: str = "torch"
    average: str = "prob"
    weights: Sequence[float] | None = None
    blend: str | os.PathLike | None = None
    checkpoint: str = "best"
    batch_size: int = 64
    cache_dir: str | os.PathLike | None = None
    device: str | torch.device | None = None


# --------------------------------------------------------------------------- commands
def predict(runs: Sequence[str | os.PathLike], data_dir: str | os.PathLike, *, split: str = "test",
            out: str | os.PathLike | None = None, options: PredictOptions = PredictOptions()) -> PredictResult:
    """Predict `split` of DATA_DIR with the ensemble of `runs`; write `out` (+ its probs files).

    Returns the probabilities, the 0/1 predictions and, when the split has labels (train, or a
    synthetic test with test_answer.csv), their score.
    """
    from dirtymnist.data.cache import build_cache, open_split
    from dirtymnist.data.dataset import DataPaths

    o = options
    if not runs:
        raise ConfigError("give at least one RUN (run directory or checkpoint)")
    _check_choices(tta=o.tta, engine=o.engine, average=o.average, split=split)
    _check_batch_size(o.batch_size)
    if out is not None:
        check_output_path(out)  # before any compute
    weights, average = _check_weights(o.weights, len(runs)), o.average
    if o.blend is not None:  # fitted out of fold by `dirtymnist blend`: weights (and average) per run
        from dirtymnist.infer.blend import blend_for_runs

        weights, average = blend_for_runs(o.blend, runs, weights)
    members = [model_files(r, o.engine, o.checkpoint) for r in runs]  # fail on a missing model before any work
    thr = parse_thresholds(o.thresholds, runs, data_dir, weights, average)

    paths = DataPaths.from_root(data_dir)
    data = open_split(build_cache(paths, cache_dir=o.cache_dir, splits=(split,)), split)
    device = torch.device(o.device) if o.device is not None else choose_device(o.engine)
    n_models = sum(map(len, members))
    log.info("predicting %d %s images with %d model(s), TTA %s (%d views), %s, on %s",
             len(data), split, n_models, o.tta, len(TTA_PRESETS[o.tta]), o.engine, device)
    t0 = time.perf_counter()
    how = EnsembleOptions(average, weights, o.batch_size, data.letters)
    probs = ensemble_probs(members, data.images, np.arange(len(data)), tta=o.tta, device=device, options=how)
    log.info("predicted in %.1fs", time.perf_counter() - t0)
    result = PredictResult(index=data.index.astype(np.int64), probs=probs, pred=thr.apply(probs),
                           thresholds=thr, members=[p for g in members for p in g])
    if data.labels is not None:
        from dirtymnist.infer.evaluate import score

        result.score = score(result.pred, data.labels)
    if out is not None:
        template = paths.sample_csv if split == "test" else paths.train_csv
        _write_outputs(result, out, template)
    return result


def ensemble(prob_files: Sequence[str | os.PathLike], data_dir: str | os.PathLike, *,
             weights: Sequence[float] | None = None, average: str = "prob",
             thresholds: str | float | Thresholds = "0.5",
             out: str | os.PathLike | None = None,
             blend: str | os.PathLike | None = None) -> PredictResult:
    """Re-make an ensemble from saved probability files (no models): test rows, sample order."""
    from dirtymnist.data.dataset import DataPaths, read_label_csv
    from dirtymnist.submission import align_to, load_probs, row_mismatch

    if not prob_files:
        raise ConfigError("give at least one probability file")
    _check_choices(average=average)
    if out is not None:
        check_output_path(out)
    weights = _check_weights(weights, len(prob_files))
    if blend is not None:  # one probability file per blended run, in the blend's order
        from dirtymnist.infer.blend import blend_for_runs

        weights, average = blend_for_runs(blend, prob_files, weights)
    thr = parse_thresholds(thresholds, (), data_dir, weights, average)
    paths = DataPaths.from_root(data_dir)
    sample = read_label_csv(paths.sample_csv)
    arrays = []
    for f in prob_files:
        probs, index = load_probs(f)
        problem = row_mismatch(index, sample.index)
        if problem:
            raise DataError(f"{f}: indices do not match {paths.sample_csv}: {problem}")
        arrays.append(align_to(index, probs, sample.index))
    probs = combine(arrays, weights, average)
    result = PredictResult(index=sample.index.astype(np.int64), probs=probs, pred=thr.apply(probs),
                           thresholds=thr, members=[Path(f) for f in prob_files])
    if paths.test_answer_csv.is_file():
        from dirtymnist.infer.evaluate import score

        answer = read_label_csv(paths.test_answer_csv)
        if row_mismatch(answer.index, sample.index) is None:
            result.score = score(result.pred, align_to(answer.index, answer.labels, sample.index))
    if out is not None:
        _write_outputs(result, out, paths.sample_csv)
    return result


@dataclass
class TtaReport:
    rows: int  # OOF rows re-predicted
    presets: dict[str, dict] = field(default_factory=dict)  # name -> label_acc, exact_match, ...
    views: dict[str, float] = field(default_factory=dict)  # view name -> label_acc alone
    oof_max_abs_diff: float = 0.0  # preset "none" against the saved oof.npy (a sanity check)
    probs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # preset -> (rows, K) probabilities
    targets: np.ndarray | None = field(default=None, repr=False)  # (rows, K) uint8 labels of those rows

    def format(self) -> str:
        base = self.presets.get("none", {}).get("seconds") or 1.0
        lines = [f"out-of-fold rows: {self.rows} (threshold 0.5); 'none' vs saved oof.npy: "
                 f"max |diff| {self.oof_max_abs_diff:.2e}", "",
                 f"| TTA | views | label_acc | exact_match | acc on {' '.join(CONFUSABLE)} | rel. time |",
                 "|---|---|---|---|---|---|"]
        for name, r in self.presets.items():
            lines.append(f"| {name} | {r['views']} | {r['label_acc']:.5f} | {r['exact_match']:.4f} | "
                         f"{r['confusable_acc']:.4f} | {r['seconds'] / base:.1f}x |")
        lines += ["", "single views: " + ", ".join(f"{k} {v:.5f}" for k, v in self.views.items())]
        return "\n".join(lines)


def evaluate_tta(run: str | os.PathLike, data_dir: str | os.PathLike, *,
                 presets: Sequence[str] | None = None, batch_size: int = 64,
                 cache_dir: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, max_rows: int | None = None,
                 seed: int = 0) -> TtaReport:
    """OOF label accuracy of each TTA preset: every fold re-predicts its own validation rows.

    Each distinct view is run once per fold; a preset's logits are the mean of its views' (rot90
    reuses none's view). `max_rows`: at most this many OOF rows, a sample stratified by fold (each
    fold gives its share, drawn with `seed`), so that the cost is bounded on 50,000 rows.
    """
    from dirtymnist.data.cache import build_cache, open_split
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.metrics import exact_match, label_accuracy

    presets = list(presets or TTA_PRESETS)
    _check_batch_size(batch_size)
    for name in presets:
        _check_choices(tta=name)
    run = RunDir(run)
    folds = [f for f in run.folds() if f.best.is_file()]
    if not folds:
        raise ConfigError(f"{run.path}: evaluate-tta needs a run directory whose folds have a best checkpoint")
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"--max-rows {max_rows}: must be at least 1")
    data = open_split(build_cache(DataPaths.from_root(data_dir), cache_dir=cache_dir, splits=("train",)), "train")
    device = torch.device(device) if device is not None else choose_device()
    # none's view is rot90's first (the same transform under two names): computed once as "rot0"
    view_fns = {_SAME_VIEW.get(v, v): fn for name in presets for v, fn in TTA_PRESETS[name]}
    logits = {v: [] for v in view_fns}
    seconds = dict.fromkeys(view_fns, 0.0)
    targets, diffs = [], []
    take = _fold_sample(folds, max_rows, seed)
    bar = _bar(len(folds) * len(view_fns), "evaluate-tta", "view")
    for fold in folds:
        saved, oof_index = (a[take[fold.fold]] for a in fold.read_oof())
        pos = positions(data.index, oof_index)
        if (pos < 0).any():
            raise DataError(f"{fold.oof_index}: rows not in {data_dir}'s training split (other data?)")
        model = open_model(fold.best, device)
        if list(model.letters) != list(data.letters):
            raise ConfigError(f"{fold.best}: class list differs from the data's")
        for v, fn in view_fns.items():
            t0 = time.perf_counter()
            logits[v].append(model.logits(data.images, pos, [(v, fn)], batch_size=batch_size,
                                          desc=f"{fold.path.name} {v}"))
            seconds[v] += time.perf_counter() - t0
            bar.update(1)
        if "none" in presets:
            fresh = sigmoid(np.mean([logits[_SAME_VIEW.get(v, v)][-1] for v, _ in TTA_PRESETS["none"]], axis=0))
            if saved.shape == fresh.shape:
                diffs.append(float(np.abs(saved - fresh).max()))
        targets.append(data.labels[pos])
    bar.close()
    y = np.concatenate(targets)
    cols = [layout.LETTERS.index(c) for c in CONFUSABLE]
    report = TtaReport(rows=len(y), oof_max_abs_diff=max(diffs, default=float("nan")), targets=y)
    stacked = {v: np.concatenate(parts) for v, parts in logits.items()}
    for v, z in stacked.items():
        report.views[v] = label_accuracy(decode(sigmoid(z), 0.5), y)
    for name in presets:
        names = [_SAME_VIEW.get(v, v) for v, _ in TTA_PRESETS[name]]
        report.probs[name] = sigmoid(np.mean([stacked[v] for v in names], axis=0))
        pred = decode(report.probs[name], 0.5)
        report.presets[name] = {
            "views": len(names),
            "label_acc": label_accuracy(pred, y),
            "exact_match": exact_match(pred, y),
            "confusable_acc": label_accuracy(pred[:, cols], y[:, cols]),
            "seconds": sum(seconds[v] for v in names),
        }
    return report


# --------------------------------------------------------------------------- helpers
def _fold_sample(folds, max_rows: int | None, seed: int) -> dict[int, np.ndarray]:
    """fold -> positions of its OOF rows to re-predict: all, or a fold-stratified sample of
    `max_rows` in all (each fold its share of the rows, sorted, drawn with `seed`)."""
    for fold in folds:
        for path in (fold.oof, fold.oof_index):
            if not path.is_file():
                raise ConfigError(f"{path}: missing; evaluate-tta needs each fold's OOF rows")
    sizes = {f.fold: len(np.load(f.oof_index, mmap_mode="r")) for f in folds}
    total = sum(sizes.values())
    if max_rows is None or max_rows >= total:
        return {k: np.arange(n) for k, n in sizes.items()}
    rng = np.random.default_rng(seed)
    return {k: np.sort(rng.choice(n, max(1, round(max_rows * n / total)), replace=False))
            for k, n in sizes.items()}


def _bar(total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    # a notebook widget or a terminal bar only (disable=None), so logs and tests stay clean
    return tqdm(total=total, desc=desc, unit=unit, disable=None, dynamic_ncols=True)


def _write_outputs(result: PredictResult, out, template_csv: Path) -> None:
    from dirtymnist.submission import write_submission_set

    # one set: probabilities first, the CSV last, then a manifest tying them by hash
    result.submission, result.probs_file = write_submission_set(out, result.index, result.pred,
                                                                result.probs, template_csv)


def _check_choices(*, tta=None, engine=None, average=None, split=None) -> None:
    for flag, value, choices in (("--tta", tta, tuple(TTA_PRESETS)), ("--engine", engine, ENGINES),
                                 ("--average", average, AVERAGES), ("--split", split, ("test", "train"))):
        if value is not None and value not in choices:
            raise ConfigError(f"{flag} {value!r}; choose from {', '.join(choices)}")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")


def _check_weights(weights, n: int) -> list[float] | None:
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--weights {','.join(map(str, weights))}: need {n} non-negative numbers "
                          f"(one per input), not all 0")
    return weights

