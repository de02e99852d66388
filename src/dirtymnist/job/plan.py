"""How a `run --minutes N` job spends its minutes: a pure function of measured costs and a budget.

    costs = Costs(step_s=0.42, data_steps=300, other_steps=0, val_rows=1920, view_s=0.004,
                  test_rows=5000, test_row_s=0.02, tta_rows=2000, tta_row_s=0.05, fixed_s=30)
    plan = plan_budget(3600, spent_s=40, costs=costs, folds_k=5)   # -> Plan(epochs=12, folds=[0, 1], ...)

The rule, and why (BENCHMARKS.md, "A time budget: epochs or folds"):
- Inference is reserved first, at each view's measured cost (a zoomed view costs about two plain ones):
  the test split through every kept fold model in the settings always predicted (rot90, and none
  when the folder has answers), the TTA choice on out-of-fold rows (a sample of at most
  `TTA_SHARE` of the budget, never under `MIN_TTA_ROWS` rows), thresholds, report and package, plus
  a safety margin (`MARGIN` of the budget) for what the measurement cannot see. A costlier TTA
  (rot90_zoom) is not reserved: the job keeps it among the candidates only if the minutes left
  after training pay for it (pipeline), so a run that chooses rot90 does not end minutes early.
- The rest trains. Measured on 9,600 scenes (issue #49): two more data-stage epochs bought about
  two points (finetune 2 epochs 0.839 -> 6 epochs 0.856), while five folds from one start with two
  short epochs each scored what one fold does (0.841 vs 0.839). So one fold gets as many
  data-stage epochs as fit, up to `EPOCH_CAP`; folds are added only when the cap is reached with
  time to spare, each with the cap's epochs (an ensemble of well-trained folds, never of short ones).
- A final fit on all rows is not planned: nothing measured says it gains here, and a model with no
  held-out rows gives no out-of-fold rows to fit thresholds or choose the TTA on.
- The data stage's length is the plan's `epochs` and `epoch_fraction` (config keys): whole epochs
  rounded up, each drawing the share of the rows that fits (3.8 epochs' time: 4 epochs of 94 %), so
  the cosine schedule ends on time and no minute is lost to rounding down; stages on generated
  scenes keep their own steps and are costed at the measured step rate.
- A budget too small for one epoch still plans one (`fits` False, said in the plan table).
- The measurement is short and a VM's speed drifts (BENCHMARKS: a 30-minute job timed 0.525 s a step
  and 0.017 s a view, then ran at 0.43 and 0.011, and ended at 20 minutes). So after each data-stage
  epoch the job prices the fold again (`data_budget`): the inference reserve at the view rate that
  epoch's validation ran at, and train sets the later epochs' length from the rate it ran at
  (train.schedule.refit_steps): the epochs stay, their share of the rows moves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

VIEWS = {"none": 1, "flip": 2, "rot90": 4, "d4": 8, "rot90_zoom": 8}  # transforms.TTA_PRESETS (no torch here)
DISTINCT_VIEWS = {"none": {"rot0"}, "flip": {"rot0", "hflip"}, "rot90": {f"rot{k}" for k in (0, 90, 180, 270)},
                  "d4": {f"{h}rot{k}" for h in ("", "hflip_") for k in (0, 90, 180, 270)},
                  "rot90_zoom": {f"{z}rot{k}" for z in ("", "zoom_") for k in (0, 90, 180, 270)}}
EPOCH_CAP = 12  # data-stage epochs of one fold before folds are added (gains still seen at 6; capped for safety)
MARGIN = 0.05  # share of the budget kept back for what the measurement does not see
TTA_SHARE = 0.10  # the TTA choice's out-of-fold sample costs at most this share of the budget
SAFETY = 1.1  # a costlier TTA candidate is kept when its estimated seconds x this fit the minutes left
MIN_FRACTION = 0.05  # an epoch draws at least this share of the rows (a budget too small is said, not hidden)
MIN_TTA_ROWS = 500  # ... but never fewer rows (a smaller sample cannot tell the settings apart)


@dataclass(frozen=True)
class Costs:
    """What the plan is made of: measured rates and the job's sizes."""

    step_s: float  # seconds of one optimizer step (measured on the data stage's first steps)
    data_steps: int  # data-stage optimizer steps in one epoch of one fold
    other_steps: int  # optimizer steps of a fold's other stages (generated scenes), fixed by the preset
    val_rows: int  # one fold's validation rows (predicted once per epoch, one view)
    view_s: float  # seconds of one image through the plain view of one model (measured on one batch)
    test_rows: int
    test_row_s: float  # one test image through one fold model in every setting always predicted
    tta_rows: int  # out-of-fold rows of the TTA choice at most (--tta-rows)
    tta_row_s: float  # one out-of-fold row through every distinct view of the TTA candidates
    fixed_s: float  # thresholds, evaluate, report and package (an estimate: not measured up front)
    views: dict[str, float] = field(default_factory=dict)  # each distinct view's seconds per image


