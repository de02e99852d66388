"""infer/loader.py and infer/ensemble.py: a checkpoint, its ONNX export and its packaged
JSON + safetensors pair give the same probabilities through the one ensemble path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dirtymnist import layout
from dirtymnist.arrays import sigmoid
from dirtymnist.config import load_config
from dirtymnist.errors import ConfigError
from dirtymnist.infer.ensemble import EnsembleOptions, combine, ensemble_probs
from dirtymnist.infer.loader import Model, open_model
from dirtymnist.model.build import build_model
from dirtymnist.model.checkpoint import save_checkpoint

TINY = ["model=test_resnet", "image_size=32", "stages=[]", "head=lse"]


def _weights(cfg, seed: int) -> dict:
    torch.manual_seed(seed)
    return build_model(cfg, len(layout.LETTERS)).state_dict()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint of a tiny untrained net built here: `model` and `ema` weights differ, so a
    format that took the wrong ones would show."""
    cfg = load_config("cpu", TINY)
    path = tmp_path_factory.mktemp("loader") / "fold0" / "best.pt"
    path.parent.mkdir()
    save_checkpoint({"model": _weights(cfg, 0), "ema": _weights(cfg, 1), "config": cfg.to_dict(),
                     "letters": list(layout.LETTERS), "epoch": 1, "best": {"label_acc": 0.5}}, path)
    return path


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).integers(0, 256, (5, 256, 256), dtype=np.uint8)


def test_a_checkpoint_and_its_packaged_pair_give_the_same_probabilities(tiny_checkpoint, images, tmp_path):
    from dirtymnist.deliver.package import export_weights

    export_weights(tiny_checkpoint, tmp_path / "run0_fold0")
    pt, packaged = open_model(tiny_checkpoint), open_model(tmp_path / "run0_fold0.json")
    assert isinstance(pt, Model) and isinstance(packaged, Model)
    assert pt.letters == packaged.letters == list(layout.LETTERS) and pt.config == packaged.config
    # the .safetensors file names the same model as its .json
    assert open_model(tmp_path / "run0_fold0.safetensors").path == packaged.path
    views = [("id", lambda t: t)]
    np.testing.assert_array_equal(pt.logits(images, views=views), packaged.logits(images, views=views))
    a = ensemble_probs([[tiny_checkpoint]], images, tta="rot90")
    b = ensemble_probs([[tmp_path / "run0_fold0.json"]], images, tta="rot90")
    assert a.shape == (5, 26) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # both took the EMA weights: the plain ones give other numbers
    from dirtymnist.model.checkpoint import load_model

    net, cfg, letters = load_model(tiny_checkpoint, use_ema=False)
    plain = Model(net, cfg, letters, tiny_checkpoint, torch.device("cpu"))
    assert not np.allclose(pt.logits(images[:1]), plain.logits(images[:1]))


def test_an_onnx_export_gives_the_checkpoints_probabilities(tiny_checkpoint, images):
    pytest.importorskip("onnxruntime")
    from dirtymnist.deliver.export import export_checkpoint

    done = export_checkpoint(tiny_checkpoint, tiny_checkpoint.with_suffix(".onnx"))
    assert done.max_abs_diff < 1e-4
    onnx = open_model(done.onnx)
    assert onnx.letters == list(layout.LETTERS) and onnx.config == open_model(tiny_checkpoint).config
    a = ensemble_probs([[tiny_checkpoint]], images, tta="flip")
    b = ensemble_probs([[done.onnx]], images, tta="flip")
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_ensemble_of_models_is_the_ensemble_of_their_probabilities(tiny_checkpoint, images, tmp_path):
    """Runs of models and saved probability files go through the same weighted mean; a run is
    the mean of its members; weights may be per letter."""
    from dirtymnist.deliver.package import export_weights

    export_weights(tiny_checkpoint, tmp_path / "other")  # EMA weights: same as the checkpoint
    alone = ensemble_probs([[tiny_checkpoint]], images)
    z = open_model(tiny_checkpoint).logits(images)
    np.testing.assert_array_equal(alone, sigmoid(z).astype(np.float32))
    w = np.stack([np.linspace(0.1, 0.9, 26), np.linspace(0.9, 0.1, 26)])  # (R, 26)
    for average in ("prob", "logit"):
        two = ensemble_probs([[tiny_checkpoint], [tmp_path / "other.json", tiny_checkpoint]], images,
                             options=EnsembleOptions(average=average, weights=w))
        np.testing.assert_allclose(two, alone, atol=1e-6)  # every member is the same model
    np.testing.assert_array_equal(combine([alone, alone], [2, 1]), alone)
    with pytest.raises(ConfigError, match="must be 2 non-negative numbers"):
        ensemble_probs([[tiny_checkpoint], [tiny_checkpoint]], images, options=EnsembleOptions(weights=[1]))
    with pytest.raises(ConfigError, match="average='mean'"):
        ensemble_probs([[tiny_checkpoint]], images, options=EnsembleOptions(average="mean"))
    with pytest.raises(ConfigError, match="--tta 'd8'"):
        ensemble_probs([[tiny_checkpoint]], images, tta="d8")


def test_broken_model_files_are_one_line_errors(tiny_checkpoint, images, tmp_path):
    from dirtymnist.deliver.package import export_weights

    with pytest.raises(ConfigError, match="checkpoint not found"):
        open_model(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match=r"nope\.onnx: model not found"):
        open_model(tmp_path / "nope.onnx")
    (tmp_path / "lone.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"lone\.onnx\.json: missing"):
        open_model(tmp_path / "lone.onnx")
    export_weights(tiny_checkpoint, tmp_path / "m")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["model"] = "resnet18"  # other weights than the file holds
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"m\.safetensors: weights do not match its config"):
        open_model(tmp_path / "m.json")
    (tmp_path / "m.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match=r"m\.safetensors: not a readable safetensors file"):
        open_model(tmp_path / "m.json")
    # a member whose class list differs is named
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["letters"] = list(reversed(state["letters"]))
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ConfigError, match=r"other\.pt: class list"):
        ensemble_probs([[tiny_checkpoint], [other]], images)
