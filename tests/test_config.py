"""The training config: recipe vs run options, preset inheritance, choice checks, in_chans, removed keys."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from dirtymnist import config
from dirtymnist.config import (
    CHOICES,
    RECIPE_KEYS,
    REMOVED_KEYS,
    RESUME_SAFE_KEYS,
    RUN_OPTION_KEYS,
    TrainConfig,
    config_from_dict,
    diff_configs,
    dump_yaml,
    list_presets,
    load_config,
)
from dirtymnist.errors import ConfigError

SNAPSHOT = Path(__file__).parent / "data" / "presets_426fe99.json"  # every preset, resolved on main at 426fe99
PACKAGE = Path(config.__file__).parent


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- presets unchanged


# keys added since the snapshot, each at its default in every preset (a preset that changes one
# says so here, with the measurement that decided it)
ADDED_KEYS = {"dense_target": "sigmoid", "dense_softmax_epochs": 0,  # issue 14, round 2
              "distill": 0.0, "teacher": "", "teacher_model": "",  # round 12 (off)
              "epoch_fraction": 1.0}  # issue 49: `run --minutes` sets it (every row each epoch otherwise)


# presets changed on purpose since the snapshot, each by the measurement named beside it
READY_START = {"model": "dm_fcn_deep", "pretrained": "ready"}  # issue 14: BENCHMARKS, ready weights
WIDE = {"speckle": 0.5, "thickness": [0.10, 0.30]}  # issue 14, round 7: BENCHMARKS, "Round 7"
CHANGED = {"cpu": {**READY_START, "stages": [  # round 7: 400 scenes steps (the demo on a CPU without AMX)
               {"name": "scenes", "source": "dense", "steps": 200, "epochs": 2, "pool": 6400, "lr": 0.001,
                "knobs": WIDE},
               {"name": "data", "source": "data", "lr": 0.0003}]},
           # issue 14, round 5: BENCHMARKS, "Round 5" (the 256 px fine-tune of the ready.192px weights);
           # round 7: "Round 7" (its scenes widened: +3.1 points on the look-alike set, -0.6 on ours);
           # round 9: "Round 9" (the whole 40 minutes: 1,560 steps, +0.9 on the look-alike set with rot90)
           # round 12: "Round 12" (from ready.256px, round 9's run: +1.5 on the look-alike set)
           # round 13: "Round 13" (from ready.256px2, ready.256px through one more such run: +0.4, +0.7)
           # round 14: "Round 14" (from ready.256px4, two more such runs: +0.2, +0.7 with rot90)
           # round 15: "Round 15" (from ready.256px5, one more run with 18 more training fonts)
           # round 16: "Round 16" (from ready.256px8, three more runs with 47 fonts not bundled)
           # round 17: "Round 17" (from ready.256px9, round 16's fourth run, on freshly rendered scenes;
           # then from ready.256px12, three more such runs with 34 more fonts not bundled, 81 in all)
           # round 18: "Round 18" (from ready.256px13, ready.256px12 through one longer run, 2,340 steps)
           "default": {**READY_START, "pretrained": "ready.256px13", "image_size": 256, "stages": [
               {"name": "scenes", "source": "dense", "steps": 390, "epochs": 4, "pool": 20000, "lr": 0.001,
                "knobs": WIDE},
               {"name": "data", "source": "data", "lr": 0.0003}]}}


def test_every_preset_resolves_as_it_did_before_inheritance():
    before = json.loads(SNAPSHOT.read_text())
    assert set(before) <= set(list_presets())
    before["scratch"] = {**before["cpu"], "preset": "scratch"}  # the cpu recipe before issue 14
    for name, old in before.items():
        old = {k: v for k, v in old.items() if k not in REMOVED_KEYS}
        want = {**old, **ADDED_KEYS, **CHANGED.get(name, {})}
        if want.get("stages"):  # stage keys added since the snapshot take their defaults
            want["stages"] = load_config("cpu", [f"stages={json.dumps(want['stages'])}"]).stages
        assert load_config(name).to_dict() == want, name


def test_default_and_gpu_inherit_instead_of_copying():
    text = {name: yaml.safe_load((config.preset_dir() / f"{name}.yaml").read_text()) for name in list_presets()}
    assert text["default"]["base"] == "cpu" and set(text["default"]) == {"base", "pretrained", "image_size", "stages"}
    assert text["gpu"]["base"] == "default"
    assert load_config("default").preset == "default"  # the leaf's name, not the base's
    # round 21: default's start with every minute on the data folder (BENCHMARKS "Round 21")
    assert text["finetune"] == {"base": "default", "stages": [{"name": "data", "source": "data", "lr": 0.0003}]}
    finetune, default = load_config("finetune").to_dict(), load_config("default").to_dict()
    assert [s["source"] for s in finetune.pop("stages")] == ["data"] and finetune.pop("preset") == "finetune"
    assert finetune == {k: v for k, v in default.items() if k not in ("stages", "preset")}


# --------------------------------------------------------------------------- recipe and run options


def test_recipe_and_run_options_split_every_key_once():
    every = [f.name for f in dataclasses.fields(TrainConfig)]
    assert sorted(every) == sorted([*RECIPE_KEYS, *RUN_OPTION_KEYS])
    assert not set(RECIPE_KEYS) & set(RUN_OPTION_KEYS)
    assert RESUME_SAFE_KEYS == set(RUN_OPTION_KEYS) | set(REMOVED_KEYS)
    cfg = load_config("cpu")
    assert cfg.lr == 0.003 and cfg.num_workers == 0  # flat attribute access for both


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [*value, {"source": "data"}]
    return f"{value}-other"


def test_run_options_do_not_enter_the_resume_diff_and_every_recipe_key_does():
    old = load_config("cpu").to_dict()
    for key in RUN_OPTION_KEYS:
        assert diff_configs(old, {**old, key: _changed(old[key])}) == [], key
    for key in RECIPE_KEYS:
        assert diff_configs(old, {**old, key: _changed(old[key])}) == [key], key


def test_config_yaml_is_one_flat_mapping_recipe_first(tmp_path):
    cfg = load_config("gpu", ["num_workers=2", "keep_last=3"])
    text = dump_yaml(cfg)
    stored = yaml.safe_load(text)
    assert stored == cfg.to_dict()
    assert list(stored) == [*RECIPE_KEYS, *RUN_OPTION_KEYS]
    assert text.index("# run options") > text.index("stages:")
    assert config_from_dict(stored, "config.yaml") == cfg
    # a stored config is also a preset: it loads to the same config
    assert load_config(str(_write(tmp_path / "run.yaml", text))) == dataclasses.replace(cfg, preset="gpu")


def test_every_key_is_read_somewhere_in_the_package():
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "config.py")
    read_by_config = {"pseudo_record"}  # compared by diff_configs: a changed pseudo file refuses to resume
    unread = [f.name for f in dataclasses.fields(TrainConfig)
              if f.name not in read_by_config and not re.search(rf"\.{f.name}\b", sources)]
    assert unread == []


# --------------------------------------------------------------------------- base: inheritance


def test_a_preset_inherits_from_a_named_base_and_overrides(tmp_path):
    path = _write(tmp_path / "mine.yaml", "base: cpu\nlr: 0.01\nstages:\n  - {name: only, source: data}\n")
    cfg, cpu = load_config(str(path)), load_config("cpu")
    assert cfg.lr == 0.01 and cfg.preset == "mine"
    assert [s["name"] for s in cfg.stages] == ["only"]  # a list is replaced whole, not merged
    same = {k for k in RECIPE_KEYS if k not in ("lr", "stages")}
    assert {k: getattr(cfg, k) for k in same} == {k: getattr(cpu, k) for k in same}


def test_a_base_path_is_relative_to_the_preset_and_chains(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "a.yaml", "base: default\nepochs: 7\n")
    _write(tmp_path / "b.yaml", "base: sub/a.yaml\nlr: 0.02\n")
    cfg = load_config(str(tmp_path / "b.yaml"), ["batch_size=16"])
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.preset) == (7, 0.02, 16, "b")
    assert cfg.stages == load_config("default").stages


@pytest.mark.parametrize("files, start, expect", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "a.yaml", r"b.yaml: base 'a.yaml' makes a cycle \(a.yaml -> b.yaml -> a.yaml\)"),
    ({"a.yaml": "base: a.yaml\n"}, "a.yaml", r"a.yaml: base 'a.yaml' makes a cycle"),
    ({"a.yaml": "base: cpx\n"}, "a.yaml", r"a.yaml: unknown base 'cpx'; choose from .*cpu.* or give a YAML path \(did you mean 'cpu'\?\)"),
    ({"a.yaml": "base: nowhere.yaml\n"}, "a.yaml", r"a.yaml: base 'nowhere.yaml': .*nowhere.yaml not found"),
    ({"a.yaml": "base: [cpu]\n"}, "a.yaml", r"a.yaml: base must be a preset name or a YAML path"),
])
def test_bad_bases_are_one_line_errors_naming_the_file(tmp_path, files, start, expect):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / start))
    assert re.search(expect, _one_line(e))


def test_errors_name_the_file_that_gave_the_value(tmp_path):
    _write(tmp_path / "base.yaml", "base: cpu\naugment: rot9\n")
    _write(tmp_path / "leaf.yaml", "base: base.yaml\nlr: 0.01\n")
    with pytest.raises(ConfigError, match=r"base.yaml: augment='rot9'"):
        load_config(str(tmp_path / "leaf.yaml"))
    with pytest.raises(ConfigError, match=r"^--set: lr must be > 0"):
        load_config(str(tmp_path / "leaf.yaml"), ["augment=none", "lr=0"])
    with pytest.raises(ConfigError, match=r"leaf.yaml: lr must be > 0"):
        load_config(str(_write(tmp_path / "leaf.yaml", "base: base.yaml\nlr: -1\n")), ["augment=none"])


def test_unknown_keys_name_their_file_and_the_closest_key(tmp_path):
    path = _write(tmp_path / "x.yaml", "base: cpu\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert re.fullmatch(r".*x.yaml: unknown key 'learning_rate'( \(did you mean '.*'\?\))?", _one_line(e))
    with pytest.raises(ConfigError, match=r"^--set: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        load_config("cpu", ["epoch=3"])


# --------------------------------------------------------------------------- choices


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_key_is_checked_at_load(key):
    with pytest.raises(ConfigError) as e:
        load_config("cpu", [f"{key}=bogus"])
    message = _one_line(e)
    assert message.startswith(f"--set: {key}='bogus'; choose from ")
    assert all(choice in message for choice in CHOICES[key])


@pytest.mark.parametrize("override, hint", [
    ("augment=rot9", "rot90"), ("head=maxx", "max"), ("loss=fokal", "focal"), ("scheduler=cosin", "cosine"),
    ("denoise=inc", "ink"), ("optimizer=adamww", "adamw"), ("folds_method=kfolds", "kfold"),
])
def test_a_typo_gets_the_closest_choice(override, hint):
    with pytest.raises(ConfigError, match=rf"\(did you mean '{hint}'\?\)$"):
        load_config("cpu", [override])


@pytest.mark.parametrize("stage, expect", [
    ("{source: dens, steps: 5}", r"stages\[0\]: source='dens'; choose from data, dense, glyphs, synth \(did you mean 'dense'\?\)"),
    ("{source: data, epoch: 2}", r"stages\[0\]: unknown stage key 'epoch'.*\(did you mean 'epochs'\?\)"),
    ("{source: dense, steps: 5, knobs: {letter: [1, 2]}}", r"stages\[0\]: unknown knob 'letter'.*\(did you mean 'letters'\?\)"),
    ("{source: dense, steps: 5, knobs: {letters: [5, 2]}}", r"stages\[0\]: knob letters=\(5, 2\): need 0 <= low <= high"),
    ("{source: synth}", r"stages\[0\]: a synth stage needs steps >= 1"),
])
def test_stages_and_their_knobs_are_checked_at_load(stage, expect):
    with pytest.raises(ConfigError) as e:
        load_config("cpu", [f"stages=[{stage}]"])
    assert re.search(expect, _one_line(e))


def test_the_choice_lists_match_the_modules_that_act_on_them():
    from dirtymnist.data import folds
    from dirtymnist.model import transforms
    from dirtymnist.model.build import ClassMapHead
    from dirtymnist.train import losses, mixing

    assert set(CHOICES["dense_target"]) == set(losses.DENSE_LOSSES)
    assert set(CHOICES["augment"]) == set(transforms.AUGMENT_PRESETS)
    assert set(CHOICES["head"]) == {"timm", "imagenet_silu", *ClassMapHead.POOLS}
    assert set(CHOICES["mix"]) == set(mixing.KINDS)
    assert set(CHOICES["folds_method"]) == set(folds.METHODS)


def test_every_loss_optimizer_and_scheduler_choice_builds_its_own_thing():
    import torch

    from dirtymnist.train.build import build_optimizer
    from dirtymnist.train.losses import build_loss
    from dirtymnist.train.schedule import Schedule, build_plan

    assert len({type(build_loss(name)) for name in CHOICES["loss"]}) == len(CHOICES["loss"])
    with pytest.raises(ValueError):
        build_loss("bogus")
    net = torch.nn.Linear(2, 2)
    optimizers = {type(build_optimizer(load_config("cpu", [f"optimizer={o}"]), net)) for o in CHOICES["optimizer"]}
    assert len(optimizers) == len(CHOICES["optimizer"])
    lrs = {}
    for name in CHOICES["scheduler"]:
        cfg = load_config("cpu", [f"scheduler={name}", "stages=[]", "epochs=12", "step_size=1", "warmup_epochs=0"])
        opt = build_optimizer(cfg, net)
        schedule = Schedule(cfg, opt, build_plan(cfg, 4))
        for epoch in range(8):  # 8 epochs of 4 batches, validation loss flat at 1.0
            schedule.start_epoch(epoch, 0)
            for _ in range(4):
                opt.step()
                schedule.after_step()
            schedule.after_epoch(1.0)
        lrs[name] = round(schedule.lr, 8)
    assert len(set(lrs.values())) == len(lrs), lrs  # four schedules, four learning rates


@pytest.mark.parametrize("denoise", CHOICES["denoise"])
@pytest.mark.parametrize("resize", CHOICES["resize"])
def test_every_input_choice_gives_the_channels_in_chans_says(denoise, resize):
    import torch

    from dirtymnist.model.transforms import normalize, preprocess

    cfg = load_config("cpu", [f"denoise={denoise}", f"resize={resize}", "image_size=64"])
    x = normalize(preprocess(torch.randint(0, 256, (2, 256, 256), dtype=torch.uint8), cfg), cfg)
    assert x.shape == (2, cfg.in_chans, 64, 64)


def test_every_normalize_amp_and_channels_last_choice_is_understood():
    import torch

    from dirtymnist.model import precision, transforms, weights

    x = torch.full((1, 1, 4, 4), 0.25)
    outs = {n: transforms.normalize(x, load_config("cpu", [f"normalize={n}"]))[0, 0, 0, 0].item()
            for n in CHOICES["normalize"] if n != "auto"}
    assert len(set(outs.values())) == len(outs)
    assert weights.settle(load_config("cpu", ["normalize=auto"])).normalize in CHOICES["normalize"]
    cpu = torch.device("cpu")
    for amp in CHOICES["amp"]:
        assert precision.resolve_amp(load_config("cpu", [f"amp={amp}"]), cpu) in {"bf16", "fp16", "off"}
    assert {precision.use_channels_last(load_config("cpu", ["amp=off", f"channels_last={c}"]), cpu)
            for c in ("on", "off")} == {True, False}


# --------------------------------------------------------------------------- in_chans


def test_in_chans_comes_from_denoise_unless_set_on_purpose():
    assert load_config("cpu").in_chans == 1
    assert load_config("cpu", ["denoise=ink"]).in_chans == 2
    assert load_config("cpu", ["denoise=median"]).in_chans == 1
    assert load_config("seed").in_chans == 3  # ImageNet's RGB stem, on purpose
    assert load_config("seed", ["in_chans=auto"]).in_chans == 1
    assert load_config("cpu", ["denoise=ink", "in_chans=2"]).in_chans == 2  # explicit and consistent
    stored = load_config("cpu", ["denoise=ink"]).to_dict()
    assert stored["in_chans"] == 2 and config_from_dict(stored).in_chans == 2  # stored resolved


@pytest.mark.parametrize("preset, overrides, expect", [
    ("cpu", ["denoise=ink", "in_chans=1"], r"^--set: denoise=ink gives 2 channels \(grey, ink\), in_chans=1 contradicts it"),
    ("seed", ["denoise=ink"], r"seed.yaml: denoise=ink \(--set\) gives 2 channels \(grey, ink\), in_chans=3 contradicts it; set in_chans=auto$"),
    ("cpu", ["in_chans=2"], r"^--set: in_chans must be 1 or 3 \(2 only with denoise=ink\), got 2"),
    ("cpu", ["in_chans=rgb"], r"^--set: in_chans='rgb' is not a valid int"),
])
def test_an_in_chans_that_contradicts_denoise_is_an_error(preset, overrides, expect):
    with pytest.raises(ConfigError) as e:
        load_config(preset, overrides)
    assert re.search(expect, _one_line(e))


# --------------------------------------------------------------------------- removed keys


def test_a_stored_config_with_a_removed_key_still_loads(caplog):
    stored = {**load_config("cpu").to_dict(), "log_every": 20}
    with caplog.at_level(logging.DEBUG, logger="dirtymnist.config"):
        cfg = config_from_dict(stored, source="old/fold0/last.pt")
    assert cfg == load_config("cpu")
    assert "old/fold0/last.pt: dropped the removed key 'log_every'" in caplog.text
    assert diff_configs(stored, cfg.to_dict()) == []  # an old run still resumes


def test_a_preset_or_override_naming_a_removed_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set: unknown key 'log_every' \(removed: it was never read\)$"):
        load_config("cpu", ["log_every=5"])
    path = _write(tmp_path / "old.yaml", "base: cpu\nlog_every: 20\n")
    with pytest.raises(ConfigError, match=r"old.yaml: unknown key 'log_every'"):
        load_config(str(path))


@pytest.mark.parametrize("override, expect", [
    ("lr=nan", "lr='nan' is not a valid float"),
    ("lr=.inf", "lr=inf is not a valid float"),
    ("epochs=true", "epochs=True is not a valid int"),
    ("weight_decay=-1", "weight_decay must be >= 0"),
    ("grad_clip=-0.5", "grad_clip must be >= 0"),
    ("mix_prob=3", "mix_prob must be in [0, 1]"),
    ("min_lr_ratio=1.5", "min_lr_ratio must be in [0, 1]"),
])
def test_numbers_that_would_fail_deep_in_torch_are_refused_at_load(override, expect):
    with pytest.raises(ConfigError) as e:
        load_config("cpu", [override])
    assert str(e.value).startswith(f"--set: {expect}")


@pytest.mark.parametrize("content, expect", [
    (bytes(range(128, 256)) * 8, "not a YAML text file (its bytes are not UTF-8)"),
    (None, "is a folder, not a preset file"),
])
def test_a_preset_that_is_not_text_is_one_line(tmp_path, content, expect):
    path = tmp_path / "p.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {expect}")):
        load_config(str(path))
