"""Pretrained weights through timm's own loader, all offline: a timm-format file (stem adapted,
classifier dropped), a Hugging Face cache laid out by the test, the one-line error, the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.model.build import build_model
from dirtymnist.model.weights import settle

MODEL = "resnet18"  # small, and timm has ImageNet weights for it (timm/resnet18.a1_in1k)
HUB_ID = "timm/resnet18.a1_in1k"


def _imagenet_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm-format state dict of MODEL with recognisable values: 3-channel stem, 1000 classes."""
    import timm

    torch.manual_seed(seed)
    net = timm.create_model(MODEL, num_classes=1000)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def timm_state():
    return _imagenet_like_state()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("head", ["timm", "max"])
def test_a_timm_format_file_loads_through_timm(tmp_path, timm_state, suffix, in_chans, head):
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(timm_state, str(path))
    else:
        torch.save(timm_state, path)
    cfg = load_config("cpu", [f"model={MODEL}", f"pretrained={path}", f"in_chans={in_chans}", f"head={head}"])
    model = build_model(cfg, 26)
    got = {k.removeprefix("trunk."): v for k, v in model.state_dict().items() if k.startswith("trunk.")}
    # every backbone tensor equal to the file's, the stem adapted to the input channels
    stem = timm_state["conv1.weight"]  # (64, 3, 7, 7)
    want_stem = stem if in_chans == 3 else stem.sum(dim=1, keepdim=True)  # timm's 3 -> 1 rule
    assert torch.allclose(got["conv1.weight"], want_stem)
    same = [k for k in timm_state if not k.startswith(("conv1.", "fc."))]
    assert len(same) > 50 and all(torch.equal(got[k], timm_state[k]) for k in same)
    # the 1,000-way classifier is dropped: a fresh 26-way one (head=timm) or none (class maps)
    if head == "timm":
        assert got["fc.weight"].shape == (26, 512)
    else:
        assert not any(k.startswith("fc.") for k in got)
        assert model.head.conv.weight.shape[:2] == (26, 512)
    assert model.weights_record.startswith(f"file {path} (sha256 ")
    assert model(torch.rand(1, in_chans, 64, 64)).shape == (1, 26)


def test_a_file_that_does_not_fit_the_model_is_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, str(path))
    with pytest.raises(ConfigError, match=rf"{path}: weights do not fit model {MODEL}") as e:
        build_model(load_config("cpu", [f"model={MODEL}", f"pretrained={path}", "head=timm"]), 26)
    assert "\n" not in str(e.value)


def _lay_out_hf_cache(cache, state, revision="0123456789abcdef0123456789abcdef01234567"):
    """The folder layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/FILE}."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    save_file(state, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


_BUILD = """
import json, sys, torch
from dirtymnist.config import load_config
from dirtymnist.model.build import build_model
from dirtymnist.model.weights import settle
cfg = settle(load_config("cpu", ["model=resnet18", "pretrained=imagenet", "in_chans=1", "head=max",
                                 "normalize=auto"]))
model = build_model(cfg, 26)
print(json.dumps({"normalize": cfg.normalize, "record": cfg.pretrained_record,
                  "model_record": model.weights_record,
                  "layer4": model.state_dict()["trunk.layer4.1.conv2.weight"].flatten()[:5].tolist()}))
