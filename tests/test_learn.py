"""Curriculum and pretraining: knobs, crops and position maps, heads, nets, pretrained weights,
and a curriculum whose stage boundary is crossed by a killed-and-resumed run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.data.crops import letter_maps, make_knobs, render_dense, render_glyph_crop
from dirtymnist.data.synth import Placed, render_scene
from dirtymnist.model.build import build_model
from dirtymnist.model.checkpoint import load_checkpoint

EASY = {"letters": [3, 3], "height": [40.0, 40.0], "transparent": 0.0, "distractors": [0, 0]}


def test_curriculum_knobs_change_what_they_claim():
    easy = make_knobs(EASY)
    scenes = [render_scene(0, i, easy) for i in range(4)]
    assert all(s.labels.sum() == 3 and not s.distractors for s in scenes)
    assert all(p.height == 40.0 for s in scenes for p in s.letters)
    full = [render_scene(0, i, make_knobs({})) for i in range(4)]
    assert all(10 <= s.labels.sum() <= 14 for s in full)
    # no noise: the background is black, so only the letters' ink is bright
    quiet = render_scene(0, 0, make_knobs({**EASY, "noise": 0.0})).image
    assert (quiet == 0).mean() > 0.8


def test_crops_and_position_maps_are_deterministic():
    a, b = render_glyph_crop(3, 7), render_glyph_crop(3, 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (64, 64) and a[1].sum() == 1
    assert not np.array_equal(a[0], render_glyph_crop(3, 8)[0])
    knobs = make_knobs(EASY)
    d1, d2 = render_dense(0, 5, knobs), render_dense(0, 5, knobs)
    assert all(np.array_equal(x, y) for x, y in zip(d1, d2))
    image, labels, maps = d1
    # a class plane is marked exactly where its letter is present
    assert maps.shape == (26, 32, 32) and np.array_equal(maps.any((1, 2)), labels.astype(bool))


def test_letter_maps_mark_a_disk_at_the_centre():
    maps = letter_maps([Placed("c", 100.0, 60.0, 40.0, 0.0)], 256, grid=32)
    assert maps[2, 60 // 8, 100 // 8] == 1 and maps.sum() == maps[2].sum() > 4
    assert maps[2, 0, 0] == 0


@pytest.mark.parametrize("head", ["timm", "avg", "max", "lse", "csra"])
@pytest.mark.parametrize("model", ["dm_fcn", "dm_fcn_tiny"])
def test_each_head_gives_the_right_shapes(head, model):
    net = build_model(load_config("cpu", [f"model={model}", f"head={head}"]), 26).eval()
    x = torch.rand(2, 1, 128, 128)
    assert net(x).shape == (2, 26)
    if head != "timm":
        logits, maps = net(x, return_maps=True)
        assert maps.shape == (2, 26, 16, 16) and torch.equal(logits, net(x))


def test_pretrained_weights_load_into_every_preset(tmp_path):
    from dirtymnist.train.pretrain import PretrainOptions, pretrain

    for preset in ("cpu", "default", "winner", "seed"):
        shrink = [] if preset in ("cpu", "default") else ["model=efficientnet_b0", "pretrained="]
        model = load_config(preset, shrink).model
        options = PretrainOptions(steps=1, preset=preset, num_workers=0,
                                  overrides=["batch_size=2", "image_size=64", "in_chans=1", *shrink])
        path = pretrain(tmp_path / f"{preset}.safetensors", options)
        from safetensors.torch import load_file

        state = load_file(str(path))
        assert any(k.startswith("trunk.") for k in state) and any(k.startswith("head.") for k in state)
        net = build_model(load_config(preset, [*shrink, f"pretrained={path}"]), 26)
        key = next(k for k in state if k.startswith("trunk.") and state[k].ndim == 4)
        got = net.state_dict()[key]
        want = state[key] if got.shape == state[key].shape else None
        assert want is None or torch.equal(got, want), f"{preset} ({model}): {key} not loaded"


def _curriculum_cmd(data, run_dir):
    stages = ("[{name: easy, source: dense, steps: 3, pool: 6, knobs: {letters: [2, 3], distractors: [0, 0]}},"
              " {name: data, source: data, epochs: 1}]")
    args = [sys.executable, "-m", "dirtymnist", "train", str(data), "--preset", "cpu", "--run-dir", str(run_dir)]
    for item in ["model=dm_fcn_tiny", "image_size=64", "batch_size=4", "augment=rot90", "mix=cutmix",
                 "mix_prob=1", "sam_rho=0.05", "checkpoint_minutes=0.000001", f"stages={stages}"]:
        args += ["--set", item]
    return args


def test_curriculum_stage_boundary_resumes_bit_exactly(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=16, n_test=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRTYMNIST_KILL")}
    env["OMP_NUM_THREADS"] = "1"
    ref, run = tmp_path / "ref", tmp_path / "run"
    subprocess.run(_curriculum_cmd(data, ref), env=env, check=True, capture_output=True)
    # write 2: mid-stage checkpoint of the dense stage; then the end-of-stage writes
    for n in (3, 8, 5):
        proc = subprocess.run(_curriculum_cmd(data, run), env={**env, "DIRTYMNIST_KILL_AT_WRITE": str(n)},
                              capture_output=True)
        assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    done = subprocess.run(_curriculum_cmd(data, run), env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    a, b = load_checkpoint(ref / "fold0" / "last.pt"), load_checkpoint(run / "fold0" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert [r["source"] for r in a["history"]] == ["dense", "data"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"model.{key} differs after resume"


def test_the_glyph_crop_stage_is_reached_through_its_source_and_trains_with_softmax(tmp_path, make_dataset):
    """`source: glyphs` (stages.glyph_stage, an experiment kept out of the core loop) still trains:
    crops at their own size, a 26-way softmax (its loss starts near ln 26, BCE's near ln 2)."""
    from dirtymnist.train.loop import train

    data = make_dataset(tmp_path / "data", n_train=16, n_test=2)
    stages = "[{name: g, source: glyphs, steps: 2}, {name: data, source: data, epochs: 1}]"
    cfg = load_config("cpu", ["model=dm_fcn_tiny", "image_size=64", "batch_size=4", f"stages={stages}"])
    train(data, cfg, run_dir=tmp_path / "run")
    history = load_checkpoint(tmp_path / "run" / "fold0" / "last.pt")["history"]
    assert [(r["source"], r["samples"]) for r in history] == [("glyphs", 8), ("data", 12)]
    assert history[0]["train_loss"] > 2.5 > 1.0 > history[1]["train_loss"]


def test_training_scenes_never_repeat_a_dataset_written_with_the_same_seed():
    """`synth --seed 0` and a training stage with seed=0 must not share images (a leak of the
    synthetic test set into training, which once inflated the demo's test accuracy)."""
    import numpy as np

    from dirtymnist.data.synth import render_scene
    from dirtymnist.model.batches import EpochDraw
    from dirtymnist.train.sources import SynthBatches

    stage = SynthBatches("synth", {}, 1, 1, EpochDraw(0))
    for index in (0, 1, 4000):
        image, _ = stage._render(index)
        assert not np.array_equal(image, render_scene(0, index).image)


def test_pools_reduce_class_maps_as_documented():
    from dirtymnist.model.build import ClassMapHead

    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 1, 2] = 8.0  # one strong position among 16
    pool = lambda name, **kw: ClassMapHead(4, 1, name, **kw).pool_maps(maps).item()  # noqa: E731
    assert pool("avg") == 0.5 and pool("max") == 8.0
    assert 0.5 < pool("lse", r=5.0) < 8.0
    # csra: mean + lam x softmax-weighted mean; with a sharp attention that is mean + lam x max
    assert abs(pool("csra", r=99.0, lam=0.5) - (0.5 + 0.5 * 8.0)) < 1e-4


