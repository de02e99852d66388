"""`dirtymnist serve`: the page's numbers are `predict`'s, bad uploads get a one-line message, the
CSV is the submission format, heat maps are the class maps; and (with headless Chromium) a PNG
uploaded through the page shows predict's letters and a heat map."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from conftest import train_argv

from dirtymnist import layout
from dirtymnist.cli import main as cli_main
from dirtymnist.data.dataset import read_label_csv
from dirtymnist.infer.predict import predict
from dirtymnist.look.serve import launch

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install '.[serve]')")



@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(data_dir, run_dir): 16 generated scenes; the cpu net from its ready weights, 1 gentle epoch."""
    from dirtymnist.data.synth import write_dataset

    root = tmp_path_factory.mktemp("serve")
    data = write_dataset(root / "data", n_train=16, n_test=4, seed=3, workers=1, progress=False)
    run = root / "run"
    # the ready weights make real letter detectors: heat maps with something to show
    overrides = ("stages=[]", "epochs=1", "folds_k=2", "batch_size=8", "lr=1e-5",
                 "pretrained=ready")
    assert cli_main(train_argv(data, run, overrides, "--folds", "0")) == 0
    return data, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(served):
    """The app of `served` under uvicorn in a thread on a free port (the run twice: compare)."""
    import uvicorn

    from dirtymnist.look.serve import build_app

    data, run = served
    app = build_app([run, run / "fold0" / "best.pt"], data)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def _call(url: str, body: bytes | None = None, content_type: str = "application/octet-stream"):
    """(status, parsed JSON or text) of a GET (body None) or POST."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, json.loads(raw) if "json" in ctype else raw.decode()


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_upload_gives_predicts_probabilities(served, url):
    data, run = served
    ref = predict([run], data, split="test")
    answers = read_label_csv(data / layout.TEST_ANSWER_CSV)
    for row, index in enumerate(ref.index[:2]):
        png = (data / layout.TEST_DIR / layout.png_name(index)).read_bytes()
        status, res = _call(f"{url}/api/predict?name={layout.png_name(index)}", png)
        assert status == 200, res
        # the data folder's own image (byte for byte): its letters from test_answer.csv
        assert res["index"] == index
        assert res["truth"] == answers.labels[list(answers.index).index(index)].tolist()
        assert len(res["runs"]) == 2  # the run and its one checkpoint: the same model
        for r in res["runs"]:
            np.testing.assert_allclose(r["probs"], ref.probs[row], atol=1e-5)
            assert r["pred"] == ref.pred[row].tolist()


def test_data_images_show_truth_and_predictions(served, url):
    data, run = served
    status, listing = _call(f"{url}/api/data/train?offset=3&limit=2")
    assert status == 200 and listing == {"index": [3, 4], "total": 16}
    ref = predict([run], data, split="train")
    labels = read_label_csv(data / layout.TRAIN_CSV)
    status, res = _call(f"{url}/api/data/train/4")
    assert status == 200, res
    assert res["truth"] == labels.labels[list(labels.index).index(4)].tolist()
    np.testing.assert_allclose(res["runs"][0]["probs"], ref.probs[list(ref.index).index(4)], atol=1e-5)
    with urllib.request.urlopen(f"{url}/data/train/00004.png", timeout=30) as resp:
        assert resp.read() == (data / layout.TRAIN_DIR / "00004.png").read_bytes()
    status, res = _call(f"{url}/api/data/train/999")
    assert status == 404 and res["error"] == "train: no image 999"


def test_heat_maps_are_the_class_maps(served, url):
    """head=max: a letter's probability is the sigmoid of its map's maximum, so the heat map's
    brightest cell equals the probability (up to the 8-bit quantisation of the page)."""
    import base64

    data, run = served
    status, res = _call(f"{url}/api/data/train/0")
    assert status == 200
    heat = res["runs"][0]["heat"]
    assert (heat["h"], heat["w"]) == (16, 16)  # image_size 128, stride 8
    maps = np.frombuffer(base64.b64decode(heat["data"]), np.uint8).reshape(26, 16, 16) / 255
    np.testing.assert_allclose(maps.max(axis=(1, 2)), res["runs"][0]["probs"], atol=1 / 255 + 1e-4)
    assert maps.std() > 0.05  # not a flat overlay: the map says where


def test_bad_uploads_get_one_line_messages(url):
    grey = np.full((256, 256), 100, np.uint8)
    cases = {
        "notes.png": (b"not an image at all", "notes.png: not a PNG file"),
        "photo.jpg": (cv2.imencode(".jpg", grey)[1].tobytes(), "photo.jpg: not a PNG file"),
        "small.png": (_png(grey[:100]), "small.png: size 256x100, expected 256x256"),
        "colour.png": (_png(np.zeros((256, 256, 3), np.uint8)), "colour.png: colour image (3 channels)"),
        "deep.png": (_png(grey.astype(np.uint16) * 200), "deep.png: uint16 pixels (16-bit)"),
        "broken.png": (_png(grey)[:60], "broken.png: not a readable image"),
        "huge.png": (b"\x89PNG\r\n\x1a\n" + bytes(5 << 20), "huge.png: 5.0 MB upload, more than 1 MB"),
        "empty.png": (b"", "empty.png: empty upload"),
    }
    for name, (body, expected) in cases.items():
        status, res = _call(f"{url}/api/predict?name={name}", body)
        assert status in (400, 413), (name, res)
        assert res["error"].startswith(expected), res
        assert "\n" not in res["error"] and "Traceback" not in res["error"]
    status, _ = _call(f"{url}/api/predict?name=ok.png", _png(grey))
    assert status == 200  # the server is still fine


def test_csv_is_the_submission_format(url):
    pred = np.zeros((2, 26), np.uint8)
    pred[0, [0, 25]] = 1
    pred[1, 3] = 1
    body = json.dumps({"index": [50001, 50000], "pred": pred.tolist()}).encode()
    status, text = _call(f"{url}/api/csv", body, "application/json")
    assert status == 200
    lines = text.splitlines()
    assert lines[0] == "index," + ",".join(layout.LETTERS)
    assert lines[1] == "50001,1," + "0," * 24 + "1"
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.int64)
    assert table[:, 0].tolist() == [50001, 50000] and (table[:, 1:] == pred).all()
    status, res = _call(f"{url}/api/csv", json.dumps({"index": [1, 1], "pred": pred.tolist()}).encode(),
                        "application/json")
    assert status == 400 and "twice" in res["error"]
    status, res = _call(f"{url}/api/csv", b"{", "application/json")
    assert status == 400 and res["error"] == "CSV request: not JSON"


def test_page_and_static_files_are_served(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        page = resp.read().decode()
    assert "/static/app.js" in page and 'id="files"' in page
    for name in ("app.js", "style.css"):
        with urllib.request.urlopen(f"{url}/static/{name}", timeout=30) as resp:
            assert resp.status == 200 and len(resp.read()) > 500
    status, info = _call(f"{url}/api/info")
    assert [r["name"] for r in info["runs"]] == ["run", "best.pt"]
    assert info["data"]["splits"]["train"] == {"images": 16, "labelled": True}


def test_cli_serve_errors_are_one_line(served, tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path / "nope"), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such run directory" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli_main(["serve", str(served[1]), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dirtymnist serve: error: cannot listen on 127.0.0.1:{port} (Address already in use)"


# --------------------------------------------------------------------------- browser
def _browser_or_skip():
    """Chromium + its driver + selenium, or a skip (a failure under CI=true: CI must run this)."""
    missing = [what for what, ok in (("chromium", shutil.which("chromium")),
                                     ("chromedriver", shutil.which("chromedriver")))
               if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra)")
    if missing:
        msg = f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {msg}")
        pytest.skip(msg)


def _wait(driver, check, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(check)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {check}")


@pytest.mark.browser
def test_page_in_browser(served, tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    data, run = served
    index = 17  # a test image: its letters come from `predict`
    ref = predict([run], data, split="test")
    expected = "".join(c for c, v in zip(layout.LETTERS, ref.pred[list(ref.index).index(index)]) if v)
    png = data / layout.TEST_DIR / layout.png_name(index)
    bad = tmp_path / "colour.png"
    cv2.imwrite(str(bad), np.zeros((256, 256, 3), np.uint8))

    # the run and its one checkpoint: two columns side by side, the same model
    # the server imports torch and loads the models first; launch() waits until it answers
    server, base = launch([run, run / "fold0" / "best.pt", "--data", data], timeout=60,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1100", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        driver.get(f"{base}/")
        _wait(driver, "return document.body.getAttribute('data-ready')")
        # the first screen: three test images with their letters from test_answer.csv
        _wait(driver, "return document.querySelectorAll('.card').length == 3 && "
                      "document.getElementById('status').getAttribute('data-pending') == '0'")
        heads = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".card-head")]
        assert all("true letters: " in h for h in heads), heads
        assert "p > 0.5 for every letter" in driver.find_element(By.ID, "rule").text
        assert not driver.find_element(By.ID, "pagecheck").is_displayed()  # instrumentation stays hidden
        driver.find_element(By.ID, "clear").click()
        driver.find_element(By.ID, "files").send_keys(str(png))
        _wait(driver, "return document.querySelectorAll('.card').length == 1 && "
                      "document.getElementById('status').getAttribute('data-pending') == '0'")
        shown = [e.get_attribute("data-letters") for e in driver.find_elements(By.CSS_SELECTOR, ".card .letters")]
        assert shown == [expected, expected]
        # clicking a letter shows its heat map in both columns
        other = next(c for c in "zyxwvutsrqponmlkjihgfedcba" if c != driver.find_element(
            By.CSS_SELECTOR, ".card").get_attribute("data-selected"))
        driver.find_element(By.CSS_SELECTOR, f".col[data-run='1'] .chip[data-j='{ord(other) - 97}']").click()
        assert driver.find_element(By.CSS_SELECTOR, ".card").get_attribute("data-selected") == other
        notes = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".heat-note")]
        assert len(notes) == 2 and all(n.startswith(f"heat map of '{other}'") for n in notes)
        top = int(ref.probs[list(ref.index).index(index)].argmax())  # back to the brightest map
        driver.find_element(By.CSS_SELECTOR, f".col[data-run='0'] .chip[data-j='{top}']").click()
        _wait(driver, "return Array.from(document.images).every(i => i.complete)")
        driver.execute_script("pageCheck()")
        check = driver.find_element(By.ID, "pagecheck")
        assert check.get_attribute("data-images") == check.get_attribute("data-loaded") == "2", \
            check.get_attribute("data-messages")
        assert check.get_attribute("data-errors") == "0", check.get_attribute("data-messages")
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe

        shot = tmp_path / "serve.png"
        assert driver.save_screenshot(str(shot))
        img = cv2.imread(str(shot))  # (H, W, 3) BGR
        assert img.std() > 10  # not a blank page
        b, g, r = (img[..., k].astype(int) for k in range(3))
        heat = (r > 150) & (r - g > 80) & (r - b > 100)  # the red-orange overlay on grey noise
        assert heat.sum() > 300, f"no heat map drawn ({heat.sum()} overlay pixels)"

        driver.find_element(By.ID, "files").send_keys(str(bad))
        _wait(driver, "return document.querySelectorAll('.message').length == 1")
        msg = driver.find_element(By.CSS_SELECTOR, ".message").text
        assert msg.startswith("colour.png: colour image (3 channels)")
        assert len(driver.find_elements(By.CSS_SELECTOR, ".card")) == 1
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(10)
