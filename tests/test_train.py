"""Training engine: config errors, presets, a tiny fold end to end, bit-exact kill/resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import train_argv

from dirtymnist.cli import main as cli_main
from dirtymnist.config import list_presets, load_config
from dirtymnist.errors import ConfigError
from dirtymnist.model.build import build_model
from dirtymnist.model.checkpoint import load_checkpoint, load_model

# Small and fast, but exercising every random part: per-sample augmentation, mixup, dropout,
# EMA, a per-batch cosine schedule with warmup, gradient clipping.
TINY = [
    "model=test_resnet", "image_size=64", "batch_size=8", "epochs=2", "head=lse",
    "augment=winner", "mix=mixup", "drop_rate=0.2", "ema=0.9", "grad_clip=1.0", "warmup_epochs=0.5", "stages=[]",
]


def _train_cmd(data, run_dir, extra=()):
    args = [sys.executable, "-m", "dirtymnist", "train", str(data), "--preset", "cpu", "--run-dir", str(run_dir)]
    for item in [*TINY, "checkpoint_minutes=0.000001", *extra]:
        args += ["--set", item]
    return args


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRTYMNIST_KILL")}
    env.update({"OMP_NUM_THREADS": "1", **extra})
    return env


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        load_config("cpu", ["epoch=3"])


@pytest.mark.parametrize("bad", ["optimizer=lbfgs", "lr=-1", "in_chans=2", "epochs=two", "ema=1.5"])
def test_invalid_values_are_errors(bad):
    with pytest.raises(ConfigError):
        load_config("cpu", [bad])


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="choose from"):
        load_config("nope")


def test_overrides_apply_and_are_typed():
    cfg = load_config("winner", ["epochs=2", "subset=400", "lr=3e-4", "compile=true", "channels_last=on", "amp=off"])
    assert (cfg.epochs, cfg.subset, cfg.lr, cfg.compile) == (2, 400, 3e-4, True)
    assert (cfg.channels_last, cfg.amp) == ("on", "off")  # YAML's bare on/off are booleans
    assert cfg.loss == "softmargin" and cfg.preset == "winner"


# The competition presets stay faithful (B7 / B8 / B3 from ImageNet weights); tests shrink the
# backbone explicitly and start from random weights (no network here).
SHRINK = {"seed": ["model=efficientnet_b0", "pretrained="], "winner": ["model=efficientnet_b0", "pretrained="],
          "gpu": ["model=efficientnet_b0", "pretrained="]}


@pytest.mark.parametrize("preset", ["cpu", "default", "finetune", "winner", "seed", "gpu"])
def test_every_preset_builds_and_runs_one_batch(preset):
    cfg = load_config(preset, SHRINK.get(preset, []))
    from dirtymnist.model.transforms import to_input

    model = build_model(cfg, 26)
    x = to_input(torch.randint(0, 256, (2, 256, 256), dtype=torch.uint8), cfg, torch.device("cpu"),
                 torch.Generator().manual_seed(0), cfg.augment)
    assert x.shape == (2, cfg.in_chans, cfg.image_size, cfg.image_size)
    assert model(x).shape == (2, 26)
    assert set(list_presets()) >= {"cpu", "default", "finetune", "winner", "seed", "gpu"}


def test_competition_presets_are_the_teams_models_from_imagenet_weights():
    seed, winner, gpu = load_config("seed"), load_config("winner"), load_config("gpu")
    assert (seed.model, seed.pretrained, seed.head, seed.in_chans, seed.image_size) == (
        "tf_efficientnet_b7.aa_in1k", "imagenet", "imagenet_silu", 3, 331)
    assert (winner.model, winner.pretrained, winner.in_chans, winner.image_size, winner.drop_rate) == (
        "tf_efficientnet_b8.ap_in1k", "imagenet", 1, 256, 0.5)
    assert (gpu.pretrained, gpu.feature_stride, gpu.head) == ("imagenet", 16, "max")
    assert [s["source"] for s in gpu.stages] == ["dense", "dense", "data"]


def test_finetune_trains_the_ready_weights_on_the_folder_only(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=20, n_test=2)
    run = tmp_path / "run"
    assert cli_main(["train", str(data), "--preset", "finetune", "--run-dir", str(run), "--set", "epochs=1"]) == 0
    rows = [json.loads(line) for line in (run / "fold0" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["source"]) for r in rows] == [(0, "data")]  # one stage, the data: no generated scenes
    ckpt = load_checkpoint(run / "fold0" / "last.pt")
    assert ckpt["config"]["pretrained_record"].startswith("ready weights dm_fcn_deep.256px13.safetensors")
    assert ckpt["config"]["image_size"] == 256


def test_tiny_fold_end_to_end(tmp_path, make_dataset, capsys):
    data = make_dataset(tmp_path / "data", n_train=40, n_test=4)
    run = tmp_path / "run"
    args = train_argv(data, run, TINY, "--fold", "1")
    assert cli_main(args) == 0
    fold = run / "fold1"
    rows = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "label_acc", "exact_match", "per_letter_acc", "lr", "seconds", "samples_per_s"):
        assert key in rows[0]
    ckpt = load_checkpoint(fold / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"] == "test_resnet" and len(ckpt["letters"]) == 26
    import numpy as np

    from dirtymnist.arrays import positions
    from dirtymnist.metrics import label_accuracy

    oof, oof_index = np.load(fold / "oof.npy"), np.load(fold / "oof_index.npy")
    assert oof.shape == (8, 26) and oof_index.shape == (8,)
    # the best epoch's metrics are those of its out-of-fold probabilities against the data's labels
    answers = np.loadtxt(data / "dirty_mnist_2nd_answer.csv", delimiter=",", skiprows=1, dtype=np.int64)
    labels = answers[positions(answers[:, 0], oof_index), 1:]
    best = rows[ckpt["best"]["epoch"] - 1]
    assert best["label_acc"] == label_accuracy(oof > 0.5, labels) == ckpt["best"]["label_acc"]
    assert best["per_letter_acc"] == [float(v) for v in ((oof > 0.5) == labels).mean(0)]
    model, cfg, letters = load_model(fold / "best.pt")
    assert cfg.head == "lse" and letters[0] == "a"
    # the same command again: nothing left to do; another config: refused, naming the keys
    assert cli_main(args) == 0
    assert cli_main([*args, "--set", "lr=0.1"]) == 2
    assert "differs in lr" in capsys.readouterr().err


def test_killed_runs_resume_bit_exactly(tmp_path, make_dataset):
    """SIGKILL a real training process at several points, including in the middle of
    checkpoint writes, resume each time, and compare with an uninterrupted run (SWA on too)."""
    data = make_dataset(tmp_path / "data", n_train=48, n_test=2)
    ref, run = tmp_path / "ref", tmp_path / "run"
    swa = ["swa_epochs=2"]
    subprocess.run(_train_cmd(data, ref, swa), env=_env(), check=True, capture_output=True)

    # kill points: the Nth atomic write of each process (mid-epoch, end-of-epoch best/oof/last)
    kills = [3, 2, 5, 1, 4]
    for n in kills:
        proc = subprocess.run(_train_cmd(data, run, swa), env=_env(DIRTYMNIST_KILL_AT_WRITE=str(n)), capture_output=True)
        assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    done = subprocess.run(_train_cmd(data, run, swa), env=_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    a, b = load_checkpoint(ref / "fold0" / "last.pt"), load_checkpoint(run / "fold0" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for part in ("model", "ema", "swa"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    swa_a, swa_b = load_checkpoint(ref / "fold0" / "swa.pt"), load_checkpoint(run / "fold0" / "swa.pt")
    for key in swa_a["model"]:  # the averaged weights and their re-estimated batch-norm statistics
        assert torch.equal(swa_a["model"][key], swa_b["model"][key]), f"swa.pt {key} differs after resume"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    assert not list((run / "fold0").glob(".*.tmp"))


def test_non_finite_loss_stops_with_a_message(tmp_path, make_dataset, capsys):
    data = make_dataset(tmp_path / "data", n_train=24, n_test=2)
    args = ["train", str(data), "--preset", "cpu", "--run-dir", str(tmp_path / "run")]
    for item in [*TINY, "lr=1e30", "grad_clip=0", "epochs=3", "optimizer=sgd"]:
        args += ["--set", item]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "Traceback" not in err


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_processes_gloo(tmp_path, make_dataset):
    data = make_dataset(tmp_path / "data", n_train=40, n_test=2)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run(_train_cmd(data, single), env=_env(), check=True, capture_output=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "dirtymnist", *_train_cmd(data, ddp)[3:]]
    proc = subprocess.run(cmd, env=_env(), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    rows_single = [json.loads(x) for x in (single / "fold0" / "metrics.jsonl").read_text().splitlines()]
    rows_ddp = [json.loads(x) for x in (ddp / "fold0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows_ddp] == [r["samples"] for r in rows_single]
    model, cfg, _ = load_model(ddp / "fold0" / "best.pt")
    assert cfg.model == "test_resnet"
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 26)


def test_step_hook_stops_and_the_run_records_its_data(tmp_path, make_dataset):
    from dirtymnist.train.loop import train

    data = make_dataset(tmp_path / "data", n_train=48, n_test=2)
    run = tmp_path / "run"
    cfg = load_config("scratch", TINY)  # random init, recorded as such
    seen = []

    def hook(info):
        seen.append((info.epoch, info.step, info.samples))
        # the run's own config: the caller's, settled (weights recorded; the caller's is not changed)
        assert info.train_seconds > 0 and info.cfg.to_dict() == {**cfg.to_dict(), "pretrained_record": "random init"}
        return info.step == 2

    assert train(data, cfg, run_dir=run, on_step=hook) == {0: {}}
    assert seen == [(0, 1, 8), (0, 2, 16)]
    ckpt = load_checkpoint(run / "fold0" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (0, 2)
    assert json.loads((run / "run.json").read_text())["data_dir"] == str(data.absolute())
    # the same call without the hook continues from step 2 to the end
    best = train(data, cfg, run_dir=run)[0]
    assert best["epoch"] >= 1 and load_checkpoint(run / "fold0" / "last.pt")["epoch"] == 2


def test_a_time_budget_refits_later_epochs_and_a_resume_keeps_the_refit(tmp_path, make_dataset):
    """`data_budget` after each data epoch sets the later epochs' length (here: a budget that pays
    for full passes, then one that pays for nothing); stopped mid-epoch and resumed without the
    budget, the fold runs the refit it kept, bit-exactly as the uninterrupted one."""
    from dirtymnist.train.loop import train

    data = make_dataset(tmp_path / "data", n_train=48, n_test=2)
    cfg = load_config("scratch", [*TINY, "epochs=3", "epoch_fraction=0.5"])  # 4 batches a pass, 2 an epoch
    ample = lambda fold, row: 1e9  # noqa: E731
    train(data, cfg, run_dir=tmp_path / "whole", data_budget=ample)
    rows = [json.loads(x) for x in (tmp_path / "whole" / "fold0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] == [16, 32, 32] and rows[0]["next_steps"] == 4

    train(data, cfg, run_dir=tmp_path / "run", data_budget=ample, on_step=lambda info: (info.epoch, info.step) == (1, 2))
    assert load_checkpoint(tmp_path / "run" / "fold0" / "last.pt")["refit"]["steps"] == 4
    train(data, cfg, run_dir=tmp_path / "run")  # resumed: no budget asked, the kept refit runs
    a, b = load_checkpoint(tmp_path / "whole" / "fold0" / "last.pt"), load_checkpoint(tmp_path / "run" / "fold0" / "last.pt")
    assert [r["samples"] for r in b["history"]] == [16, 16, 32]  # epoch 2: its last 2 of 4 batches after the resume
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"model.{key} differs after resume"
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]

    train(data, cfg, run_dir=tmp_path / "none", data_budget=lambda fold, row: 0.0)
    rows = [json.loads(x) for x in (tmp_path / "none" / "fold0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] == [16, 8, 8]  # over budget at once: one batch an epoch
