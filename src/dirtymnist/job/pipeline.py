"""The whole job on a competition folder in one command, resumable:

    dirtymnist run data/ --preset finetune --out runs/job [--folds all] [--minutes 60]

cache -> folds -> [measure and plan, with --minutes] -> train every fold (several workers may
share them through train's claims) -> thresholds on all out-of-fold rows -> choose the TTA on a
bounded out-of-fold sample -> predict the test split with the fold ensemble -> evaluate (when
the folder has test_answer.csv) -> report -> package, then a summary (`JobSummary`).

OUT/job.json                       arguments, plan, finished steps (record.JobRecord)
OUT/runs/<preset>/                 the run folder (rundir.RunDir): folds, thresholds, report
OUT/predictions/<tta>.csv          each predicted setting at threshold 0.5, with its probabilities
OUT/submission.csv                 the chosen TTA with the OOF thresholds (+ probabilities, .set.json)
OUT/submit/                        the Docker code-submission folder

Killed at any point and started again, it resumes: training from each fold's last.pt (at most
the current epoch is lost, less with `checkpoint_minutes`), every other step is reused when
job.json records it done with the same fold models and its files are still whole (the output
sets' manifests), or done again (they are seconds, or bounded). Which settings are predicted:
the TTA chosen on out-of-fold rows by label accuracy at 0.5 among `tta_presets`, and none and rot90
beside it when the folder has answers (the summary's table, as the demo's); each view of the
choice is computed once per row and shared by the presets that use it. With `--minutes`, the
choice's sample is sized to the budget and a candidate whose test-split views the minutes left
after training do not pay for is left out of it (plan.affordable_tta, said in the log).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist.errors import DataError
from dirtymnist.job.plan import (
    VIEWS,
    Costs,
    Plan,
    affordable_tta,
    data_budget,
    distinct_views,
    plan_budget,
    setting_seconds,
)
from dirtymnist.job.progress import JobProgress, inference_units
from dirtymnist.job.record import JobRecord, models_key
from dirtymnist.job.summary import JobSummary
from dirtymnist.rundir import RunDir

log = logging.getLogger(__name__)

FIXED_S = 30.0  # thresholds, evaluate, report and package: an estimate for the plan (not measured up front)


@dataclass(frozen=True)
class JobOptions:
    """How `run_job` runs: folds, time budget, config overrides and what the inference tries."""

    folds: tuple[int, ...] | str | None = None  # "all" / None: every fold (None with minutes: the plan's)
    minutes: float | None = None  # a time budget: the plan sets the data stage's epochs and the folds
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE of the preset
    force: bool = False  # other arguments than job.json's: start the record again (train's force too)
    run_name: str | None = None  # OUT/runs/<run_name> (default: the preset's name)
    tta_presets: tuple[str, ...] = ("none", "rot90", "rot90_zoom")  # candidates of the TTA choice
    tta_rows: int = 2000  # out-of-fold rows of the TTA choice at most (a sample stratified by fold)
    batch_size: int = 64  # inference
    title: str = "dirtymnist run"
    # the demo: other arguments start job.json again instead of being refused (one demo folder, any
    # preset); the run folder under runs/ still refuses another config unless `force`
    renew: bool = False


def run_job(data_dir, preset: str, out, options: JobOptions = JobOptions()) -> JobSummary:
    """Run (or resume) the whole job into OUT; returns its summary (`.format()` prints it)."""
    return _Job(Path(data_dir), preset, Path(out), options).run()


class _Job:
    """One job's state while its steps run in order; each step is a method, timed by `step`."""

    def __init__(self, data: Path, preset: str, out: Path, o: JobOptions):
        from dirtymnist.config import load_config
        from dirtymnist.data.dataset import DataPaths

        _check_data(data)  # one line, before OUT is touched
        self.data, self.preset, self.out, self.o = data, preset, out, o
        self.paths = DataPaths.from_root(data)
        self.overrides = list(o.overrides)
        self.cfg = load_config(preset, self.overrides)
        self.run_dir = RunDir(out / "runs" / (o.run_name or Path(preset).stem))
        self.summary = JobSummary(out, title=o.title)
        self.t0 = time.perf_counter()
        self.record = JobRecord(out)
        self.bar: JobProgress | None = None
        self.folds = list(range(self.cfg.folds_k)) if o.folds == "all" else None if o.folds is None else list(o.folds)
        self.tta, self.fit, self.models = "none", None, ""
        self.plan: Plan | None = None

    def run(self) -> JobSummary:
        args = {"data": str(self.data.absolute()), "preset": self.preset, "overrides": list(self.overrides),
                "folds": self.folds, "minutes": self.o.minutes, "run": self.run_dir.path.name}
        self.record.open(args, force=self.o.force, renew=self.o.renew)
        self.bar = JobProgress(f"run {self.out.name}")
        with contextlib.ExitStack() as stack:
            stack.callback(self.bar.close)
            if not self.bar.bar.disable:  # log lines above the bar, not through it
                from tqdm.contrib.logging import logging_redirect_tqdm

                stack.enter_context(logging_redirect_tqdm())
            self._prepare()
            self._train()
            self._infer()
            self.bar.finish()
        self.summary.actual = self._actual()
        return self.summary

    @contextlib.contextmanager
    def step(self, name: str, output: str):
        """Time a step, log its start, record it in the summary (and job.json's seconds)."""
        from dirtymnist.space import arm_kill_in_step

        log.info("-- %s: %s", self.o.title.split()[-1], name)
        self.bar.set_step(name)
        arm_kill_in_step(name)  # fault injection of the kill/resume tests (DIRTYMNIST_KILL_IN_STEP)
        t0 = time.perf_counter()
        try:
            yield
        except Exception:
            self.record.spend(name, time.perf_counter() - t0)
            raise
        seconds = time.perf_counter() - t0
        self.summary.steps.append((name, seconds, output))
        self.record.finish(name, seconds, output, self.models)

    # ------------------------------------------------------------------ cache, folds, plan
    def _prepare(self) -> None:
        from dirtymnist.data.cache import build_cache
        from dirtymnist.data.folds import make_folds, read_folds

        c = self.cfg
        with self.step("cache", str(self.paths.root / ".dirtymnist_cache")):
            build_cache(self.paths)
        folds_file = None
        with self.step("folds", "(the preset's folds file)"):
            folds_file, report = make_folds(self.paths, k=c.folds_k, seed=c.folds_seed,
                                            subset=c.subset or None, method=c.folds_method)
            log.info("fold letter-frequency deviation: max %.2f pp", report.max_dev_pp)
        self.summary.steps[-1] = ("folds", self.summary.steps[-1][1], str(folds_file))
        _, fold_of = read_folds(folds_file)
        self.val_rows, self.train_rows = int((fold_of == 0).sum()), int((fold_of != 0).sum())
        self.n_test = _rows(self.paths.sample_csv)
        if self.o.minutes is not None:
            self._plan()
        self.folds = self.folds if self.folds is not None else list(range(c.folds_k))
        self.summary.folds = self.folds

    def _plan(self) -> None:
        from dirtymnist.config import load_config
        from dirtymnist.train.schedule import build_plan

        data_steps = self.train_rows // self.cfg.batch_size
        with self.step("measure and plan", str(self.record.path)):
            if self.record.plan is None:  # a restart keeps the first run's plan: no second measurement
                from dirtymnist.job.measure import measure_rates

                views = sorted(distinct_views(self.o.tta_presets) | distinct_views(self._base_settings()))
                step_s, view_s, _ = measure_rates(self.data, self.preset, self.overrides, self.out,
                                                  data_steps=data_steps, views=views, batch_size=self.o.batch_size)
                other = sum(e.steps for e in build_plan(self.cfg, data_steps) if e.source != "data")
                costs = Costs(step_s, data_steps, other, self.val_rows, view_s["rot0"], self.n_test,
                              sum(setting_seconds(t, view_s) for t in self._base_settings()),
                              min(self.o.tta_rows, self.val_rows * self.cfg.folds_k),
                              sum(view_s[v] for v in distinct_views(self.o.tta_presets)), FIXED_S, view_s)
                plan = plan_budget(self.o.minutes * 60, time.perf_counter() - self.t0, costs,
                                   folds_k=self.cfg.folds_k, folds=self.folds)
                self.record.set_plan(plan.to_dict())
            plan = Plan.from_dict(self.record.plan)
            log.info("%s", plan.format())
        self.overrides.append(f"epochs={plan.epochs}")  # the cosine schedule ends with the plan
        if plan.epoch_fraction < 1:
            self.overrides.append(f"epoch_fraction={plan.epoch_fraction}")
        self.cfg = load_config(self.preset, self.overrides)
        data_epochs = sum(e.source == "data" for e in build_plan(self.cfg, max(data_steps, 1)))
        if data_epochs != plan.epochs:
            raise DataError(f"preset {self.preset}: its data stage fixes its own epochs ({data_epochs}); "
                            "--minutes sets `epochs`, so remove `epochs` from the data stage")
        self.folds, self.summary.plan, self.plan = plan.folds, plan.to_dict(), plan

    def _base_settings(self) -> list[str]:
        """Test-split settings predicted whatever the TTA choice: rot90 (the usual choice), and none
        beside it when the folder has answers (the summary's table scores both)."""
        return ["none", "rot90"] if self.paths.test_answer_csv.is_file() else ["rot90"]

    def _tta_candidates(self) -> list[str]:
        """With a budget, the TTA candidates the minutes left after training still pay for (plan)."""
        if self.plan is None or "views" not in self.plan.costs:
            return list(self.o.tta_presets)
        left = self.plan.budget_s - sum(self.record.seconds(n) for n in self.record.data["steps"])
        kept = affordable_tta(self.o.tta_presets, self._base_settings(), left, self.plan,
                              models=len(self.folds), test_rows=self.n_test)
        for t in self.o.tta_presets:
            if t not in kept:
                log.info("TTA %s left out of the choice: %.1f min left do not pay for its test-split views",
                         t, left / 60)
        return kept

    # ------------------------------------------------------------------ training
    def _train(self) -> None:
        from dirtymnist.train.loop import train
        from dirtymnist.train.schedule import build_plan

        epochs = build_plan(self.cfg, self.train_rows // self.cfg.batch_size)
        self.bar.plan_training(self.folds, [e.steps for e in epochs])
        self._plan_inference_units()
        shown = not self.bar.bar.disable  # the hooks only feed the bar: none without a terminal
        name = f"train ({self.preset}, fold{'s' if len(self.folds) > 1 else ''} {','.join(map(str, self.folds))})"
        with self.step(name, str(self.run_dir)):
            best = train(self.data, self.cfg, folds=self.folds, run_dir=self.run_dir.path, force=self.o.force,
                         on_epoch=self.bar.on_epoch if shown else None, on_step=self.bar.on_step if shown else None,
                         data_budget=self._data_budget if self.plan is not None and self.plan.data_seconds else None)
        for f in self.folds:
            self.bar.fold_done(f)
        accs = [b["label_acc"] for b in best.values() if b]
        self.summary.val_label_acc = float(np.mean(accs)) if accs else None
        self.summary.epochs = sum(e.source == "data" for e in epochs)
        self.models = models_key(self.run_dir.model_files())

    def _data_budget(self, fold: int, row: dict) -> float:
        """train's `data_budget`: the fold's data-stage seconds, the inference reserve priced at the
        view rate this epoch's validation ran at (plan.data_budget)."""
        val_s = row["seconds"] - row["data_time"] - row["step_time"]
        return data_budget(self.plan, val_s / max(self.val_rows, 1))

    def _plan_inference_units(self) -> None:
        bs, n = self.o.batch_size, len(self.folds)
        views = len(distinct_views(self.o.tta_presets))
        self.tta_units = inference_units(min(self._tta_rows(), self.val_rows * n), views, 1, bs)
        self.predict_units = {t: inference_units(self.n_test, VIEWS[t], n, bs) for t in VIEWS}
        base = self._base_settings()
        other = [self.predict_units[t] for t in self.o.tta_presets if t not in base]
        self.bar.add(self.tta_units + sum(self.predict_units[t] for t in base) + max(other, default=0))

    def _tta_rows(self) -> int:
        return self.plan.tta_rows if self.plan is not None and self.plan.tta_rows else self.o.tta_rows

    # ------------------------------------------------------------------ inference
    def _infer(self) -> None:
        from dirtymnist.infer.thresholds import fit_thresholds

        with self.step("thresholds (OOF fit)", str(self.run_dir.thresholds)):
            self.fit = fit_thresholds(self.run_dir, self.data)
        done = self.record.done("choose TTA (OOF)", self.models)  # a resumed choice keeps its candidates
        presets = list(done["info"]["half"]) if done and done.get("info") else self._tta_candidates()
        with self.step("choose TTA (OOF)", f"{' / '.join(presets)} by out-of-fold label accuracy"):
            self._choose_tta(presets)
        probs = self._predict()
        if self.paths.test_answer_csv.is_file():
            with self.step("evaluate", str(self.paths.test_answer_csv)):
                self._evaluate(probs)
        self._report_and_package()

    def _choose_tta(self, presets: list[str]) -> None:
        done = self.record.done("choose TTA (OOF)", self.models)
        if done and done.get("info"):
            info = done["info"]
        else:
            from dirtymnist.infer.predict import evaluate_tta

            # rotations could turn one letter into another, zoom could hurt big ones: measure, on a sample
            report = evaluate_tta(self.run_dir, self.data, presets=presets,
                                  batch_size=self.o.batch_size, max_rows=self._tta_rows())
            thr = self.fit.thresholds
            info = {"rows": report.rows, "half": {k: v["label_acc"] for k, v in report.presets.items()},
                    "fitted": {k: _acc(thr.apply(p), report.targets) for k, p in report.probs.items()}}
            self.record.finish("choose TTA (OOF)", 0.0, "", self.models, info)
        self.bar.advance(self.tta_units)
        self.tta = max(info["half"], key=lambda k: info["half"][k])
        self.summary.tta, self.summary.oof_rows = self.tta, info["rows"]
        for t in presets:
            label = _label(t)
            self.summary.oof += [(f"{label}, threshold 0.5", info["half"][t]),
                                 (f"{label}, OOF thresholds", info["fitted"][t])]
        log.info("TTA chosen on OOF: %s (%s)", self.tta, ", ".join(f"{k} {v:.4f}" for k, v in info["half"].items()))

    def _predict(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{tta: (probabilities, index)} of none, rot90 and the chosen TTA; the submission written."""
        from dirtymnist.infer.predict import PredictOptions, predict
        from dirtymnist.submission import load_probs, probs_path_for, write_submission_set

        # the chosen TTA; none and rot90 beside it when the folder has answers (the summary scores them)
        answers = self.paths.test_answer_csv.is_file()
        settings = list(dict.fromkeys([*(["none", "rot90"] if answers else []), self.tta]))
        probs = {}
        with self.step(f"predict ({'; '.join(settings)} + thresholds)", str(self.out / "submission.csv")):
            for t in settings:
                csv = self.out / "predictions" / f"{t}.csv"
                if self.record.done(f"predict {t}", self.models) and _whole(csv):
                    probs[t] = load_probs(probs_path_for(csv))
                else:
                    r = predict([self.run_dir], self.data, out=csv,
                                options=PredictOptions(tta=t, thresholds="0.5", batch_size=self.o.batch_size))
                    probs[t] = (r.probs, r.index)
                    self.record.finish(f"predict {t}", 0.0, str(csv), self.models)
                self.bar.advance(self.predict_units[t])
            p, index = probs[self.tta]
            thr = self.fit.thresholds  # = `predict --tta T --thresholds RUN/thresholds.json`
            write_submission_set(self.out / "submission.csv", index, thr.apply(p), p, self.paths.sample_csv)
        self.summary.submission = self.out / "submission.csv"
        return probs

    def _evaluate(self, probs: dict) -> None:
        from dirtymnist.infer.evaluate import evaluate_submission, score
        from dirtymnist.infer.thresholds import parse_thresholds

        half, fit = parse_thresholds("0.5"), self.fit.thresholds
        labels = _test_labels(self.paths, probs["none"][1])
        self.summary.zeros_label_acc = score(np.zeros_like(labels), labels).label_acc
        rows = [("no TTA, threshold 0.5", half.apply(probs["none"][0])),
                ("no TTA, OOF thresholds", fit.apply(probs["none"][0])),
                ("rot90 TTA, threshold 0.5", half.apply(probs["rot90"][0])),
                ("rot90 TTA, OOF thresholds", fit.apply(probs["rot90"][0])),
                (f"the submission ({self.tta}, OOF thresholds)", fit.apply(probs[self.tta][0]))]
        for name, pred in rows:
            s = score(pred, labels)
            self.summary.scores.append((name, s.label_acc, s.exact_match))
        final = evaluate_submission(self.out / "submission.csv", self.paths.test_answer_csv)
        assert abs(final.label_acc - self.summary.scores[-1][1]) < 1e-9  # the file is what the table says

    def _report_and_package(self) -> None:
        from dirtymnist.deliver.package import PackageOptions, package
        from dirtymnist.look.report import build_report

        with self.step("report", str(self.run_dir.report)):
            if not (self.record.done("report", self.models) and self.run_dir.report.is_file()):
                build_report(self.run_dir, self.data)
        submit = self.out / "submit"
        with self.step("package", str(submit)):
            done = self.record.done("package", self.models)
            if not (done and (done.get("info") or {}).get("tta") == self.tta and (submit / "main.py").is_file()):
                package([self.run_dir], submit, options=PackageOptions(data_dir=self.data, tta=self.tta))
                self.record.finish("package", 0.0, str(submit), self.models, {"tta": self.tta})
            elif done:
                log.info("package: %s already made with these models and TTA %s", submit, self.tta)

    # ------------------------------------------------------------------ summary
    def _actual(self) -> dict[str, float]:
        """Seconds of each plan part, summed over job.json's steps (every attempt's finished ones)."""
        parts: dict[str, float] = {}
        for name in self.record.data["steps"]:
            part = _part(name)
            if part:
                parts[part] = parts.get(part, 0.0) + self.record.seconds(name)
        return parts


def _part(step: str) -> str | None:
    """The plan part a job.json step belongs to (None: a sub-record such as `predict none`)."""
    for prefix, part in (("cache", "already spent (cache, folds, measuring)"), ("folds", "already spent (cache, folds, measuring)"),
                         ("measure", "already spent (cache, folds, measuring)"), ("train", "train"),
                         ("choose TTA", "choose TTA (OOF sample)"), ("predict (", "predict (test split)"),
                         ("thresholds", "thresholds, evaluate, report, package"),
                         ("evaluate", "thresholds, evaluate, report, package"),
                         ("report", "thresholds, evaluate, report, package"),
                         ("package", "thresholds, evaluate, report, package")):
        if step.startswith(prefix):
            return part
    return None


def _label(tta: str) -> str:
    return "no TTA" if tta == "none" else f"{tta} TTA"


def _acc(pred: np.ndarray, targets: np.ndarray) -> float:
    from dirtymnist.metrics import label_accuracy

    return float(label_accuracy(pred, targets))


def _whole(csv: Path) -> bool:
    """A prediction set written completely (its manifest checks), else False (predicted again)."""
    from dirtymnist.outputs import verify_set
    from dirtymnist.submission import set_path_for

    try:
        return verify_set(set_path_for(csv), "") is not None
    except DataError:
        return False


def _check_data(data: Path) -> None:
    """A missing folder or unreadable label CSV: one line before anything is written."""
    from dirtymnist.data.dataset import DataPaths, read_label_csv

    if not data.is_dir():
        raise DataError(f"{data}: data folder not found")
    paths = DataPaths.from_root(data)
    for csv in (paths.train_csv, paths.sample_csv):
        if not csv.is_file():
            raise DataError(f"{csv}: not found; `run` needs a competition-layout folder")
        read_label_csv(csv)


def _rows(csv: Path) -> int:
    with open(csv, "rb") as f:
        return max(0, sum(1 for _ in f) - 1)


def _test_labels(paths, index):
    from dirtymnist.data.dataset import read_label_csv
    from dirtymnist.submission import align_to

    table = read_label_csv(paths.test_answer_csv)
    return align_to(table.index, table.labels, index)

