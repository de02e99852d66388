"""`dirtymnist serve`: the page's numbers are `predict`'s, bad uploads get a one-line message, the
CSV is the submission format, heat maps are the class maps; and (with headless Chromium) a PNG
uploaded through the page shows predict's letters and a heat map."""

from __future__ import annotations

import contextlib
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
from dirtymnist.infer.predict import PredictOptions, predict
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


@contextlib.contextmanager
def _running(app):
    """`app` under uvicorn (with serve's slow-client protocol) in a thread on a free port: its URL."""
    import uvicorn

    from dirtymnist.look.httpguard import slow_client_protocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=slow_client_protocol(10)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url(served):
    """The app of `served` under uvicorn in a thread on a free port (the run twice: compare)."""
    from dirtymnist.look.serve import build_app

    data, run = served
    with _running(build_app([run, run / "fold0" / "best.pt"], data)) as base:
        yield base


def _call(url: str, body: bytes | None = None, content_type: str = "application/octet-stream",
          headers: dict | None = None, full: bool = False):
    """(status, parsed JSON or text[, response headers]) of a GET (body None) or POST."""
    head = {"Content-Type": content_type} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers={**head, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw, got = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), err.headers
    parsed = json.loads(raw) if "json" in got.get("Content-Type", "") else raw.decode()
    return (status, parsed, got) if full else (status, parsed)


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
        "huge.png": (b"\x89PNG\r\n\x1a\n" + bytes(5 << 20), f"huge.png: {8 + (5 << 20)} bytes upload, more than 1048576 bytes (1 MB)"),
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


def test_multipart_upload_equals_raw(served, url):
    """curl -F file=@x.png (multipart/form-data) and a raw PNG body give the same answer."""
    data, _ = served
    png = (data / layout.TEST_DIR / layout.png_name(17)).read_bytes()
    form = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="00017.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--XyZ--\r\n")
    status, multi = _call(f"{url}/api/predict", form, "multipart/form-data; boundary=XyZ")
    assert status == 200, multi
    status, raw = _call(f"{url}/api/predict?name=00017.png", png, "image/png")
    assert status == 200 and multi == raw and multi["name"] == "00017.png"
    if shutil.which("curl"):  # what everyone types
        out = subprocess.run(["curl", "-sS", "-F", f"file=@{data / layout.TEST_DIR / '00017.png'}",
                              f"{url}/api/predict"], capture_output=True, text=True, timeout=60)
        assert json.loads(out.stdout) == raw


