"""Contact sheet: written, right grid size, fails clearly on a missing folder."""

from __future__ import annotations

import cv2
import pytest

from dirtymnist import layout
from dirtymnist.data.show import contact_sheet
from dirtymnist.data.synth import write_dataset
from dirtymnist.errors import DataError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("show")
    write_dataset(out, 5, 3, seed=0, workers=1, progress=False)
    return out


def test_contact_sheet_train(data, tmp_path):
    path = contact_sheet(data, n=4, out=tmp_path / "sheet.png")
    sheet = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert sheet is not None
    assert sheet.shape[1] > 2 * 256 and sheet.shape[0] > 2 * 256  # 2 x 2 grid with captions
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp file left


def test_contact_sheet_test_split_and_n_capped(data, tmp_path):
    path = contact_sheet(data, n=16, out=tmp_path / "t.png", split="test")
    sheet = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert sheet.shape[1] > 2 * 256 and sheet.shape[0] < 3 * 256  # 3 images: 2 x 2 grid
    (data / layout.TEST_ANSWER_CSV).rename(data / "hidden.csv")
    try:
        assert contact_sheet(data, n=2, out=tmp_path / "u.png", split="test").exists()
    finally:
        (data / "hidden.csv").rename(data / layout.TEST_ANSWER_CSV)


def test_contact_sheet_errors(data, tmp_path):
    with pytest.raises(DataError, match="image folder"):
        contact_sheet(tmp_path, out=tmp_path / "x.png")
    with pytest.raises(DataError, match="split"):
        contact_sheet(data, split="valid", out=tmp_path / "x.png")


def test_a_missing_image_is_one_line_without_opencv_warnings(data, tmp_path):
    import shutil
    import subprocess
    import sys

    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    missing = broken / layout.TRAIN_DIR / layout.png_name(2)
    missing.unlink()
    proc = subprocess.run([sys.executable, "-m", "dirtymnist", "show", str(broken), "--n", "5",
                           "--out", str(tmp_path / "s.png")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"dirtymnist show: error: {missing}: image not found"]
    assert not (tmp_path / "s.png").exists()
