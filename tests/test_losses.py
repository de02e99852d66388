"""The dense (class-map) losses: 26 focal sigmoids per cell, or a per-cell softmax over the
letters and a background class (issue 14, lever 2), and the softmax start that switches."""

from __future__ import annotations

import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.train.losses import DENSE_LOSSES, dense_distill_loss, dense_loss, dense_softmax_loss


def _targets() -> torch.Tensor:
    """(1, 3, 4, 4) position maps: letter 0 in cell (0, 0), letter 2 in (3, 3), both in (1, 1)."""
    t = torch.zeros(1, 3, 4, 4)
    t[0, 0, 0, 0] = t[0, 2, 3, 3] = 1
    t[0, 0, 1, 1] = t[0, 2, 1, 1] = 1
    return t


@pytest.mark.parametrize("loss", [dense_loss, dense_softmax_loss])
def test_right_maps_cost_little_and_wrong_maps_cost_much(loss):
    t = _targets()
    right = torch.where(t > 0, 8.0, -8.0)
    # the softmax keeps the entropy of the shared cell: 0.25 x ln 2 over 3 positive cells
    assert loss(right, t) < 0.06
    assert loss(-right, t) > 20 * loss(right, t)
    assert loss(torch.zeros_like(t), t) > loss(right, t)


def test_softmax_shares_a_cell_between_the_letters_that_cover_it():
    """Cell (1, 1) holds letters 0 and 2: their equal soft targets make equal logits the best
    answer there, so raising one of them above the other costs more."""
    t = _targets()
    maps = torch.where(t > 0, 6.0, -6.0).requires_grad_()
    dense_softmax_loss(maps, t).backward()
    g = maps.grad[0, :, 1, 1]
    assert g[0] == pytest.approx(g[2].item()) and g[1] > 0  # the absent letter is pushed down
    lopsided = maps.detach().clone()
    lopsided[0, 0, 1, 1] = 12.0
    assert dense_softmax_loss(lopsided, t) > dense_softmax_loss(maps.detach(), t)


def test_softmax_background_is_the_fixed_zero_logit():
    """An empty cell is right when every letter's logit is below 0, i.e. sigmoid(map) < 0.5,
    so presence at inference (sigmoid of the spatial max) means the same under both losses."""
    t = torch.zeros(1, 3, 2, 2)
    t[0, 1, 0, 0] = 1
    below = torch.where(t > 0, 6.0, -3.0)
    above = torch.where(t > 0, 6.0, 3.0)
    assert dense_softmax_loss(below, t) < 0.01 < dense_softmax_loss(above, t)


def test_target_maps_are_max_pooled_to_the_class_maps():
    fine = torch.zeros(1, 2, 8, 8)
    fine[0, 1, 5, 6] = 1  # lands in cell (2, 3) of a 4x4 map
    maps = torch.full((1, 2, 4, 4), -8.0)
    maps[0, 1, 2, 3] = 8.0
    for loss in DENSE_LOSSES.values():
        assert loss(maps, fine) < 0.01


def test_a_softmax_start_uses_the_softmax_for_its_first_epochs_only():
    from dirtymnist.train.schedule import build_plan
    from dirtymnist.train.stages import TrainData, build_stage

    stages = "[{name: a, source: dense, steps: 2, epochs: 2, pool: 4}, {name: b, source: dense, steps: 2, epochs: 2, pool: 4}]"
    cfg = load_config("cpu", ["model=dm_fcn_tiny", "batch_size=2", f"stages={stages}", "dense_softmax_epochs=3"])
    plan = build_plan(cfg, 0)
    data = TrainData(split=None, rows=torch.arange(0).numpy())
    targets = [build_stage(plan[e], e, cfg, data, None).cfg.dense_target for e in range(4)]
    assert targets == ["softmax", "softmax", "softmax", "sigmoid"]
    assert cfg.dense_target == "sigmoid"  # the run's own config is untouched


def test_distillation_is_zero_on_agreement_and_pulls_toward_the_teacher():
    """Bernoulli KL to the teacher's maps (issue 14, lever 5): 0 when the maps agree, > 0
    otherwise, gradient sigmoid(student) - sigmoid(teacher) over the positive cells."""
    target = _targets()  # 4 positive cells
    teacher = torch.randn(1, 3, 4, 4)
    assert dense_distill_loss(teacher.clone(), teacher, target).abs() < 1e-6
    student = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = dense_distill_loss(student, teacher, target)
    assert loss > 0
    loss.backward()
    want = (torch.sigmoid(student) - torch.sigmoid(teacher)).detach() / 4
    torch.testing.assert_close(student.grad, want)
    # a teacher map of another size is resized to the student's
    assert dense_distill_loss(student, torch.randn(1, 3, 8, 8), target).isfinite()
