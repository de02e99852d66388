"""One plot and one table from several `bench/learn.py` outputs (their curves.csv files).

    .venv/bin/python bench/learn_plot.py OUT.png LABEL=DIR/curves.csv[:ARM] [LABEL=RUN/metrics.jsonl ...]

Each curve is one arm of one curves.csv (the first arm when :ARM is not given), or one run's
metrics.jsonl. Writes OUT.png
and OUT.md (the table: label accuracy at whole minutes, interpolated between evaluations).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def read_curve(spec: str) -> tuple[str, list[tuple[float, float]]]:
    label, _, src = spec.partition("=")
    path, _, arm = src.partition(":") if src.count(":") else (src, "", "")
    if path.endswith(".jsonl"):  # a run's metrics.jsonl: minutes = cumulative data + step time
        import json

        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        t = np.cumsum([r["data_time"] + r["step_time"] for r in rows]) / 60
        return label, [(float(m), float(r["label_acc"])) for m, r in zip(t, rows)]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    arm = arm or rows[0]["arm"]
    pts = [(float(r["minutes"]), float(r["label_acc"])) for r in rows if r["arm"] == arm]
    if not pts:
        raise SystemExit(f"{path}: no arm {arm!r}")
    return label, pts


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    out = Path(argv[0])
    curves = [read_curve(s) for s in argv[1:]]
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), dpi=110)
    ax = fig.add_subplot()
    for label, pts in curves:
        ax.plot([0] + [m for m, _ in pts], [0.538] + [a for _, a in pts], marker="o", ms=3, label=label)
    ax.axhline(0.538, color="grey", ls=":", label="all zeros (0.538)")
    for y in (0.80, 0.90):
        ax.axhline(y, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("minutes of training (CPU)")
    ax.set_ylabel("held-out-family test label accuracy")
    ax.set_ylim(0.5, 0.95)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    marks = [1, 2, 3, 5, 10, 20, 30, 40, 60]
    lines = ["| curve | " + " | ".join(f"{m} min" for m in marks) + " | last point |",
             "|---" * (len(marks) + 2) + "|"]
    for label, pts in curves:
        t, a = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        cells = [f"{np.interp(m, t, a):.3f}" if t[0] <= m <= t[-1] else "" for m in marks]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {t[-1]:.1f} min: {a[-1]:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
