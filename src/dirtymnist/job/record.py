"""`OUT/job.json`: a job's arguments, its plan and each finished step, so that a restart resumes.

    {"args": {...}, "plan": {...} | null, "steps": {"choose TTA (OOF)": {"seconds": 12.3,
     "output": "...", "models": "<key of the fold models it used>", "info": {...}}}}

Written atomically after every change. A restart with other arguments is refused in one line
naming what differs (like train's config check); `force` starts the record again (keeping the
folders: training still resumes from each fold's last.pt, under train's own force).
A step's record holds the key of the models it used (`models_key`: name, size and mtime of every
fold's best.pt), so a step done with other models is done again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import ConfigError, DataError

JOB_FILE = "job.json"


class JobRecord:
    """The job.json of one OUT folder."""

    def __init__(self, out: Path):
        self.path = Path(out) / JOB_FILE
        self.data: dict = {"args": {}, "plan": None, "steps": {}}

    def open(self, args: dict, *, force: bool, renew: bool = False) -> JobRecord:
        """Read the record; refuse other arguments (unless `force`, which starts it again, or
        `renew`: other arguments start it again)."""
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{self.path}: unreadable ({exc}); remove it or pass --force") from None
            diff = [k for k in sorted(set(args) | set(self.data.get("args", {})))
                    if args.get(k) != self.data["args"].get(k)]
            if diff and not (force or renew):
                was = "; ".join(_change(k, self.data["args"].get(k), args.get(k)) for k in diff)
                raise ConfigError(f"{self.path}: this job was started with other arguments (differs in "
                                  f"{', '.join(diff)}: {was}); rerun it as it was, choose another "
                                  "--out, or pass --force")
            if diff or force:
                self.data = {"args": args, "plan": None, "steps": {}}
        else:
            self.data = {"args": args, "plan": None, "steps": {}}
        self.save()
        return self

    @property
    def plan(self) -> dict | None:
        return self.data.get("plan")

    def set_plan(self, plan: dict) -> None:
        self.data["plan"] = plan
        self.save()

    def done(self, step: str, models: str = "") -> dict | None:
        """The record of `step` when it finished with these models, else None."""
        rec = self.data["steps"].get(step)
        return rec if rec and rec.get("done") and rec.get("models", "") == models else None

    def finish(self, step: str, seconds: float, output: str, models: str = "", info: dict | None = None) -> None:
        """Record a finished step; its seconds add up over restarts (the summary's actual minutes),
        its `info` (what later runs reuse) is kept unless a new one is given."""
        rec = self.data["steps"].get(step) or {}
        keep = rec.get("info", {}) if rec.get("models", "") == models else {}
        self.data["steps"][step] = {"done": True, "seconds": rec.get("seconds", 0.0) + seconds,
                                    "output": output or rec.get("output", ""), "models": models,
                                    "info": info if info is not None else keep}
        self.save()

    def spend(self, step: str, seconds: float) -> None:
        """Seconds spent in a step that did not finish (killed or stopped): counted, not done."""
        rec = self.data["steps"].setdefault(step, {"done": False, "seconds": 0.0})
        rec["seconds"] = rec.get("seconds", 0.0) + seconds
        self.save()

    def seconds(self, step: str) -> float:
        return float((self.data["steps"].get(step) or {}).get("seconds", 0.0))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def _change(key: str, was, now) -> str:
    """`minutes 30.0 -> 60.0`; for lists (overrides) only the items that differ."""
    if isinstance(was, list) and isinstance(now, list):
        gone, new = [x for x in was if x not in now], [x for x in now if x not in was]
        return f"{key} " + ", ".join([*(f"-{x}" for x in gone), *(f"+{x}" for x in new)] or ["reordered"])
    return f"{key} {was!r} -> {now!r}"


def models_key(files: list[Path]) -> str:
    """A short key of model files (name, size, mtime): what the inference steps were computed from."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]