@dataclass
class Plan:
    """The decision: the data stage's epochs, the folds, and the minutes each part is given."""

    budget_s: float
    epochs: int
    folds: list[int]
    fits: bool  # False when even one fold of one epoch does not fit the budget
    seconds: dict[str, float] = field(default_factory=dict)  # part -> planned seconds
    costs: dict = field(default_factory=dict)
    tta_rows: int = 0  # the TTA choice's out-of-fold sample, sized to the budget
    epoch_fraction: float = 1.0  # share of the fold's rows each data-stage epoch draws (config key)
    data_seconds: float = 0.0  # one fold's data stage as planned: its epochs and their validation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)

    def format(self) -> str:
        lines = [f"plan for {self.budget_s / 60:.1f} minutes: {len(self.folds)} fold(s) "
                 f"({','.join(map(str, self.folds))}) x {self.epochs} data-stage epoch(s)"
                 + (f" of {self.epoch_fraction:.0%} of the rows" if self.epoch_fraction < 1 else "") + ", "
                 f"TTA chosen on {self.tta_rows} out-of-fold rows"
                 + ("" if self.fits else " -- the budget is too small even for this"),
                 "", "| part | planned minutes |", "|---|---|"]
        lines += [f"| {part} | {s / 60:.2f} |" for part, s in self.seconds.items()]
        return "\n".join(lines)


def plan_budget(budget_s: float, spent_s: float, costs: Costs, *, folds_k: int,
                folds: list[int] | None = None, epoch_cap: int = EPOCH_CAP, margin: float = MARGIN) -> Plan:
    """Epochs (then folds) that fit `budget_s` after `spent_s` already spent (cache, folds, measuring).

    `folds` given: those folds, the plan chooses epochs only. Otherwise fold 0 first, folds added in
    order once `epoch_cap` epochs fit (never more than `folds_k`).
    """
    c = costs
    epoch_s = c.data_steps * c.step_s + c.val_rows * c.view_s  # train one epoch, then validate it
    fold_fixed_s = c.other_steps * c.step_s + c.test_rows * c.test_row_s  # per kept fold
    tta_rows = tta_sample_rows(budget_s, c)
    tta_s = tta_rows * c.tta_row_s
    reserve_s = budget_s * margin + c.fixed_s + tta_s
    avail = budget_s - spent_s - reserve_s  # for training and predicting the test split

    n = len(folds) if folds else 1
    per_fold_s = (avail - n * fold_fixed_s) / n  # one fold's data stage: its epochs and their validation
    epochs, fraction = epochs_that_fit(per_fold_s, c, epoch_cap)
    if not folds:
        if epochs == epoch_cap:  # the cap reached: spend what is left on more folds of the same length
            per_fold = fold_fixed_s + epoch_cap * epoch_s
            n = max(1, min(folds_k, math.floor(avail / max(per_fold, 1e-9))))
        folds = list(range(n))
    data_s = epochs * (fraction * c.data_steps * c.step_s + c.val_rows * c.view_s)
    train_s = n * (c.other_steps * c.step_s + data_s)
    predict_s = n * c.test_rows * c.test_row_s
    seconds = {"already spent (cache, folds, measuring)": spent_s, "train": train_s,
               "choose TTA (OOF sample)": tta_s, "predict (test split)": predict_s,
               "thresholds, evaluate, report, package": c.fixed_s, "margin": budget_s * margin}
    fits = spent_s + train_s + predict_s + reserve_s <= budget_s + 1e-9
    return Plan(budget_s, epochs, list(folds), fits, seconds, asdict(c), tta_rows, fraction, data_s)


