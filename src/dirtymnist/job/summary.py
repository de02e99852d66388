"""What a `run` job prints at its end: each step's time and output, every inference setting's
out-of-fold score (and test score when the data has answers), and the plan against what it took."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class JobSummary:
    out: Path
    title: str = "dirtymnist run"
    steps: list[tuple[str, float, str]] = field(default_factory=list)  # (step, seconds this time, output)
    scores: list[tuple[str, float, float]] = field(default_factory=list)  # test: (setting, label_acc, exact)
    oof: list[tuple[str, float]] = field(default_factory=list)  # (setting, OOF label accuracy)
    oof_rows: int = 0  # rows behind `oof` (the TTA choice's sample)
    val_label_acc: float | None = None  # mean of the folds' best validation label accuracy
    folds: list[int] = field(default_factory=list)
    epochs: int = 0  # data-stage epochs of each fold
    tta: str = "none"
    zeros_label_acc: float = float("nan")  # what predicting no letter at all scores on the test set
    plan: dict | None = None  # plan.Plan.to_dict() with --minutes
    actual: dict[str, float] = field(default_factory=dict)  # plan part -> seconds it took (all attempts)
    submission: Path | None = None

    def format(self) -> str:
        lines = ["", f"== {self.title} ==", "", "| step | seconds | output |", "|---|---|---|"]
        lines += [f"| {s} | {t:.1f} | {o} |" for s, t, o in self.steps]
        lines.append(f"| total | {sum(t for _, t, _ in self.steps):.1f} | |")
        if self.oof:
            lines += ["", f"out-of-fold label accuracy ({self.oof_rows} rows, each by its own fold's model):",
                      "", "| inference | OOF label accuracy |", "|---|---|"]
            lines += [f"| {name} | {acc:.4f} |" for name, acc in self.oof]
        if self.scores:
            lines += ["", f"test set (all-zeros scores {self.zeros_label_acc:.3f}):", "",
                      "| inference | label accuracy | exact match |", "|---|---|---|"]
            lines += [f"| {name} | {acc:.4f} | {em:.4f} |" for name, acc, em in self.scores]
        if self.plan:
            lines += ["", f"budget {self.plan['budget_s'] / 60:.1f} minutes: planned against actual "
                      "(actual counts every attempt's finished steps)", "",
                      "| part | planned minutes | actual minutes |", "|---|---|---|"]
            for part, s in self.plan["seconds"].items():
                got = self.actual.get(part)
                lines.append(f"| {part} | {s / 60:.2f} | {'' if got is None else f'{got / 60:.2f}'} |")
            total = sum(self.actual.values())
            lines.append(f"| total | {self.plan['budget_s'] / 60:.2f} | {total / 60:.2f} |")
        if self.val_label_acc is not None:
            which = ",".join(map(str, self.folds))
            lines.append(f"\nvalidation label accuracy (fold {which}, best epoch"
                         f"{', mean' if len(self.folds) > 1 else ''}): {self.val_label_acc:.4f}")
        return "\n".join(lines)
