"""amp / channels_last `auto`, and the 2-channel `ink` input."""

from __future__ import annotations

import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.model import precision
from dirtymnist.model.build import build_model
from dirtymnist.model.precision import autocast_context
from dirtymnist.model.transforms import to_input

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("amx", [True, False])
def test_auto_is_bf16_and_channels_last_on_cuda_and_on_amx_cpus_only(monkeypatch, amx):
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: amx)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cfg = load_config("cpu")
    assert (cfg.amp, cfg.channels_last) == ("auto", "auto")
    assert precision.resolve_amp(cfg, CUDA) == "bf16" and precision.use_channels_last(cfg, CUDA)
    assert precision.resolve_amp(cfg, CPU) == ("bf16" if amx else "off")
    assert precision.use_channels_last(cfg, CPU) is amx
    # inference on a CPU stays fp32 / NCHW: predictions agree with ONNX and across machines
    assert precision.resolve_amp(cfg, CPU, training=False) == "off"
    assert not precision.use_channels_last(cfg, CPU, training=False)
    assert precision.resolve_amp(cfg, CUDA, training=False) == "bf16"
    with autocast_context(cfg, CPU):
        assert torch.is_autocast_enabled("cpu") is amx
        if amx:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16


@pytest.mark.parametrize("card, capability, amp", [
    ("P100", (6, 0), "fp16"), ("V100", (7, 0), "fp16"), ("T4", (7, 5), "fp16"),
    ("A100", (8, 0), "bf16"), ("RTX 3090", (8, 6), "bf16"), ("L4", (8, 9), "bf16"), ("H200", (9, 0), "bf16"),
])
def test_auto_on_cuda_is_bf16_only_where_the_card_computes_it_natively(monkeypatch, card, capability, amp):
    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: seen.append(device) or capability)
    cfg = load_config("cpu")
    assert precision.resolve_amp(cfg, CUDA) == amp, card
    assert precision.resolve_amp(cfg, CUDA, training=False) == amp
    assert precision.use_channels_last(cfg, CUDA)
    assert precision.describe(cfg, CUDA) == f"{amp} autocast, channels_last"
    assert seen and all(d == CUDA for d in seen)  # asked about the run's own card
    assert precision.resolve_amp(load_config("cpu", ["amp=bf16"]), CUDA) == "bf16"  # explicit wins


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_fp16_training_gets_a_grad_scaler(monkeypatch):
    from dirtymnist.train.build import build_grad_scaler

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert build_grad_scaler(load_config("cpu"), CUDA) is not None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert build_grad_scaler(load_config("cpu"), CUDA) is None
    assert build_grad_scaler(load_config("cpu", ["amp=off"]), CPU) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.raises(ConfigError, match="sam_rho > 0 needs bf16 or fp32"):  # V100 + SAM under amp: auto
        build_grad_scaler(load_config("cpu", ["sam_rho=0.05"]), CUDA)


def test_explicit_settings_win_over_auto(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: True)
    cfg = load_config("winner")  # the recipe as the team ran it: fp32
    assert precision.resolve_amp(cfg, CPU) == "off" and not precision.use_channels_last(cfg, CPU)
    cfg = load_config("cpu", ["amp=off", "channels_last=on"])
    assert precision.resolve_amp(cfg, CPU) == "off" and precision.use_channels_last(cfg, CPU)
    assert "fp32, channels_last" == precision.describe(cfg, CPU)


def test_ink_input_is_grey_plus_the_share_of_saturated_pixels():
    cfg = load_config("cpu", ["denoise=ink", "in_chans=2", "image_size=128", "channels_last=off"])
    img = torch.full((1, 256, 256), 100, dtype=torch.uint8)
    img[0, :2, :2] = 255  # one 2x2 cell fully saturated
    img[0, 2:4, 0] = 255  # half of the next cell down
    x = to_input(img, cfg, CPU, None, "none")
    assert x.shape == (1, 2, 128, 128)
    ink = x[0, 1]
    assert ink[0, 0] == 1.0 and ink[1, 0] == 0.5 and ink.sum() == 1.5
    assert torch.allclose(x[0, 0, 5, 5], torch.tensor(100 / 255))
    model = build_model(cfg, 26)
    assert model(x).shape == (1, 26)


def test_ink_needs_two_input_channels():
    assert load_config("cpu", ["denoise=ink"]).in_chans == 2  # derived when not set
    with pytest.raises(ConfigError, match="denoise=ink gives 2 channels"):
        load_config("cpu", ["denoise=ink", "in_chans=1"])
    with pytest.raises(ConfigError, match="2 only with denoise=ink"):
        load_config("cpu", ["in_chans=2"])


def test_one_channel_weights_load_into_the_ink_input(tmp_path):
    from safetensors.torch import save_file

    grey = build_model(load_config("cpu"), 26)
    save_file({k: v.contiguous() for k, v in grey.state_dict().items()}, str(tmp_path / "w.safetensors"))
    ink = build_model(load_config("cpu", ["denoise=ink", "in_chans=2", f"pretrained={tmp_path / 'w.safetensors'}"]), 26)
    stem = "trunk.stem.0.0.weight"
    w_grey, w_ink = grey.state_dict()[stem], ink.state_dict()[stem]
    assert w_ink.shape[1] == 2 and torch.equal(w_ink[:, :1], w_grey) and not w_ink[:, 1:].any()
    assert torch.equal(ink.state_dict()["head.conv.weight"], grey.state_dict()["head.conv.weight"])


def test_a_key_added_since_a_run_started_does_not_block_its_resume():
    from dirtymnist.config import diff_configs

    new = load_config("cpu").to_dict()
    old = {k: v for k, v in new.items() if k != "csra_lambda"}  # a checkpoint from before the key
    assert diff_configs(old, new) == []
    assert diff_configs({**old, "csra_lambda": 0.9}, new) == ["csra_lambda"]
