"""Mixup / CutMix targets for multi-label batches, and the SAM step."""

from __future__ import annotations

import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.engine import sam_second_step
from dirtymnist.errors import ConfigError
from dirtymnist.mixing import mix_batch


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


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


def test_cutmix_with_position_maps_gives_exact_targets():
    x, y, maps = _batch()
    x2, y2, m2 = mix_batch(x, y, maps, "cutmix", 1.0, 1.0, _gen(5))
    changed = (x2 != x).any(1)  # (B, H, W): pixels taken from the partner
    assert changed.any(), "this seed cuts a box"
    # the box lies on the 4-px map cells, and every image's targets are its mixed map's letters
    cell = x.shape[-1] // maps.shape[-1]
    rows = torch.nonzero(changed.any(0).any(1)).flatten()
    assert rows.min() % cell == 0 and (rows.max() + 1) % cell == 0
    assert torch.equal(y2, m2.flatten(2).amax(2).float())
    # a letter of image i whose only cell went under the box is gone, unless the partner brings it
    lost = (y == 1) & (y2 == 0)
    assert lost.any() or (y2 != y).any()


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
