"""The main job end to end on built-in synthetic data: `make demo` (= `dirtymnist demo`).

synth, then `job.run_job` on it (fold 0 of the `cpu` preset): cache -> folds -> train ->
fit thresholds -> choose the TTA out of fold -> predict the test set -> evaluate against the
synthetic answers -> HTML report -> submission folder. A re-run reuses the data, cache, folds,
the finished fold and the job's finished steps (OUT/job.json), so it finishes quickly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dirtymnist import layout
from dirtymnist.job import JobOptions, JobSummary, run_job

log = logging.getLogger(__name__)

N_TRAIN, N_TEST, SEED = 4000, 1000, 0

DemoSummary = JobSummary  # the demo's summary is the job's, with the synth step first


def run_demo(out="demo", *, n_train: int = N_TRAIN, n_test: int = N_TEST, preset: str = "cpu",
             pretrained: str | None = None, overrides: list[str] | None = None) -> JobSummary:
    from dirtymnist.data.synth import write_dataset

    out = Path(out)
    data = out / "data"
    log.info("-- demo: synth")
    t0 = time.perf_counter()
    if _dataset_complete(data, n_train, n_test):
        log.info("synthetic data already there: %s", data)
    else:
        write_dataset(data, n_train, n_test, SEED)
    seconds = time.perf_counter() - t0
    overrides = list(overrides or [])
    if pretrained:
        overrides.append(f"pretrained={pretrained}")
    name = Path(preset).stem + ("-pretrained" if pretrained else "")
    options = JobOptions(folds=(0,), overrides=tuple(overrides), run_name=name, title="dirtymnist demo",
                         renew=True)
    summary = run_job(data, preset, out, options)
    summary.steps.insert(0, ("synth", seconds, str(data)))
    return summary


def _dataset_complete(data: Path, n_train: int, n_test: int) -> bool:
    """The generator writes the CSVs last, so their presence (with the right sizes) means done."""
    answer, test_answer = data / layout.TRAIN_CSV, data / layout.TEST_ANSWER_CSV
    if not (answer.is_file() and test_answer.is_file() and (data / layout.SAMPLE_CSV).is_file()):
        return False
    rows = lambda p: sum(1 for _ in p.open()) - 1  # noqa: E731
    return rows(answer) == n_train and rows(test_answer) == n_test
