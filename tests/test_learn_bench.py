"""bench/learn.py's `preset` arm: a preset's dense stages run on the bench's pools with the
generator knobs the preset ships (its easy stage from the easy pool, its scenes as it widens them)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import learn  # noqa: E402

FAMILIES = {"families": ["caveat"]}


def _args(preset: str, *sets: str, knob: tuple[str, ...] = ()) -> types.SimpleNamespace:
    return types.SimpleNamespace(arms="preset", preset=preset, set=list(sets), knob=list(knob), pool=40,
                                 easy_pool=6, seed=0, train_seed=None)


def test_default_preset_arm_draws_its_widened_scenes():
    args = _args("default")
    knobs = {**FAMILIES, **learn._preset_knobs(args), **learn._knobs(args.knob)}
    assert knobs["speckle"] == 0.5 and knobs["thickness"] == [0.10, 0.30]
    (stage,) = learn._preset_config(args, knobs).stages
    assert stage["pool"] == 40 and stage["knobs"] == knobs  # the main pool, drawn with those knobs


def test_scratch_preset_arm_keeps_its_easy_stage_on_the_easy_pool():
    args = _args("scratch")
    assert learn._preset_knobs(args) == {}
    easy, full = learn._preset_config(args, FAMILIES).stages
    assert easy["pool"] == 6 and easy["knobs"] == {**learn.EASY, **FAMILIES}
    assert full["pool"] == 40 and full["knobs"] == FAMILIES


def test_stage_override_and_knob_flag_replace_the_preset_knobs():
    plain = _args("default", "stages=[{name: scenes, source: dense, steps: 4, pool: 8}]")
    assert learn._preset_knobs(plain) == {}
    flagged = _args("default", knob=("speckle=0.25",))
    assert {**learn._preset_knobs(flagged), **learn._knobs(flagged.knob)}["speckle"] == 0.25
    other_arm = types.SimpleNamespace(**{**vars(flagged), "arms": "curriculum"})
    assert learn._preset_knobs(other_arm) == {}


def test_preset_hard_scenes_come_from_the_pool_the_bench_fills():
    from dirtymnist.train import sources

    stage = ("stages=[{name: scenes, source: dense, steps: 2, pool: 8, hard_share: 0.25, "
             "hard_knobs: {letters: [1, 1], height: [17, 30]}}]")
    args = types.SimpleNamespace(**{**vars(_args("default", stage)), "pool_cache": "", "workers": 1})
    ((hard_knobs, share),) = learn._preset_hard(args)
    assert share == 0.25 and hard_knobs == {"letters": [1, 1], "height": [17, 30]}
    learn._fill("dense", {**FAMILIES, **hard_knobs}, args.seed, 10, args)  # as _load fills it
    (cfg_stage,) = learn._preset_config(args, FAMILIES).stages
    batches = sources.SynthBatches("dense", cfg_stage["knobs"], 4, 2, seed=0, epoch=0, pool=cfg_stage["pool"],
                                   hard_knobs=cfg_stage["hard_knobs"], hard_share=cfg_stage["hard_share"])
    assert batches.hard.pool == 10  # ceil(40 x 0.25): the bench's pool, not the stage's 8
    assert sources._pool_key("dense", 0, batches.hard.knobs_dict, 9) in sources._POOL
    assert learn._preset_hard(_args("default")) == []  # the shipped preset mixes nothing in