"""


def _offline_env(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    return {**env, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_imagenet_weights_load_from_the_hf_cache_offline(tmp_path, timm_state):
    cache = tmp_path / "hf"
    _lay_out_hf_cache(cache, timm_state)
    proc = subprocess.run([sys.executable, "-c", _BUILD], env=_offline_env(cache), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["layer4"] == pytest.approx(timm_state["layer4.1.conv2.weight"].flatten()[:5].tolist())
    assert out["record"].startswith(f"hub {HUB_ID}@0123456789abcdef") and "model.safetensors, sha256" in out["record"]
    assert out["model_record"] == out["record"]
    assert out["normalize"] == "imagenet"  # follows the weights' data config (resnet18: ImageNet mean/std)


def test_an_empty_cache_offline_is_one_line_naming_hub_id_cache_and_ways_out(tmp_path):
    cache = tmp_path / "empty"
    cache.mkdir()
    proc = subprocess.run([sys.executable, "-c", _BUILD], env=_offline_env(cache), capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert HUB_ID in last and str(cache) in last and "HF_HUB_OFFLINE" in last
    assert f"hf download {HUB_ID}" in last and "--set pretrained=" in last


def test_the_cli_says_it_in_one_line_and_records_what_was_loaded(tmp_path, make_dataset, timm_state):
    data = make_dataset(tmp_path / "data", n_train=24, n_test=2)
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "dirtymnist", "train", str(data), "--preset", "cpu", "--run-dir", str(run)]
    for item in ["model=resnet18", "pretrained=imagenet", "normalize=auto", "head=max", "image_size=32", "batch_size=8",
                 "epochs=1", "stages=[]"]:
        argv += ["--set", item]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(argv, env=_offline_env(empty), capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and HUB_ID in proc.stderr
    assert not (run / "config.yaml").exists()  # refused before anything was written
    cache = tmp_path / "hf"
    _lay_out_hf_cache(cache, timm_state)
    proc = subprocess.run(argv, env=_offline_env(cache), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["pretrained_record"].startswith(f"hub {HUB_ID}@0123456789abcdef") and cfg["normalize"] == "imagenet"
    assert json.loads((run / "run.json").read_text())["weights"] == cfg["pretrained_record"]


def test_random_init_and_our_own_nets():
    cfg = settle(load_config("scratch"))
    assert cfg.pretrained_record == "random init" and cfg.normalize == "unit"
    assert settle(load_config("cpu")).pretrained_record.startswith("ready weights dm_fcn_deep.safetensors")
    assert settle(load_config("default")).pretrained_record.startswith("ready weights dm_fcn_deep.256px13.safetensors")
    with pytest.raises(ConfigError, match="model='dm_fcn' has no ImageNet weights in timm"):
        build_model(load_config("scratch", ["pretrained=imagenet"]), 26)
    with pytest.raises(ConfigError, match="nowhere.safetensors: pretrained weights file not found"):
        build_model(load_config("scratch", ["pretrained=/nowhere.safetensors"]), 26)


def test_the_seed_head_keeps_the_imagenet_classifier_then_silu_then_linear(tmp_path, timm_state):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(timm_state, str(path))
    cfg = load_config("seed", [f"model={MODEL}", f"pretrained={path}"])
    model = build_model(cfg, 26).eval()
    assert torch.equal(model.trunk.fc.weight, timm_state["fc.weight"])  # the 1,000-way classifier kept
    x = torch.rand(2, 3, 64, 64)
    want = model.top[1](torch.nn.functional.silu(model.trunk(x)))
    assert torch.allclose(model(x), want) and model(x).shape == (2, 26)


def test_feature_stride_cuts_the_trunk_and_grad_checkpointing_gives_the_same_gradients():
    cfg = load_config("gpu", ["model=efficientnet_b0", "pretrained=", "image_size=64"])  # a miniature
    torch.manual_seed(0)
    model = build_model(cfg, 26)
    x = torch.rand(2, 1, 64, 64)
    logits, maps = model(x, return_maps=True)
    assert maps.shape == (2, 26, 4, 4)  # stride 16
    assert sum(p.numel() for p in model.parameters()) < 1.0e6  # the stages after stride 16 are gone
    torch.manual_seed(0)
    ckpt = build_model(load_config("gpu", ["model=efficientnet_b0", "pretrained=", "grad_checkpointing=on"]), 26)
    ckpt.load_state_dict(model.state_dict())
    model.train(), ckpt.train()
    model(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, a), b in zip(model.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    with pytest.raises(ConfigError, match="feature_stride=16: model dm_fcn"):
        build_model(load_config("cpu", ["feature_stride=16", "head=max"]), 26)


def test_local_dir_model_names_pass_through_to_timm(tmp_path, timm_state):
    """`model=local-dir:PATH` + `pretrained=imagenet`: timm reads the folder's config.json and weights."""
    import timm
    from timm.models import save_for_hf

    src = timm.create_model(MODEL, num_classes=1000)
    src.load_state_dict(timm_state)
    save_for_hf(src, str(tmp_path / "repo"), model_config={"architecture": MODEL, "num_classes": 1000})
    cfg = settle(load_config("cpu", [f"model=local-dir:{tmp_path / 'repo'}", "pretrained=imagenet",
                                     "head=max", "in_chans=3", "normalize=auto"]))
    assert cfg.pretrained_record == f"timm weights of local-dir:{tmp_path / 'repo'}"
    assert cfg.normalize == "imagenet"  # the folder's config.json: resnet18's ImageNet mean / std
    model = build_model(cfg, 26)
    assert torch.equal(model.state_dict()["trunk.layer4.1.conv2.weight"], timm_state["layer4.1.conv2.weight"])


def test_ready_weights_load_the_packaged_file_and_say_so():
    from safetensors.torch import load_file

    from dirtymnist.model.weights import READY_DIR, ready_models

    assert "dm_fcn_deep" in ready_models()
    for model in ready_models():
        cfg = load_config("cpu", [f"model={model}", "pretrained=ready"])
        net = build_model(cfg, 26)
        state = load_file(str(READY_DIR / f"{model}.safetensors"))
        key = next(k for k in state if k.startswith("trunk.") and state[k].ndim == 4)
        assert torch.equal(net.state_dict()[key], state[key]), model
        assert net.weights_record.startswith(f"ready weights {model}.safetensors (sha256 ")
        assert settle(cfg).pretrained_record == net.weights_record