def test_every_answer_has_security_headers(url):
    for path in ("/", "/api/info", "/static/app.js", "/api/data/train/%C2%B2", "/nowhere"):
        _, _, got = _call(f"{url}{path}", full=True)
        assert got["X-Content-Type-Options"] == "nosniff" and got["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in got["Content-Security-Policy"], path


def test_odd_indices_are_404_in_one_line(url):
    for path in ("/api/data/train/%C2%B2", "/api/data/train/" + "9" * 5000, "/api/data/train/-1",
                 "/data/train/%C2%B2.png", "/api/data/nosuch/1"):
        status, res = _call(f"{url}{path}")
        assert status == 404 and "\n" not in res["error"] and "Error" not in res["error"], (path, res)
    status, res = _call(f"{url}/api/data/train?offset=1e999")
    assert status == 400 and res["error"] == "offset must be a whole number 0..999999999"


def test_foreign_host_and_cross_origin_posts_are_refused(served, url):
    port = url.rsplit(":", 1)[1]
    png = (served[0] / layout.TEST_DIR / layout.png_name(17)).read_bytes()
    status, res = _call(f"{url}/api/info", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and "--allowed-host" in res["error"]
    status, res = _call(f"{url}/api/predict", png, "image/png", headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in res["error"]
    status, res = _call(f"{url}/api/predict", png, "text/plain")  # a CORS "simple" request
    assert status == 415
    status, _ = _call(f"{url}/api/predict", png, "image/png", headers={"Origin": url})  # the page itself
    assert status == 200
    status, _ = _call(f"{url}/api/info", headers={"Host": f"localhost:{port}"})
    assert status == 200


def test_no_absolute_paths_in_answers(served, url):
    data, run = served
    status, info = _call(f"{url}/api/info")
    assert status == 200
    text = json.dumps(info)
    assert str(data) not in text and str(run) not in text and str(run.parent) not in text
    assert info["runs"][0]["members"] == ["fold0/best.pt"] and info["data"]["root"] == "data"


def test_token_and_allowed_hosts(served):
    from dirtymnist.look.serve import build_app

    data, run = served
    with _running(build_app([run], data, token="s3cret", allowed_hosts=["dm.example"])) as base:
        port = base.rsplit(":", 1)[1]
        status, res = _call(f"{base}/api/info")
        assert status == 403 and "token" in res["error"]
        assert _call(f"{base}/api/info", headers={"Authorization": "Bearer s3cret"})[0] == 200
        status, _, got = _call(f"{base}/?token=s3cret", full=True)
        assert status == 200 and f"dirtymnist_token_{port}=s3cret" in got["Set-Cookie"]
        assert "HttpOnly" in got["Set-Cookie"] and "SameSite=Strict" in got["Set-Cookie"]
        assert _call(f"{base}/api/info", headers={"Cookie": f"dirtymnist_token_{port}=s3cret"})[0] == 200
        assert _call(f"{base}/api/info", headers={"Cookie": f"dirtymnist_token_{port}=wrong"})[0] == 403
        status, _ = _call(f"{base}/api/info?token=s3cret", headers={"Host": f"dm.example:{port}"})
        assert status == 200


def test_page_rule_is_predicts(served):
    """--thresholds as predict takes it: the same letters; the page names the rule."""
    from dirtymnist.look.serve import Inference, decision_rule

    data, run = served
    ref = predict([run], data, split="test", options=PredictOptions(thresholds="0.3:count"))
    infer = Inference([run], thresholds="0.3:count")
    images = np.stack([cv2.imread(str(data / layout.TEST_DIR / layout.png_name(i)), cv2.IMREAD_GRAYSCALE)
                       for i in ref.index])
    assert (infer(images)[0]["pred"] == ref.pred).all()
    assert decision_rule(infer.thresholds) == "p > 0.3 for every letter, count-aware decoding"
    assert decision_rule(Inference([run]).thresholds) == "p > 0.5 for every letter"


def test_cli_refuses_a_remote_host_without_token(served, capsys):
    assert cli_main(["serve", str(served[1]), "--host", "0.0.0.0", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--token" in err and "--public" in err


def test_failed_requests_log_one_line_each(served, url, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="dirtymnist.look.serve"):
        _call(f"{url}/api/predict?name=a.png", b"nope", "image/png")
        _call(f"{url}/api/data/train/%C2%B2")
        time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "-> 400 a.png: not a PNG file" in lines[0] and "-> 404" in lines[1]


# --------------------------------------------------------------------------- review fixes
def _fd2() -> tuple[int, int]:
    st = os.fstat(2)
    return st.st_dev, st.st_ino


def test_quiet_stderr_is_thread_safe():
    """Threads in `_quiet_stderr` at once: fd 2 is where it was once all are out."""
    from dirtymnist.data.dataset import decode_bytes
    from dirtymnist.errors import DataError

    before = _fd2()
    bad = np.frombuffer(_png(np.full((256, 256), 7, np.uint8))[:80], np.uint8)
    good = np.frombuffer(_png(np.full((256, 256), 7, np.uint8)), np.uint8)

    def hammer():
        for i in range(300):
            with contextlib.suppress(DataError):
                decode_bytes(bad if i % 2 else good, "x.png")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _fd2() == before


def test_uploads_decode_without_touching_stderr(monkeypatch, capfd):
    """An upload is checked whole first, so its decode needs no stderr redirect (which would
    swallow the server's log lines meanwhile) and libpng has nothing to say."""
    import dirtymnist.data.dataset as dataset
    from dirtymnist.errors import DataError
    from dirtymnist.look.uploads import decode_upload

    def no_redirect():
        raise AssertionError("an upload's decode redirected stderr")

    monkeypatch.setattr(dataset, "_quiet_stderr", no_redirect)
    img = (np.arange(256 * 256) % 251).astype(np.uint8).reshape(256, 256)
    png = bytearray(_png(img))
    np.testing.assert_array_equal(decode_upload(bytes(png), "ok.png"), img)
    at = png.find(b"IDAT") + 20
    corrupt = bytes(png[:at]) + bytes(20) + bytes(png[at + 20:])
    for name, data in {"crc.png": corrupt, "cut.png": bytes(png[:200]), "noend.png": bytes(png[:-12])}.items():
        with pytest.raises(DataError, match=f"^{name}: not a readable image"):
            decode_upload(data, name)
    assert capfd.readouterr().err == ""


def _guard_app(route, **rules):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from dirtymnist.look.httpguard import Guard, GuardRules

    return Starlette(routes=[Route("/x", route)], middleware=[Middleware(Guard, GuardRules(**rules))])


def test_unexpected_errors_are_json_500s_not_disconnects(caplog):
    import logging

    async def gone(request):
        raise FileNotFoundError(2, "No such file or directory")

    with _running(_guard_app(gone)) as base, caplog.at_level(logging.WARNING, logger="dirtymnist.look.serve"):
        status, res, got = _call(f"{base}/x", full=True)
        time.sleep(0.2)
    assert status == 500 and res["error"].startswith("internal error (FileNotFoundError"), res
    assert got["X-Content-Type-Options"] == "nosniff"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "-> 500" in lines[0] and "client went away" not in lines[0], lines


def test_a_data_file_removed_under_the_server(served, tmp_path):
    from dirtymnist.look.serve import build_app

    data, run = served
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    with _running(build_app([run], copy)) as base:
        png = (copy / layout.TRAIN_DIR / "00001.png").read_bytes()
        (copy / layout.TRAIN_DIR / "00001.png").unlink()
        status, res = _call(f"{base}/api/predict?name=00001.png", png)
        assert status == 200 and res["truth"] is None, res
        status, res = _call(f"{base}/data/train/00001.png")
        assert status == 404 and res == {"error": "00001.png: image no longer in the data folder"}
        status, res = _call(f"{base}/api/data/train/1")
        assert status in (400, 404) and "\n" not in res["error"] and str(tmp_path) not in res["error"], res


def test_cli_refuses_bad_port_timeout_and_empty_token(served, capsys):
    run = str(served[1])
    for argv in (["--port", "70000"], ["--port", "-1"], ["--timeout", "0"], ["--timeout", "nan"],
                 ["--timeout", "inf"], ["--timeout", "-2"]):
        with pytest.raises(SystemExit) as stop:
            cli_main(["serve", run, *argv])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"argument {argv[0]}" in err.strip().splitlines()[-1], err
    assert cli_main(["serve", run, "--token", "", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--token is empty" in err


def test_token_cookie_is_per_port(served):
    """Two servers with tokens on one host: the browser sends both cookies (cookies ignore the
    port), each server finds its own."""
    from dirtymnist.look.serve import build_app

    data, run = served
    with _running(build_app([run], token="aaa")) as a, _running(build_app([run], token="bbb")) as b:
        pa, pb = a.rsplit(":", 1)[1], b.rsplit(":", 1)[1]
        cookie_a = _call(f"{a}/?token=aaa", full=True)[2]["Set-Cookie"].split(";")[0]
        cookie_b = _call(f"{b}/?token=bbb", full=True)[2]["Set-Cookie"].split(";")[0]
        assert cookie_a == f"dirtymnist_token_{pa}=aaa" and cookie_b == f"dirtymnist_token_{pb}=bbb"
        both = {"Cookie": f"{cookie_a}; {cookie_b}"}
        assert _call(f"{a}/api/info", headers=both)[0] == 200 and _call(f"{b}/api/info", headers=both)[0] == 200
        assert _call(f"{b}/api/info", headers={"Cookie": cookie_a})[0] == 403
        assert _call(f"{a}/?token=aab", full=True)[2].get("Set-Cookie") is None


def test_log_lines_cannot_be_forged(url, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="dirtymnist.look.serve"):
        _call(f"{url}/x%0Aserve:%20127.0.0.1:1%20GET%20/%20-%3E%20200%0D")
        time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0], lines
    assert "/x\\nserve: 127.0.0.1:1 GET / -> 200\\r" in lines[0], lines


def test_loopback_and_host_names():
    from dirtymnist.look.httpguard import host_name, is_loopback

    for name in ("localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost:7860", "[::1]:80"):
        assert is_loopback(name), name
    for name in ("127.evil.com", "127.0.0.1.nip.io", "localhost.evil.com", "0.0.0.0", "::", "",
                 "localhost:80@evil.com", "127.0.0.1:x"):
        assert not is_loopback(name), name
    assert host_name("LocalHost:7860") == "localhost" and host_name("[::1]:7860") == "::1"
    for bad in ("localhost:80@evil.com", "localhost:", "localhost:8o", "[::1]x", "[evil]:80", "a b", "x:1:2"):
        assert host_name(bad) == "", bad


def test_odd_host_headers_are_refused(served, url):
    port = url.rsplit(":", 1)[1]
    for host in ("127.evil.com", f"127.0.0.1.nip.io:{port}", f"localhost:{port}@evil.com", "localhost:80 x"):
        status, res = _call(f"{url}/api/info", headers={"Host": host})
        assert status == 403 and "--allowed-host" in res["error"], (host, res)
    assert _call(f"{url}/api/info", headers={"Host": f"[::1]:{port}"})[0] == 200
    assert cli_main(["serve", str(served[1]), "--host", "127.example.com", "--port", str(_free_port())]) == 2


def test_cross_site_gets_are_refused_but_links_to_the_page(url):
    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    for path in ("/api/data/test/17", "/data/test/00017.png", "/api/info", "/"):
        for site in ("cross-site", "same-site"):
            status, res = _call(f"{url}{path}", headers={**cross, "Sec-Fetch-Site": site})
            assert status == 403 and res["error"] == "cross-site request refused", (path, site, res)
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert _call(f"{url}/", headers=navigate)[0] == 200  # a link to the page from elsewhere
    assert _call(f"{url}/api/info", headers=navigate)[0] == 403
    own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    req = urllib.request.Request(f"{url}/data/test/00017.png", headers=own)
    with urllib.request.urlopen(req, timeout=30) as resp:  # the page's own <img>
        assert resp.status == 200 and resp.read().startswith(b"\x89PNG")
    assert _call(f"{url}/api/info", headers={"Sec-Fetch-Site": "none"})[0] == 200  # typed in the address bar


def test_messages_hide_the_folders_above_a_symlinked_path(tmp_path):
    from dirtymnist.look.serve import _hide_paths

    real = tmp_path / "real" / "data"
    real.mkdir(parents=True)
    link = tmp_path / "links" / "link"
    link.parent.mkdir()
    link.symlink_to(real)
    public = _hide_paths([link])
    for given in (link, link.resolve(), tmp_path / "links" / ".." / "links" / "link"):
        shown = public(f"{given}/test/00001.png: image not found")
        assert str(tmp_path) not in shown, shown


def test_raw_upload_just_over_the_limit_is_413_exactly(url):
    from dirtymnist.look.uploads import MAX_UPLOAD_BYTES

    body = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES + 1 - 8)
    status, res = _call(f"{url}/api/predict?name=big.png", body, "image/png")
    assert status == 413 and res["error"] == f"big.png: {MAX_UPLOAD_BYTES + 1} bytes upload, more than " \
                                              f"{MAX_UPLOAD_BYTES} bytes (1 MB)", res
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    status, res = _call(f"{url}/api/predict", form, f"multipart/form-data; boundary={boundary}")
    assert status == 413 and res["error"].startswith(f"f.png: {MAX_UPLOAD_BYTES + 1} bytes upload"), res


def test_an_upload_takes_one_queue_slot(served, url, monkeypatch):
    from dirtymnist.look.serve import _Queue

    calls = []
    run = _Queue.run

    async def counted(self, fn, *args):
        calls.append(fn)
        return await run(self, fn, *args)

    monkeypatch.setattr(_Queue, "run", counted)
    png = (served[0] / layout.TEST_DIR / layout.png_name(17)).read_bytes()
    status, res = _call(f"{url}/api/predict?name={layout.png_name(17)}", png)
    assert status == 200 and res["truth"] is not None and len(calls) == 1


def test_unparsable_requests_get_json_and_headers(url):
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"x-content-type-options: nosniff" in head.lower(), raw
    assert json.loads(body)["error"].startswith("bad request"), body


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
