"""train/sources.py: which scenes a generated batch holds, with and without hard scenes mixed in."""

import numpy as np
import pytest

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.model.batches import EpochDraw
from dirtymnist.train.sources import ScenePool, SynthBatches

SMALL = {"canvas": 64, "height": [12.0, 20.0], "letters": [2, 3], "distractors": [0, 0]}
HARD = {"letters": [1, 1], "transparent": 1.0}


def _images(batch) -> np.ndarray:
    return batch[0].numpy()


def test_plain_batch_holds_consecutive_scenes_of_its_epoch():
    src = SynthBatches("synth", SMALL, 4, 3, EpochDraw(5, 2))
    images = _images(src[1])
    first = (2 * 3 + 1) * 4  # scenes of earlier batches come first
    for j in range(4):
        assert np.array_equal(images[j], src._render(first + j)[0])


def test_hard_share_puts_hard_scenes_last_in_every_batch():
    src = SynthBatches("synth", SMALL, 8, 3, EpochDraw(5, 1), ScenePool(hard_knobs=HARD, hard_share=0.25))
    assert src.hard is not None and src.hard.batch_size == 2
    images, labels = src[2][0].numpy(), src[2][1].numpy()
    step = 1 * 3 + 2
    for j in range(6):  # the main scenes keep their own consecutive indices
        assert np.array_equal(images[j], src._render(step * 6 + j)[0])
    for j in range(2):
        assert np.array_equal(images[6 + j], src.hard._render(step * 2 + j)[0])
    assert (labels[6:].sum(1) <= 1).all()  # one letter each: the hard knobs apply
    assert (labels[:6].sum(1) >= 2).any()  # the main knobs are untouched


def test_hard_scenes_have_their_own_pool_of_the_same_share():
    src = SynthBatches("synth", SMALL, 4, 4, EpochDraw(1), ScenePool(8, HARD, 0.25))
    assert src.hard.pool == 2
    hard = [src[i][0].numpy()[-1] for i in range(4)]
    assert np.array_equal(hard[0], hard[2]) and np.array_equal(hard[1], hard[3])
    assert not np.array_equal(hard[0], hard[1])


def test_ranks_split_a_mixed_batch_between_them():
    whole = SynthBatches("synth", SMALL, 4, 2, EpochDraw(3), ScenePool(hard_knobs=HARD, hard_share=0.5))[1][0]
    parts = [SynthBatches("synth", SMALL, 4, 2, EpochDraw(3, 0, rank=r, world=2),
                          ScenePool(hard_knobs=HARD, hard_share=0.5))[1][0] for r in (0, 1)]
    assert np.array_equal(whole.numpy()[0::2], parts[0].numpy())
    assert np.array_equal(whole.numpy()[1::2], parts[1].numpy())


def _stage(**extra) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in {"name": "s", "source": "dense", "steps": 5, **extra}.items())
    return f"stages=[{{{body}}}]"


@pytest.mark.parametrize("extra, message", [
    ({"hard_share": 0.25}, "needs hard_knobs"),
    ({"hard_knobs": "{height: [17, 30]}"}, "must be in (0, 1)"),
    ({"hard_share": 1.0, "hard_knobs": "{height: [17, 30]}"}, "must be in (0, 1)"),
    ({"hard_share": 0.2, "hard_knobs": "{heigth: [17, 30]}"}, "unknown knob 'heigth'"),
    ({"hard_share": 0.2, "hard_knobs": "{height: [30, 17]}"}, "hard_knobs"),
    ({"hard_share": 0.2, "hard_knobs": "small"}, "hard_knobs is a mapping"),
    ({"hard_share": "lots", "hard_knobs": "{height: [17, 30]}"}, "must be in (0, 1)"),
])
def test_hard_settings_are_checked_at_load(extra, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("cpu", [_stage(**extra)])


def test_hard_settings_need_a_scene_stage():
    with pytest.raises(ConfigError, match="synth or dense stage, not data"):
        load_config("cpu", ["stages=[{name: d, source: data, hard_share: 0.2, hard_knobs: {height: [17, 30]}}]"])


def test_hard_settings_reach_the_epoch_plan():
    from dirtymnist.train.schedule import build_plan

    cfg = load_config("cpu", [_stage(hard_share=0.25, hard_knobs="{height: [17, 30]}")])
    plan = build_plan(cfg, data_batches=10)
    assert plan[0].hard_share == 0.25 and plan[0].hard_knobs == {"height": [17, 30]}