def test_ready_without_packaged_weights_is_random_init_with_a_warning(caplog, monkeypatch):
    from dirtymnist.model import weights

    monkeypatch.setattr(weights, "_WARNED", set())  # earlier tests may have warned already
    cfg = load_config("cpu", ["model=dm_fcn_tiny", "pretrained=ready"])
    with caplog.at_level("WARNING"):
        net = build_model(cfg, 26)
        settle(cfg)
    assert "no ready weights for model dm_fcn_tiny" in caplog.text and "dm_fcn" in caplog.text
    assert caplog.text.count("no ready weights for model dm_fcn_tiny") == 1  # once, not per resolve
    assert net.weights_record == "random init (no ready weights for dm_fcn_tiny)"


def test_tagged_ready_weights_load_by_tag_and_a_missing_tag_is_one_line(monkeypatch, tmp_path):
    from dirtymnist.model import weights
    from dirtymnist.train.pretrain import save_weights

    monkeypatch.setattr(weights, "READY_DIR", tmp_path)
    cfg = load_config("cpu", ["model=dm_fcn_tiny", "pretrained="])
    trained = build_model(cfg, 26).state_dict()
    trained = {k: v + 1 if v.is_floating_point() else v for k, v in trained.items()}  # not an init
    save_weights(trained, tmp_path / "dm_fcn_tiny.192px.safetensors")
    assert weights.ready_tags("dm_fcn_tiny") == ["192px"]
    assert weights.ready_models() == []  # a tagged file is not the model's plain `ready` weights

    tagged = load_config("cpu", ["model=dm_fcn_tiny", "pretrained=ready.192px"])
    net = build_model(tagged, 26)
    key = next(k for k in trained if k.startswith("trunk.") and trained[k].ndim == 4)
    assert torch.equal(net.state_dict()[key], trained[key])
    assert net.weights_record.startswith("ready weights dm_fcn_tiny.192px.safetensors (sha256 ")

    with pytest.raises(ConfigError) as err:
        build_model(load_config("cpu", ["model=dm_fcn_tiny", "pretrained=ready.256px"]), 26)
    assert str(err.value) == ("pretrained=ready.256px: the package has no such weights for model "
                              "dm_fcn_tiny (tagged ready weights for it: ready.192px; plain `ready` for: none)")


def test_train_refused_for_weights_that_do_not_fit_records_nothing(tmp_path, capsys):
    """A refused start writes no config.yaml, so the corrected command is not refused in turn."""
    from conftest import train_argv, write_dataset
    from safetensors.torch import save_file

    from dirtymnist.cli import main as cli_main

    data = write_dataset(tmp_path / "data", n_train=16, n_test=4)
    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, str(path))
    run = tmp_path / "run"
    tiny = [f"model={MODEL}", "head=timm", "image_size=32", "epochs=1", "batch_size=8", "stages=[]"]
    assert cli_main(train_argv(data, run, [*tiny, f"pretrained={path}"])) == 2
    assert "weights do not fit model" in capsys.readouterr().err
    assert not (run / "config.yaml").exists() and not (run / "run.json").exists()
    assert cli_main(train_argv(data, run, [*tiny, "pretrained="])) == 0
    assert (run / "config.yaml").is_file()


def test_an_original_layout_file_that_timm_converts_is_not_refused(tmp_path):
    # An OpenCLIP ConvNeXt tower names its tensors `visual.trunk.*`; timm's convnext filter renames
    # them on load, so the name check must see them as timm will, and the weights must arrive.
    import timm

    from dirtymnist.model.weights import check_timm_file

    state = timm.create_model("convnext_atto").state_dict()
    path = tmp_path / "open_clip_convnext_atto.pth"
    torch.save({f"visual.trunk.{k}": v for k, v in state.items() if not k.startswith("head.fc.")}, path)
    check_timm_file(path, "convnext_atto")  # no ConfigError
    cfg = load_config("cpu", ["model=convnext_atto", f"pretrained={path}", "in_chans=3", "head=timm"])
    got = {k.removeprefix("trunk."): v for k, v in build_model(cfg, 26).state_dict().items()}
    key = "stages.2.blocks.1.conv_dw.weight"
    assert torch.equal(got[key], state[key])
    with pytest.raises(ConfigError, match="weights do not fit model resnet18"):
        check_timm_file(path, "resnet18")  # still one line for a file of another model
