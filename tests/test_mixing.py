"""Mixup / CutMix targets for multi-label batches, and the SAM step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.train.engine import sam_second_step
from dirtymnist.train.mixing import mix_batch


def _gen(seed=0):
    return np.random.default_rng(seed)


def _batch(b=6, size=32, grid=8):
    torch.manual_seed(1)
    x = torch.rand(b, 1, size, size)
    y = (torch.rand(b, 26) > 0.7).float()
    maps = torch.zeros(b, 26, grid, grid, dtype=torch.uint8)
    for i in range(b):  # each present letter: one cell of its class plane
        for c in torch.nonzero(y[i]).flatten().tolist():
            maps[i, c, (i + c) % grid, (3 * c) % grid] = 1
    return x, y, maps


def test_none_and_probability_zero_leave_the_batch_alone():
    x, y, maps = _batch()
    for kind, prob in (("none", 1.0), ("mixup", 1e-9)):
        x2, y2, m2 = mix_batch(x, y, maps, kind, 1.0, prob, _gen())
        assert torch.equal(x2, x) and torch.equal(y2, y) and torch.equal(m2, maps)


def test_mixup_blends_images_and_targets_with_one_lambda():
    x, y, maps = _batch()
    x2, y2, m2 = mix_batch(x, y, maps, "mixup", 0.4, 1.0, _gen(3))
    # recover lam and the partner of sample 0 from the images, then check the targets agree
    found = False
    for j in range(len(x)):
        d = x[0] - x[j]
        if j == 0 or d.abs().max() < 1e-6:
            continue
        lam = float(((x2[0] - x[j]) * d).sum() / (d * d).sum())
        if torch.allclose(x2[0], lam * x[0] + (1 - lam) * x[j], atol=1e-5):
            assert 0 <= lam <= 1
            assert torch.allclose(y2[0], lam * y[0] + (1 - lam) * y[j], atol=1e-5)
            assert torch.allclose(m2[0], lam * maps[0].float() + (1 - lam) * maps[j].float(), atol=1e-5)
            found = True
    assert found
    assert ((y2 >= 0) & (y2 <= 1)).all()


@pytest.mark.parametrize("size", [128, 100])  # 4 px cells; and cells that are not whole pixels
def test_cutmix_cuts_the_same_box_in_pixels_and_map_cells(size):
    """Sample i: every pixel i, every cell marked in class plane i. After cutmix the changed
    cells are the box on the grid and the changed pixels must be that box, scaled."""
    b, grid = 6, 32
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, size, size).contiguous()
    y = torch.eye(b, 26)
    maps = y[:, :, None, None].expand(b, 26, grid, grid).to(torch.uint8).contiguous()
    cut = 0
    for seed in range(5):
        x2, y2, m2 = mix_batch(x, y, maps, "cutmix", 1.0, 1.0, _gen(seed))
        for i in range(b):
            cells = (m2[i] != maps[i]).any(0)
            pixels = x2[i, 0] != x[i, 0]
            if not cells.any():
                assert not pixels.any()
                continue
            cut += 1
            up = torch.nn.functional.interpolate(cells[None, None].float(), size=(size, size))[0, 0].bool()
            if size % grid == 0:
                assert torch.equal(pixels, up)
            else:  # rounding moves the box's edges by at most one pixel
                assert (pixels != up).sum() <= 2 * size
            # targets: the sample's own letter unless the box covers every cell, plus the partner's
            partner = int(x2[i, 0][pixels][0])
            assert y2[i, partner] == 1 and y2[i, i] == float(not cells.all())
    assert cut >= 10


def test_cutmix_drops_a_covered_letter_and_brings_the_partners():
    """Two hand-made scenes: 'a' at the top left of image 0, 'b' at the top left of image 1.
    Whatever the box, each image's targets are the letters whose cell is shown."""
    x = torch.zeros(2, 1, 32, 32)
    x[1] = 1.0
    y = torch.zeros(2, 26)
    y[0, 0] = y[1, 1] = 1
    maps = torch.zeros(2, 26, 8, 8, dtype=torch.uint8)
    maps[0, 0, 1, 1] = maps[1, 1, 1, 1] = 1
    seen = set()
    for seed in range(200):
        x2, y2, _ = mix_batch(x, y, maps, "cutmix", 1.0, 1.0, _gen(seed))
        covered = bool(x2[0, 0, 5, 5] != x[0, 0, 5, 5])  # the pixel at the centre of cell (1, 1)
        assert y2[0].tolist() == (y[1] if covered else y[0]).tolist()
        assert y2[1].tolist() == (y[0] if covered else y[1]).tolist()
        seen.add(covered)
    assert seen == {True, False}


def test_cutmix_without_maps_is_area_weighted():
    x, y, _ = _batch()
    x2, y2, m2 = mix_batch(x, y, None, "cutmix", 1.0, 1.0, _gen(5))
    assert m2 is None
    kept = 1 - float((x2[0] != x[0]).any(0).float().mean())
    lo = torch.minimum(y, y.roll(1, 0)).min()
    assert ((y2 >= lo) & (y2 <= 1)).all()
    # sample 0 keeps `kept` of its own targets
    for j in range(len(x)):
        if torch.allclose(y2[0], kept * y[0] + (1 - kept) * y[j], atol=1e-3):
            break
    else:
        pytest.fail("targets are not the kept-area blend of two samples")


def test_the_same_generator_mixes_the_same_way():
    x, y, maps = _batch()
    a = mix_batch(x, y, maps, "cutmix", 1.0, 1.0, _gen(7))
    b = mix_batch(x, y, maps, "cutmix", 1.0, 1.0, _gen(7))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("bad", ["mix=blend", "mix=mixup mix_alpha=0", "mix=cutmix mix_prob=1.5",
                                 "sam_rho=-0.1", "sam_rho=0.05 accum_steps=2", "sam_rho=0.05 amp=fp16"])
def test_bad_mix_and_sam_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        load_config("cpu", bad.split())


def test_sam_takes_the_gradient_at_the_ascent_point_and_restores_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    model.train()
    x, t = torch.randn(16, 4), torch.randn(16, 1)

    def forward_loss():
        return ((model(x) - t) ** 2).mean()

    forward_loss().backward()
    g = [p.grad.clone() for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rho = 0.05
    sam_second_step(model, forward_loss, rho)
    after = model.state_dict()
    for k in before:  # weights back where they were; running stats untouched by the 2nd pass
        assert torch.allclose(before[k].float(), after[k].float(), atol=1e-6), k
    # reference: the gradient at w + rho * g / |g|
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    ref.load_state_dict(before)
    with torch.no_grad():
        for p, gi in zip(ref.parameters(), g):
            p.add_(rho * gi / norm)
    ((ref(x) - t) ** 2).mean().backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    assert not torch.allclose(model[0].weight.grad, g[0])  # not the plain gradient