def test_lse_pool_is_log_mean_exp_between_avg_and_max():
    from dirtymnist.model.build import ClassMapHead

    head = ClassMapHead(8, 3, "lse", r=5.0)
    maps = torch.randn(2, 3, 4, 5)
    got = head.pool_maps(maps)
    flat = maps.flatten(2)
    want = (torch.logsumexp(5.0 * flat, -1) - torch.log(torch.tensor(20.0))) / 5.0
    torch.testing.assert_close(got, want)
    assert (flat.mean(-1) <= got + 1e-6).all() and (got <= flat.amax(-1) + 1e-6).all()


def _saved_deep_net(tmp_path):
    """The cpu preset's dm_fcn_deep, randomly initialised, saved as a weights file: (model, path)."""
    from safetensors.torch import save_file

    deep = build_model(load_config("cpu", ["pretrained="]), 26).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that the checks mean something
        for m in deep.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "deep.safetensors"
    save_file({k: v.contiguous() for k, v in deep.state_dict().items()}, str(path))
    return deep, path


def test_the_stride4_net_starts_from_stride8_weights_with_their_predictions(tmp_path):
    deep, path = _saved_deep_net(tmp_path)
    s4 = build_model(load_config("cpu", ["model=dm_fcn_deep_s4", f"pretrained={path}"]), 26).eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        logits, maps = s4(x, return_maps=True)
        want_logits, want_maps = deep(x, return_maps=True)
    assert maps.shape == (2, 26, 32, 32) and want_maps.shape == (2, 26, 16, 16)
    assert torch.allclose(logits, want_logits, atol=1e-5)
    assert torch.allclose(maps[..., ::2, ::2], want_maps, atol=1e-5)  # nearest upsampling
    # and it learns: the zero-started branches get gradients
    s4.train()
    s4(x).sum().backward()
    assert s4.trunk.up.lateral[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("model", ["dm_fcn_deep6", "dm_fcn_deep8"])
def test_a_grown_net_starts_from_dm_fcn_deep_weights_with_their_predictions(tmp_path, model):
    deep, path = _saved_deep_net(tmp_path)
    grown = build_model(load_config("cpu", [f"model={model}", f"pretrained={path}"]), 26).eval()
    assert sum(p.numel() for p in grown.parameters()) > 1.3 * sum(p.numel() for p in deep.parameters())
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        logits, maps = grown(x, return_maps=True)
        want_logits, want_maps = deep(x, return_maps=True)
    assert torch.allclose(logits, want_logits, atol=1e-5) and torch.allclose(maps, want_maps, atol=1e-5)
    # and the added blocks learn: their zero-started scale gets a gradient
    grown.train()
    grown(x).sum().backward()
    assert grown.trunk.stages[-1].b[1].weight.grad.abs().sum() > 0


def test_distillation_adds_the_kl_to_a_frozen_teacher_and_refuses_a_missing_one(tmp_path, make_dataset):
    """`distill` > 0 (issue 14, lever 5): dense stages add the KL to `teacher`'s class maps. With
    one step from the same start the loss is the plain loss plus a KL > 0; the teacher is frozen."""
    from safetensors.torch import save_file

    from dirtymnist.errors import ConfigError
    from dirtymnist.train.build import build_teacher
    from dirtymnist.train.loop import train

    torch.manual_seed(1)
    teacher = build_model(load_config("cpu", ["model=dm_fcn_tiny", "pretrained="]), 26)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    data = make_dataset(tmp_path / "data", n_train=8, n_test=2)
    stages = "[{name: s, source: dense, steps: 1, pool: 4}, {name: data, source: data, epochs: 1}]"
    base = ["model=dm_fcn_tiny", "image_size=64", "batch_size=4", f"stages={stages}"]
    losses = {}
    for name, extra in (("plain", []), ("distil", ["distill=1", f"teacher={path}"])):
        cfg = load_config("cpu", base + extra)
        train(data, cfg, run_dir=tmp_path / name)
        losses[name] = load_checkpoint(tmp_path / name / "fold0" / "last.pt")["history"][0]["train_loss"]
    assert losses["distil"] > losses["plain"] + 1e-4
    frozen = build_teacher(load_config("cpu", base + ["distill=1", f"teacher={path}"]), 26, torch.device("cpu"))
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ConfigError, match="teacher: .*nowhere.safetensors"):
        build_teacher(load_config("cpu", base + ["distill=1", f"teacher={tmp_path}/nowhere.safetensors"]), 26,
                      torch.device("cpu"))
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_config("cpu", base + ["distill=1"])
