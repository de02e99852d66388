"""Score a submission CSV against an answer CSV: `dirtymnist evaluate SUBMISSION.csv ANSWER.csv`.

For synthetic data the answer is DATA_DIR/test_answer.csv. Rows are matched by index (the
answer may list them in another order); both files must hold exactly the same indices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.errors import DataError
from dirtymnist.metrics import exact_match, label_accuracy, per_letter_stats
from dirtymnist.submission import align_to, read_submission, row_mismatch


@dataclass
class EvalReport:
    rows: int
    label_acc: float  # the competition's score
    exact_match: float
    per_letter: dict[str, dict[str, float]]  # letter -> accuracy, precision, recall, f1, support
    mean_predicted: float  # letters predicted per image
    mean_true: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def format(self) -> str:
        lines = [
            f"rows {self.rows}  label_acc {self.label_acc:.5f}  exact_match {self.exact_match:.4f}  "
            f"letters/image predicted {self.mean_predicted:.2f} true {self.mean_true:.2f}",
            "",
            "| letter | accuracy | precision | recall | support |",
            "|---|---|---|---|---|",
        ]
        for letter, s in self.per_letter.items():
            lines.append(f"| {letter} | {s['accuracy']:.4f} | {s['precision']:.4f} | "
                         f"{s['recall']:.4f} | {s['support']} |")
        return "\n".join(lines)


def score(pred01: np.ndarray, true01: np.ndarray) -> EvalReport:
    """Scores of (N, 26) 0/1 predictions against (N, 26) 0/1 labels (rows already aligned)."""
    pred01, true01 = np.asarray(pred01), np.asarray(true01)
    return EvalReport(
        rows=len(pred01),
        label_acc=label_accuracy(pred01, true01),
        exact_match=exact_match(pred01, true01),
        per_letter=per_letter_stats(pred01, true01, layout.LETTERS),
        mean_predicted=float(pred01.sum(1).mean()),
        mean_true=float(true01.sum(1).mean()),
    )


def evaluate_submission(submission_csv: str | os.PathLike, answer_csv: str | os.PathLike) -> EvalReport:
    """Read both CSVs (columns and values checked, errors name the file), match rows by index."""
    submission_csv, answer_csv = Path(submission_csv), Path(answer_csv)
    sub = read_submission(submission_csv)
    answer = read_submission(answer_csv)
    problem = row_mismatch(sub.index, answer.index)
    if problem:
        raise DataError(f"{submission_csv}: rows do not match {answer_csv}: {problem}")
    return score(sub.labels, align_to(answer.index, answer.labels, sub.index))
