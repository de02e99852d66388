"""examples/quickstart.ipynb runs top to bottom in a fresh Jupyter kernel (nbclient), without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="needs nbclient + ipykernel (the dev extra)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat (the dev extra)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DIRTYMNIST_QUICKSTART_DIR", str(tmp_path / "qs"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    # run from examples/ as a user would; outputs go to tmp_path
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "ready weights for: dm_fcn" in text
    assert "(16, 26) ->" in text and "label accuracy" in text
    assert "IProgress not found" not in text  # tqdm.auto found ipywidgets ...
    widgets = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets  # ... so the progress bars are notebook widgets, not text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the letters and heat maps figure
    assert (tmp_path / "qs" / "submission.csv").is_file()
    assert (tmp_path / "qs" / "run" / "fold0" / "best.pt").is_file()