def data_budget(plan: Plan, view_s_seen: float) -> float:
    """Seconds one fold's data stage may take, priced again once an epoch has run: the planned
    data stage, plus (minus) the inference reserve's share that the view rate seen in validation
    (`view_s_seen` a row) saves (costs) against the measured one. The rate is trusted within 4x."""
    ratio = min(4.0, max(0.25, view_s_seen / max(plan.costs["view_s"], 1e-9)))
    infer_s = plan.seconds["choose TTA (OOF sample)"] + plan.seconds["predict (test split)"]
    return plan.data_seconds + infer_s * (1 - ratio) / max(len(plan.folds), 1)


def epochs_that_fit(seconds: float, c: Costs, epoch_cap: int) -> tuple[int, float]:
    """(epochs, epoch_fraction) of a data stage that fills `seconds`: whole epochs rounded up, each
    drawing the share of the rows that makes them fit, so no minute is lost to rounding down
    (3.8 epochs' time: 4 epochs of 94 % of the rows). Each epoch is validated on every row."""
    train_s, val_s = c.data_steps * c.step_s, c.val_rows * c.view_s
    x = seconds / max(train_s + val_s, 1e-9)  # full epochs that fit
    if x >= epoch_cap:
        return epoch_cap, 1.0
    epochs = max(1, math.ceil(x))
    fraction = (seconds / epochs - val_s) / max(train_s, 1e-9)
    return epochs, min(1.0, max(MIN_FRACTION, math.floor(fraction * 100) / 100))


def tta_sample_rows(budget_s: float, c: Costs) -> int:
    """Out-of-fold rows of the TTA choice: `TTA_SHARE` of the budget, within [MIN_TTA_ROWS, --tta-rows]."""
    fit = math.floor(TTA_SHARE * budget_s / max(c.tta_row_s, 1e-9))
    return max(1, min(c.tta_rows, max(MIN_TTA_ROWS, fit)))


def affordable_tta(presets, base: list[str], left_s: float, plan: Plan, *, models: int, test_rows: int,
                   safety: float = SAFETY) -> list[str]:
    """The TTA candidates the `left_s` seconds left after training pay for, in `presets`' order.

    The base settings (predicted whatever the choice) are always kept; another candidate is kept
    when the choice's out-of-fold views with it, its own test-split prediction, the base settings'
    and the fixed steps fit `left_s` with `safety` on the estimate."""
    views = plan.costs["views"]
    need = plan.costs["fixed_s"] + models * test_rows * sum(setting_seconds(t, views) for t in base)
    kept: list[str] = []
    for t in presets:
        tta_s = plan.tta_rows * sum(views[v] for v in distinct_views([*kept, t]))
        extra = 0.0 if t in base else models * test_rows * setting_seconds(t, views)
        if t in base or safety * (need + tta_s + extra) <= left_s:
            kept.append(t)
            need += extra
    return kept


def distinct_views(settings) -> set[str]:
    """The distinct views of TTA settings (each computed once per row where they are shared)."""
    return set().union(*(DISTINCT_VIEWS[t] for t in settings))


def setting_seconds(tta: str, view_s: dict[str, float]) -> float:
    """Seconds of one image through one model in TTA setting `tta` (predicted on its own)."""
    return sum(view_s[v] for v in DISTINCT_VIEWS[tta])
