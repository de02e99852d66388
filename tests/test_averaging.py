"""Weight averaging: SWA during training and `average` over kept epochs equal the mean of their
inputs, batch norm is re-estimated, and the results are ordinary checkpoints predict/export/package take."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import train_argv, write_dataset

from dirtymnist.cli import main as cli_main
from dirtymnist.errors import ConfigError
from dirtymnist.model.checkpoint import load_checkpoint, load_model
from dirtymnist.train.averaging import average_run, mean_state_dict

# test_resnet has batch norm; 3 epochs kept, the last 2 averaged by SWA
TINY = ["model=test_resnet", "stages=[]", "image_size=32", "epochs=3", "batch_size=8", "folds_k=2",
        "head=lse", "lr=0.01", "keep_last=3", "swa_epochs=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("avg")
    data, run = write_dataset(base / "data", n_train=24, n_test=4, seed=5), base / "run"
    assert cli_main(train_argv(data, run, TINY)) == 0
    return data, run


def _params(model_state: dict, model) -> dict:
    names = {n for n, _ in model.named_parameters()}
    return {k: v for k, v in model_state.items() if k in names}


def _label_accuracy(model, data, fold) -> float:
    """Label accuracy of `model` on the fold's validation images (its oof_index.npy rows)."""
    import numpy as np

    from dirtymnist.arrays import positions, sigmoid
    from dirtymnist.data.cache import open_split
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.model.batches import in_order, make_loader, predict_logits

    split = open_split(data / ".dirtymnist_cache", "train")
    rows = positions(split.index, np.load(fold / "oof_index.npy"))
    batches = in_order(split.images, split.labels, rows)
    _, cfg, _ = load_model(fold / "swa.pt")
    logits = predict_logits(model, make_loader(batches, 0, 0, False), cfg, torch.device("cpu"))
    return label_accuracy(sigmoid(logits) > 0.5, split.labels[rows])


def test_mean_state_dict_is_the_mean_and_keeps_integer_counters():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = mean_state_dict([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 5


def test_swa_checkpoint_is_the_mean_of_the_last_epochs_with_fresh_bn(run):
    data, run = run
    fold = run / "fold0"
    epochs = [load_checkpoint(fold / f"epoch{e:03d}.pt")["model"] for e in (2, 3)]
    swa = load_checkpoint(fold / "swa.pt")
    model, _, _ = load_model(fold / "swa.pt")
    expected = mean_state_dict(epochs)
    for key, value in _params(swa["model"], model).items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    # batch-norm statistics re-estimated on training images, not averaged
    bn = [k for k in swa["model"] if k.endswith("running_var")]
    assert bn and any(not torch.allclose(swa["model"][k], expected[k]) for k in bn)
    assert swa["averaged"] == {"kind": "swa", "from": ["epoch 2", "epoch 3"]}
    assert swa["best"]["label_acc"] == _label_accuracy(model, data, fold)  # of these weights
    record = json.loads((run / "run.json").read_text())
    assert record["checkpoints"]["fold0/swa.pt"]["kind"] == "swa"


def test_average_last_equals_the_mean_of_the_kept_epochs(run):
    data, run = run
    results = average_run(run, last=3, bn=False)
    assert [r.fold for r in results] == [0]
    fold = run / "fold0"
    inputs = [load_checkpoint(fold / f"epoch{e:03d}.pt")["model"] for e in (1, 2, 3)]
    got = load_checkpoint(fold / "averaged.pt")["model"]
    for key, value in mean_state_dict(inputs).items():
        assert torch.equal(got[key], value), key
    # with batch norm recomputed: the same weights, other statistics
    average_run(run, last=3)
    again = load_checkpoint(fold / "averaged.pt")
    model, _, _ = load_model(fold / "averaged.pt")
    for key, value in _params(again["model"], model).items():
        assert torch.equal(value, got[key])
    assert again["averaged"]["from"] == ["epoch001.pt", "epoch002.pt", "epoch003.pt"]


def test_average_best_picks_the_best_validation_epochs(run):
    data, run = run
    fold = run / "fold0"
    rows = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    top = sorted(sorted(rows, key=lambda r: r["label_acc"], reverse=True)[:2], key=lambda r: r["epoch"])
    result = average_run(run, best=2)[0]
    assert result.sources == [f"epoch{r['epoch']:03d}.pt" for r in top]
    with pytest.raises(ConfigError, match="3 epoch checkpoints kept, 5 needed"):
        average_run(run, last=5)
    with pytest.raises(ConfigError, match="one of --last N or --best K"):
        average_run(run)


def test_predict_export_package_take_the_averaged_checkpoints(run, tmp_path, capsys):
    data, run = run
    assert cli_main(["average", str(run), "--last", "2"]) == 0
    assert "averaged" in capsys.readouterr().out
    for name in ("averaged", "swa"):
        out = tmp_path / f"{name}.csv"
        assert cli_main(["predict", str(run), "--data", str(data), "--checkpoint", name, "--out", str(out)]) == 0
        assert out.is_file()
    assert cli_main(["export", str(run), "--checkpoint", "swa", "--out", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "fold0_swa.onnx").is_file()
    assert cli_main(["package", str(run), "--checkpoint", "averaged", "--out", str(tmp_path / "sub"),
                     "--dry-run"]) == 0
    assert "input/models/run0_fold0_averaged.safetensors" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse refuses the choice
        cli_main(["predict", str(run), "--data", str(data), "--checkpoint", "nope", "--out", str(tmp_path / "x.csv")])


def test_report_lists_the_averaged_checkpoints(run, tmp_path):
    from dirtymnist.look.report import build_report

    data, run = run
    average_run(run, last=2)
    rep = build_report(run, out=tmp_path / "r" / "report.html", gallery=2)
    names = {r["checkpoint"]: r for r in rep.averaged}
    assert set(names) == {"fold0/swa.pt", "fold0/averaged.pt"}
    assert names["fold0/averaged.pt"]["from"] == "epoch002.pt, epoch003.pt"
    assert "Averaged checkpoints" in rep.html.read_text()
