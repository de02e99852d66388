"""The main job end to end on built-in synthetic data: `make demo` (= `dirtymnist demo`).

synth -> cache -> folds -> train the `cpu` preset -> fit thresholds -> predict the test set
with TTA -> evaluate against the synthetic answers -> HTML report -> submission folder.
A re-run reuses the data, cache, folds and finished folds, so it finishes quickly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.rundir import RunDir

log = logging.getLogger(__name__)

N_TRAIN, N_TEST, SEED = 4000, 1000, 0


@dataclass
class DemoSummary:
    out: Path
    steps: list[tuple[str, float, str]] = field(default_factory=list)  # (step, seconds, output)
    scores: list[tuple[str, float, float]] = field(default_factory=list)  # (setting, label_acc, exact)
    val_label_acc: float | None = None
    tta: str = "none"
    zeros_label_acc: float = float("nan")  # what predicting no letter at all scores on this test set

    def format(self) -> str:
        lines = ["", "== dirtymnist demo ==", "", "| step | seconds | output |", "|---|---|---|"]
        lines += [f"| {s} | {t:.1f} | {o} |" for s, t, o in self.steps]
        lines.append(f"| total | {sum(t for _, t, _ in self.steps):.1f} | |")
        lines += ["", f"synthetic test set (all-zeros scores {self.zeros_label_acc:.3f}):", "",
                  "| inference | label accuracy | exact match |", "|---|---|---|"]
        lines += [f"| {name} | {acc:.4f} | {em:.4f} |" for name, acc, em in self.scores]
        if self.val_label_acc is not None:
            lines.append(f"\nvalidation label accuracy (fold 0, best epoch): {self.val_label_acc:.4f}")
        return "\n".join(lines)


def run_demo(out="demo", *, n_train: int = N_TRAIN, n_test: int = N_TEST, preset: str = "cpu",
             pretrained: str | None = None, overrides: list[str] | None = None) -> DemoSummary:
    from dirtymnist.config import load_config
    from dirtymnist.data.cache import build_cache
    from dirtymnist.data.dataset import DataPaths
    from dirtymnist.data.folds import make_folds
    from dirtymnist.data.synth import write_dataset

    out = Path(out)
    data = out / "data"
    run = RunDir(out / "runs" / (Path(preset).stem + ("-pretrained" if pretrained else "")))
    summary = DemoSummary(out)

    def step(name: str, output: str):
        class _Timer:
            def __enter__(self):
                self.t0 = time.perf_counter()
                log.info("-- demo: %s", name)

            def __exit__(self, *exc):
                if exc[0] is None:
                    summary.steps.append((name, time.perf_counter() - self.t0, output))

        return _Timer()

    with step("synth", str(data)):
        if _dataset_complete(data, n_train, n_test):
            log.info("synthetic data already there: %s", data)
        else:
            write_dataset(data, n_train, n_test, SEED)
    paths = DataPaths.from_root(data)
    with step("cache", str(data / ".dirtymnist_cache")):
        build_cache(paths)
    overrides = list(overrides or [])
    if pretrained:
        overrides.append(f"pretrained={pretrained}")
    cfg = load_config(preset, overrides)
    with step("folds", f"{data}/folds_k{cfg.folds_k}_seed{cfg.folds_seed}.csv"):
        _, report = make_folds(paths, k=cfg.folds_k, seed=cfg.folds_seed, method=cfg.folds_method)
        log.info("fold letter-frequency deviation: max %.2f pp", report.max_dev_pp)
    with step(f"train ({preset}, fold 0)", str(run)):
        from dirtymnist.train.loop import train

        best = train(data, cfg, folds=[0], run_dir=run.path)
        summary.val_label_acc = best[0].get("label_acc") if best.get(0) else None
    with step("thresholds (OOF fit)", str(run.thresholds)):
        from dirtymnist.infer.thresholds import fit_thresholds

        fit = fit_thresholds(run, data)
    with step("choose TTA (OOF)", "none, rot90 or rot90_zoom, by out-of-fold label accuracy"):
        from dirtymnist.infer.predict import evaluate_tta

        # rotations could turn one letter into another, zoom could hurt big ones: measure
        tta_report = evaluate_tta(run, data, presets=["none", "rot90", "rot90_zoom"])
        tta = max(tta_report.presets, key=lambda k: tta_report.presets[k]["label_acc"])
        summary.tta = tta
        log.info("TTA chosen on OOF: %s (%s)", tta, ", ".join(
            f"{k} {v['label_acc']:.4f}" for k, v in tta_report.presets.items()))
    with step(f"predict (none; {tta} + thresholds)", str(out / "submission.csv")):
        from dirtymnist.infer.predict import PredictOptions, predict

        plain = predict([run], data, options=PredictOptions(tta="none", thresholds="0.5"))
        rot = predict([run], data, options=PredictOptions(tta="rot90", thresholds="0.5")) if tta != "rot90" else None
        best_tta = predict([run], data, out=out / "submission.csv",
                           options=PredictOptions(tta=tta, thresholds=str(run.thresholds)))
        rot = rot or best_tta
    with step("evaluate", str(data / layout.TEST_ANSWER_CSV)):
        from dirtymnist.infer.evaluate import evaluate_submission, score
        from dirtymnist.infer.thresholds import parse_thresholds

        half = parse_thresholds("0.5")

        labels = _test_labels(paths, plain.index)
        summary.zeros_label_acc = score(np.zeros_like(labels), labels).label_acc
        for name, pred in (("no TTA, threshold 0.5", plain.pred),
                           ("no TTA, OOF thresholds", fit.thresholds.apply(plain.probs)),
                           ("rot90 TTA, threshold 0.5", half.apply(rot.probs)),
                           ("rot90 TTA, OOF thresholds", fit.thresholds.apply(rot.probs)),
                           (f"the submission ({tta}, OOF thresholds)", best_tta.pred)):
            s = score(pred, labels)
            summary.scores.append((name, s.label_acc, s.exact_match))
        final = evaluate_submission(out / "submission.csv", data / layout.TEST_ANSWER_CSV)
        assert abs(final.label_acc - summary.scores[-1][1]) < 1e-9
    with step("report", str(run.report)):
        from dirtymnist.look.report import build_report

        build_report(run, data)
    with step("package", str(out / "submit")):
        from dirtymnist.deliver.package import PackageOptions, package

        package([run], out / "submit", options=PackageOptions(data_dir=data, tta=tta))
    return summary


def _dataset_complete(data: Path, n_train: int, n_test: int) -> bool:
    """The generator writes the CSVs last, so their presence (with the right sizes) means done."""
    answer, test_answer = data / layout.TRAIN_CSV, data / layout.TEST_ANSWER_CSV
    if not (answer.is_file() and test_answer.is_file() and (data / layout.SAMPLE_CSV).is_file()):
        return False
    rows = lambda p: sum(1 for _ in p.open()) - 1  # noqa: E731
    return rows(answer) == n_train and rows(test_answer) == n_test


def _test_labels(paths, index):
    from dirtymnist.data.dataset import read_label_csv
    from dirtymnist.submission import align_to

    table = read_label_csv(paths.root / layout.TEST_ANSWER_CSV)
    return align_to(table.index, table.labels, index)
