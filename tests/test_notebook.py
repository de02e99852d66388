"""examples/quickstart.ipynb runs top to bottom in a fresh Jupyter kernel (nbclient), without errors;
it is committed with its outputs (figure included; no progress-bar widgets, no machine paths) so
that a code host shows them.

    PYTHONPATH=src python tests/test_notebook.py     # re-execute it and write its outputs back
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="needs nbclient + ipykernel (the dev extra)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat (the dev extra)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
MAX_BYTES = 400_000  # the committed notebook, outputs included
WIDGET = "application/vnd.jupyter.widget-view+json"


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _execute(nb, cwd: Path) -> None:
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()


def test_committed_notebook_shows_its_outputs():
    raw = NOTEBOOK.read_text(encoding="utf-8")
    nb = nbformat.reads(raw, as_version=4)
    assert len(raw.encode()) < MAX_BYTES
    assert all(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it with its outputs"
    assert sum("image/png" in o.get("data", {}) for o in _outputs(nb)) == 1
    assert "widgets" not in nb.metadata  # the progress bars' state: large, and no use on a code host
    assert not any(WIDGET in o.get("data", {}) for o in _outputs(nb))
    for root in {str(Path.home()), tempfile.gettempdir(), str(NOTEBOOK.parents[1])}:
        assert root + "/" not in raw, f"a machine path ({root}) in the committed outputs"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DIRTYMNIST_QUICKSTART_DIR", str(tmp_path / "qs"))
    nb = nbformat.read(NOTEBOOK, as_version=4)  # a copy in memory: the committed file is not touched
    # run from examples/ as a user would; outputs go to tmp_path
    _execute(nb, NOTEBOOK.parent)
    text = "\n".join(o.get("text", "") for o in _outputs(nb))
    assert "ready weights for: dm_fcn" in text
    assert "(16, 26) ->" in text and "label accuracy" in text
    assert "IProgress not found" not in text  # tqdm.auto found ipywidgets ...
    widgets = [o for o in _outputs(nb) if WIDGET in o.get("data", {})]
    assert widgets  # ... so the progress bars are notebook widgets, not text
    images = [o for o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the letters and heat maps figure
    assert (tmp_path / "qs" / "submission.csv").is_file()
    assert (tmp_path / "qs" / "run" / "fold0" / "best.pt").is_file()


def refresh() -> None:
    """Execute the notebook in a scratch folder (its outputs under a relative `quickstart/`) and
    write it back with its outputs: figures re-encoded small, widget state dropped."""
    os.environ.pop("DIRTYMNIST_QUICKSTART_DIR", None)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="dm-quickstart-") as tmp:
        _execute(nb, Path(tmp))
    nb.metadata.pop("widgets", None)
    for c in nb.cells:  # progress-bar widgets: without their state a code host shows "0%", so none
        if c.cell_type == "code":
            c.outputs = [o for o in c.outputs if WIDGET not in o.get("data", {})]
    for o in _outputs(nb):
        if "image/png" in o.get("data", {}):
            o["data"]["image/png"] = _smaller_png(o["data"]["image/png"])
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({NOTEBOOK.stat().st_size} bytes)")


def _smaller_png(b64: str) -> str:
    """The same figure as a 32-colour palette PNG (noise images compress badly in RGBA: 300 -> 195 KB)."""
    import base64

    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
    out = io.BytesIO()
    img.quantize(32, method=Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode() + "\n"


if __name__ == "__main__":
    refresh()
    sys.exit(0)
