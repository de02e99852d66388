"""The whole job in one resumable command (`dirtymnist run`): its steps, time-budget plan, record,
progress bar and summary. `run_job` is the API; `demo` is "synthesise, then run_job"."""

from dirtymnist.job.pipeline import JobOptions, run_job
from dirtymnist.job.summary import JobSummary

__all__ = ["JobOptions", "JobSummary", "run_job"]
