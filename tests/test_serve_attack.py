"""The serve attack and load campaign (tests/serve_campaign.py) against a real `dirtymnist serve`
process on loopback: every case answered as expected, in time, memory flat, the server up and
answering others within 100 ms, one log line per refused request."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import train_argv
from serve_campaign import campaign, table

from dirtymnist import layout
from dirtymnist.cli import main as cli_main
from dirtymnist.look.serve import launch
from dirtymnist.look.uploads import MAX_UPLOAD_BYTES

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install '.[serve]')")

TIMEOUT = 1.5  # the server's --timeout: the slow-client cases take about this long


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(data_dir, run_dir): 16 generated scenes; the cpu net from its ready weights, 1 gentle epoch."""
    from dirtymnist.data.synth import write_dataset

    root = tmp_path_factory.mktemp("attack")
    data = write_dataset(root / "data", n_train=16, n_test=4, seed=3, workers=1, progress=False)
    run = root / "run"
    overrides = ("stages=[]", "epochs=1", "folds_k=2", "batch_size=8", "lr=1e-5", "pretrained=ready")
    assert cli_main(train_argv(data, run, overrides, "--folds", "0")) == 0
    return data, run


def test_attack_campaign(served, tmp_path):
    data, run = served
    log = tmp_path / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2-core CI: one core for the model, one for the rest
    with open(log, "w") as err:
        server, url = launch([run, "--data", data, "--timeout", str(TIMEOUT)], timeout=90, env=env,
                             stdout=subprocess.DEVNULL, stderr=err)
    try:
        port = int(url.rsplit(":", 1)[1])
        png = (data / layout.TEST_DIR / layout.png_name(17)).read_bytes()
        rows = campaign(server.pid, port, png, MAX_UPLOAD_BYTES, TIMEOUT, log=log, parallel=50)
    finally:
        server.terminate()
        server.wait(10)
    print(table(rows))
    problems = [f"{r.case}: {p}" for r in rows for p in r.problems]
    assert not problems, "\n".join(problems) + "\n\n" + table(rows) + "\n\nserver log:\n" + log.read_text()[-3000:]
