"""Learning curves against optimizer steps and against one quiet core's minutes, from runs of
`bench/learn.py` (their metrics.jsonl) or rows of a CSV of (run, steps, label_acc).

    .venv/bin/python bench/steps_plot.py OUT.png LABEL=RUN/metrics.jsonl@MS [LABEL=FILE.csv:RUN@MS ...]

MS is the model's cost of one training step (fwd + bwd + AdamW, batch 32) in milliseconds, timed
side by side on a quiet machine, so the time axis does not depend on what else ran beside the
curve (the wall time of a shared machine does). Steps of a metrics.jsonl row = its cumulative
samples / --batch. Writes OUT.png (two panels) and OUT.md (label accuracy at fixed steps and at
fixed minutes, interpolated between evaluations; blank past a curve's end).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

STEP_MARKS = (1000, 2000, 4000, 8000, 10500, 18000)
MINUTE_MARKS = (5, 10, 20, 40, 60, 75)


def read_curve(spec: str, batch: int) -> tuple[str, np.ndarray, np.ndarray, float]:
    """(label, steps, label_acc, ms per step) of one LABEL=SOURCE@MS argument."""
    label, _, rest = spec.partition("=")
    source, _, ms = rest.rpartition("@")
    if source.endswith(".jsonl"):
        rows = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()]
        steps = np.cumsum([r["samples"] for r in rows]) / batch
        acc = np.array([r["label_acc"] for r in rows])
    else:
        path, _, run = source.rpartition(":")
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["run"] == run]
        steps = np.array([float(r["steps"]) for r in rows])
        acc = np.array([float(r["label_acc"]) for r in rows])
    if not len(steps):
        raise SystemExit(f"{spec}: no points")
    return label, steps, acc, float(ms)


def at(x: np.ndarray, y: np.ndarray, mark: float) -> str:
    return f"{np.interp(mark, x, y):.3f}" if x[0] <= mark <= x[-1] else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("curves", nargs="+")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--clock", default="one quiet core",
                   help="what MS was timed on, for the time axis (e.g. '2 cores' for 2-thread step costs)")
    p.add_argument("--ylim", default="", help="LO,HI of the accuracy axis (default: down to all-zeros' 0.538)")
    p.add_argument("--precision", default="fp32", help="what the curves trained in, for the title (e.g. 'bf16')")
    args = p.parse_args(argv)
    curves = [read_curve(c, args.batch) for c in args.curves]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for label, steps, acc, ms in curves:
        a.plot(steps, acc, marker=".", label=label)
        b.plot(steps * ms / 60000, acc, marker=".", label=f"{label} ({ms:.0f} ms/step)")
    a.set_xlabel("optimizer steps (batch 32)")
    b.set_xlabel(f"minutes of {args.clock} (steps x measured step cost)")
    a.set_ylabel("held-out label accuracy (threshold 0.5)")
    for ax in (a, b):
        ax.axhline(0.538, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if args.ylim:
        a.set_ylim(*(float(v) for v in args.ylim.split(",")))
    fig.suptitle(f"bench/learn.py curves: held-out glyph families, {args.precision}")
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out, dpi=110)

    head = "| curve | ms/step | " + " | ".join(f"{s:,} steps" for s in STEP_MARKS) + " | " + \
        " | ".join(f"{m} min" for m in MINUTE_MARKS) + " | last point |"
    lines = [head, "|" + "---|" * (len(STEP_MARKS) + len(MINUTE_MARKS) + 3)]
    for label, steps, acc, ms in curves:
        minutes = steps * ms / 60000
        cells = [at(steps, acc, s) for s in STEP_MARKS] + [at(minutes, acc, m) for m in MINUTE_MARKS]
        last = f"{steps[-1]:,.0f} steps / {minutes[-1]:.1f} min: {acc[-1]:.3f}"
        lines.append(f"| {label} | {ms:.0f} | " + " | ".join(cells) + f" | {last} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
