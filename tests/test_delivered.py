"""bench/delivered.py: thresholds fitted on validation scenes of the training families only, then
applied to the held-out test scenes; every figure it prints comes from the model's predictions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def delivered(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import delivered

    return delivered


def _tiny_checkpoint(path: Path) -> Path:
    from dirtymnist import layout
    from dirtymnist.config import load_config
    from dirtymnist.model.build import build_model
    from dirtymnist.model.checkpoint import save_checkpoint

    cfg = load_config("cpu", ["model=dm_fcn_tiny", "image_size=64", "pretrained="])
    model = build_model(cfg, len(layout.LETTERS))
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "letters": list(layout.LETTERS)}, path)
    return path


def test_validation_scenes_come_from_the_training_families_with_their_own_seed(delivered, monkeypatch):
    import learn

    from dirtymnist.glyphs import split_families

    calls = []
    monkeypatch.setattr(learn, "_fill", lambda kind, knobs, seed, n, args: calls.append((kind, knobs, seed, n)) or [
        (np.zeros((256, 256), np.uint8), np.zeros(26, np.float32))] * n)
    images, labels = delivered.validation_scenes(0, 3, "")
    (kind, knobs, seed, n), = calls
    train, held = split_families(0.2, seed=0)
    assert kind == "synth" and n == 3 and images.shape == (3, 256, 256) and labels.shape == (3, 26)
    assert set(knobs["families"]) == set(train) and not set(knobs["families"]) & set(held)
    assert seed == 2000  # not the test set's seed + 1000, nor a training pool's seed


def test_prints_one_row_per_tta_and_set_with_accuracies_in_range(delivered, tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "last.pt")
    assert delivered.main([str(ckpt), "--n-val", "4", "--n-test", "4", "--tta", "none,rot90", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {ckpt}")]
    assert [r.split(" | ")[1:3] for r in rows] == [["none", "held-out families"], ["rot90", "held-out families"]]
    for row in rows:
        accs = [float(a) for a in re.findall(r"\d\.\d{4}", row)]
        assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)


def test_weights_pick_the_ema_or_the_trained_weights_of_a_checkpoint(delivered, tmp_path):
    import torch
    from lookalike import models

    from dirtymnist.model.checkpoint import load_checkpoint, save_checkpoint

    plain = _tiny_checkpoint(tmp_path / "plain.pt")
    state = load_checkpoint(plain)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    both = tmp_path / "ema.pt"
    save_checkpoint({**state, "ema": ema}, both)
    name = next(k for k, v in ema.items() if v.is_floating_point())
    got = {label: model.state_dict()[name] for label, model, _ in models([str(both), str(plain)], ["ema", "raw"])}
    assert torch.equal(got[str(both)], ema[name])
    assert torch.equal(got[f"{both} (raw)"], state["model"][name])
    assert torch.equal(got[str(plain)], got[f"{plain} (raw)"])  # no EMA kept: both are the trained weights
    with pytest.raises(SystemExit, match="not ema or raw"):
        list(models([str(plain)], ["swa"]))
