"""The `cache` and `folds` commands through `dirtymnist.cli.main`, and torch-free start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dirtymnist import layout
from dirtymnist.cli import main


def test_cache_command(tmp_path, make_dataset, capsys):
    root = make_dataset(tmp_path / "data", n_train=6, n_test=2)
    assert main(["cache", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "train 6 images" in out and "test 2 images" in out
    assert (root / ".dirtymnist_cache" / "manifest.json").exists()


def test_cache_command_renamed_folders(tmp_path, make_dataset, capsys):
    root = make_dataset(tmp_path / "data", n_train=3, n_test=2)
    (root / layout.TRAIN_DIR).rename(root / "train")
    (root / layout.TEST_DIR).rename(root / "test")
    args = ["cache", str(root), "--workers", "1", "--train-dir", "train", "--test-dir", "test",
            "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    assert "train 3 images" in capsys.readouterr().out


def test_folds_command(tmp_path, make_dataset, capsys):
    root = make_dataset(tmp_path / "data", n_train=40, n_test=1)
    assert main(["folds", str(root), "--k", "4", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "folds_k4_seed1.csv" in out and "max letter dev" in out
    assert (root / "folds_k4_seed1.csv").exists()
    assert main(["folds", str(root), "--k", "4", "--seed", "1", "--subset", "20",
                 "--method", "kfold", "--out", str(tmp_path / "f.csv")]) == 0
    assert "subset vs full set" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expect", [
    (["cache", "{root}", "--train-dir", "nope"], "nope: train image folder not found"),
    (["folds", "{root}", "--train-csv", "nope.csv"], "nope.csv: label file not found"),
    (["folds", "{root}", "--k", "1"], "k=1 folds impossible"),
])
def test_errors_are_one_line_exit_2(tmp_path, make_dataset, capsys, argv, expect):
    root = make_dataset(tmp_path / "data", n_train=3, n_test=1)
    code = main([a.format(root=root) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"dirtymnist {argv[0]}: error: ") and expect in err[0]
    assert "Traceback" not in err[0]


def test_bad_png_in_cache_command(tmp_path, make_dataset, capsys):
    root = make_dataset(tmp_path / "data", n_train=3, n_test=1)
    (root / layout.TRAIN_DIR / "00001.png").write_bytes(b"not a png")
    assert main(["cache", str(root), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "00001.png: not a readable image" in err[0]


@pytest.mark.parametrize("argv", [["--help"], ["folds", "--help"], ["cache", "--help"]])
def test_help_does_not_import_torch(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['dirtymnist', *{argv!r}]\n"
            "try:\n    runpy.run_module('dirtymnist', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
    assert "usage:" in out.stdout


def test_folds_command_does_not_import_torch(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "data", n_train=10, n_test=1)
    code = ("import sys\nfrom dirtymnist.cli import main\n"
            f"assert main(['folds', {str(root)!r}, '--k', '2']) == 0\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")


def test_config_is_checked_and_printed_without_torch(tmp_path):
    """`train --print-config` and a config error need no torch: the choice lists live in config.py."""
    code = ("import sys\nfrom dirtymnist.cli import main\n"
            "assert main(['train', 'DATA', '--preset', 'default', '--print-config']) == 0\n"
            "assert main(['train', 'DATA', '--preset', 'cpu', '--set', 'augment=rot9']) == 2\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
    assert "# recipe:" in out.stdout and "# run options:" in out.stdout and "preset: default" in out.stdout
    err = out.stderr.strip().splitlines()
    assert err == ["dirtymnist train: error: --set: augment='rot9'; choose from d4, none, rot90, seed, winner "
                   "(did you mean 'rot90'?)"]
