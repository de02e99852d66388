"""A local web page to look at a model: drop PNGs, see the 26 probabilities, the letters and heat maps.

    dirtymnist serve runs/cpu [runs/other ...] --data data/ --port 7860    # http://127.0.0.1:7860

Starlette + uvicorn and one static page (`serve_static/`): a light install (no gradio-size
dependency tree), no front-end build, nothing loaded from the network. Probabilities come from
`ensemble.ensemble_probs` (the `predict` code path, models kept loaded) and letters from the
same decision rule as `predict` (`--thresholds`, default 0.5); heat maps from the class maps
(`heatmaps.py`). Uploads are checked by their PNG header before any decode (`pngheader.py`),
decoded and predicted off the event loop behind a bounded queue; Host, Origin, body limits,
deadlines and headers are `httpguard.py`'s. Every bad request is a 4xx with a one-line message.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.errors import ConfigError, DataError
from dirtymnist.infer.thresholds import Thresholds
from dirtymnist.look.httpguard import FORM_TYPE, Refusal, too_large
from dirtymnist.look.uploads import MAX_UPLOAD_BYTES, MULTIPART_SLACK, RAW_TYPES

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("serve_static")
DATA_PAGE = 200  # most data-folder indices one listing returns
CSV_BODY_BYTES = 2 << 20  # the JSON of 10,000 images' letters is ~1 MB
MAX_QUEUED = 64  # uploads decoded / predicted or waiting for it; more: 503, try again
MAX_CONNECTIONS = 128  # uvicorn answers 503 past this many open connections
INDEX_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits only (str.isdigit also takes '²'), bounded


@dataclass
class ServedRun:
    """One RUN argument: its name and model files (relative to it, as the page shows them)."""

    name: str
    members: list[Path]
    shown: list[str]


def decision_rule(thr: Thresholds) -> str:
    """The decision rule in words, as the page shows it (the one `predict` applies)."""
    decoding = ", count-aware decoding" if thr.decode == "count" else ""
    try:
        return f"p > {float(thr.source):g} for every letter{decoding}"
    except ValueError:  # a thresholds.json, or fitted now
        if thr.source == "fit":
            return f"per-letter thresholds fitted on the runs' out-of-fold probabilities{decoding}"
        return f"per-letter thresholds of {Path(thr.source).name}{decoding}"


class Inference:
    """The page's runs with their models loaded once; one request computes at a time. Letters
    are decided by one rule for every run: `thresholds` as `predict --thresholds` takes it."""

    def __init__(self, runs: Sequence[str | os.PathLike], tta: str = "none", device: str | None = None,
                 thresholds: str | float | Thresholds = "0.5", data_dir: str | os.PathLike | None = None):
        import torch

        from dirtymnist.infer.loader import tta_views
        from dirtymnist.infer.thresholds import parse_thresholds
        from dirtymnist.model.precision import choose_device
        from dirtymnist.rundir import model_files

        if not runs:
            raise ConfigError("give at least one RUN (run directory or checkpoint)")
        tta_views(tta)  # an unknown preset fails here, before the server starts
        self.tta = tta
        self.thresholds = parse_thresholds(thresholds, runs, data_dir)
        self.device = choose_device() if device is None else torch.device(device)
        names = [Path(r).name or str(r) for r in runs]
        self.runs = []
        for run, name in zip(runs, names):
            label = name if names.count(name) == 1 else str(run)
            members = model_files(run)
            shown = [_shown_path(p, Path(run)) for p in members]
            self.runs.append(ServedRun(label, members, shown))
        self._models: dict[Path, object] = {}
        self._lock = threading.Lock()
        for run in self.runs:  # load now: a broken checkpoint fails at start, not on the page
            for path in run.members:
                self._load(path, self.device)

    def _load(self, path: Path, device):
        """`loader.open_model`, once per model file."""
        from dirtymnist.infer.loader import open_model

        if path not in self._models:
            self._models[path] = open_model(path, device)
        return self._models[path]

    def __call__(self, images: np.ndarray) -> list[dict]:
        """Per run: probs (N, 26) float32, pred (N, 26) uint8, maps (N, 26, h, w) float32 or None."""
        from dirtymnist.infer.ensemble import ensemble_probs
        from dirtymnist.look.heatmaps import mean_maps

        out = []
        with self._lock:
            for run in self.runs:
                probs = ensemble_probs([run.members], images, tta=self.tta, device=self.device, load=self._load)
                loaded = [(self._models[p].net, self._models[p].config) for p in run.members]
                out.append({"probs": probs, "pred": self.thresholds.apply(probs),
                            "maps": mean_maps(loaded, images, self.device)})
        return out

    def info(self) -> list[dict]:
        thr = self.thresholds
        return [{"name": r.name, "members": r.shown,
                 "thresholds": [round(float(t), 4) for t in thr.values],
                 "decode": thr.decode, "threshold_source": Path(thr.source).name,
                 "tta": self.tta} for r in self.runs]


def _shown_path(path: Path, run: Path) -> str:
    """A model file as the page names it: relative to its RUN argument, never absolute."""
    try:
        return str(path.relative_to(run)) if run.is_dir() else path.name
    except ValueError:
        return path.name


def index_of(name: str) -> int | None:
    """Competition index of a file name like `50000.png`, else None."""
    m = re.fullmatch(r"([0-9]{1,9})\.png", Path(name).name, flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


def result_json(name: str, index: int | None, truth: np.ndarray | None, per_run: list[dict],
                row: int = 0) -> dict:
    """What the page shows of image `row` of one inference: JSON-ready."""
    runs = []
    for r in per_run:
        maps = r["maps"]
        heat = None
        if maps is not None:
            m = maps[row]  # (26, h, w) in [0, 1]; sent as bytes: 26 x h x w, 0..255, base64
            q = np.clip(np.rint(m * 255), 0, 255).astype(np.uint8)
            heat = {"h": int(m.shape[1]), "w": int(m.shape[2]),
                    "data": base64.b64encode(q.tobytes()).decode()}
        runs.append({"probs": [round(float(p), 5) for p in r["probs"][row]],
                     "pred": [int(v) for v in r["pred"][row]], "heat": heat})
    return {"name": name, "index": index,
            "truth": None if truth is None else [int(v) for v in truth], "runs": runs}


def submission_csv(body) -> str:
    """The submission-format CSV of `{"index": [...], "pred": [[26 x 0/1], ...]}`."""
    from dirtymnist.submission import format_submission

    if not isinstance(body, dict) or not isinstance(body.get("index"), list) or not isinstance(body.get("pred"), list):
        raise DataError("CSV request: needs JSON {index: [...], pred: [[0/1 x 26], ...]}")
    try:
        index = np.array(body["index"], dtype=np.int64)
        pred = np.array(body["pred"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError("CSV request: index must be integers and pred rows 26 0/1 integers") from None
    if index.ndim != 1 or len(index) == 0:
        raise DataError("CSV request: no images with a competition index (a name like 50000.png)")
    if len(np.unique(index)) != len(index):
        raise DataError("CSV request: the same image index appears twice")
    try:
        return format_submission(index, pred)
    except ValueError as exc:
        raise DataError(f"CSV request: {exc}") from None


# --------------------------------------------------------------------------- the app
class _DataFolder:
    """The images of --data: train (with their letters) and test (with test_answer.csv if any)."""

    def __init__(self, data_dir: str | os.PathLike):
        from dirtymnist.data.dataset import DataPaths, list_split

        paths = DataPaths.from_root(data_dir)
        self.root = paths.root
        self.splits = {}
        for split in ("train", "test"):
            try:
                self.splits[split] = list_split(paths, split)
            except (DataError, FileNotFoundError) as exc:
                log.warning("serve: no %s images (%s)", split, exc)
        if not self.splits:
            raise DataError(f"{data_dir}: neither training nor test images could be listed")

    def info(self) -> dict:
        return {"root": self.root.name,
                "splits": {s: {"images": len(f), "labelled": f.labels is not None}
                           for s, f in self.splits.items()}}

    def find(self, split: str, index: int) -> tuple[Path, np.ndarray | None]:
        files = self.splits.get(split)
        if files is None:
            raise Refusal(404, f"no {split[:20]!r} split in the data folder")
        pos = np.flatnonzero(files.index == index)
        if not len(pos):
            raise Refusal(404, f"{split}: no image {index}")
        labels = None if files.labels is None else files.labels[pos[0]]
        return files.paths[pos[0]], labels

    def truth_of(self, index: int | None, data: bytes) -> np.ndarray | None:
        """The true letters of an upload that is byte for byte the data folder's image `index`
        (None too when that file cannot be read now)."""
        if index is None:
            return None
        for files in self.splits.values():
            pos = np.flatnonzero(files.index == index)
            if not len(pos) or files.labels is None:
                continue
            try:
                same = files.paths[pos[0]].read_bytes() == data
            except OSError:
                continue
            if same:
                return files.labels[pos[0]]
        return None


class _Queue:
    """Decode + predict jobs run in two worker threads, off the event loop (fewer threads, less
    contention for the GIL with the loop); at most `size` jobs are admitted (computing or
    waiting), the next is told to try again (503)."""

    def __init__(self, size: int = MAX_QUEUED, threads: int = 2):
        import anyio

        self.size, self.pending = size, 0
        self.threads = anyio.CapacityLimiter(threads)

    async def run(self, fn, *args):
        import anyio.to_thread

        if self.pending >= self.size:
            raise Refusal(503, f"busy: {self.pending} images queued; try again in a moment")
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)
        finally:
            self.pending -= 1


class _Routes:
    """The page's HTTP API (docs/usage.md: "The HTTP API"); every route answers JSON, errors as
    `{"error": one line}` through `httpguard.Guard`."""

    def __init__(self, infer: Inference, data: _DataFolder | None):
        self.infer, self.data, self.queue = infer, data, _Queue()

    async def index(self, request):
        from starlette.responses import FileResponse

        return FileResponse(STATIC / "index.html")

    async def info(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"runs": self.infer.info(), "letters": layout.LETTERS,
                             "rule": decision_rule(self.infer.thresholds),
                             "data": self.data.info() if self.data else None,
                             "max_upload_bytes": MAX_UPLOAD_BYTES})

    async def predict_upload(self, request):
        from starlette.responses import JSONResponse

        from dirtymnist.look.uploads import decode_upload, upload_png

        body = await request.body()  # the guard holds it to MAX_UPLOAD_BYTES (+ a form's slack)
        data, name = upload_png(body, request.headers.get("content-type", ""), request.query_params.get("name"))
        if len(data) > MAX_UPLOAD_BYTES:  # a form's file part within the slack, over the limit
            raise Refusal(413, too_large(name, len(data), MAX_UPLOAD_BYTES))
        index = index_of(name)

        def work():  # one queue slot: decode, predict and the truth lookup
            img = decode_upload(data, name)  # header first: no bomb reaches the decoder
            per_run = self.infer(img[None])
            return per_run, self.data.truth_of(index, data) if self.data else None

        per_run, truth = await self.queue.run(work)
        return JSONResponse(result_json(name, index, truth, per_run))

    def _data(self) -> _DataFolder:
        if self.data is None:
            raise Refusal(404, "no data folder: start serve with --data DIR")
        return self.data

    async def data_list(self, request):
        from starlette.responses import JSONResponse

        split = request.path_params["split"]
        files = self._data().splits.get(split)
        if files is None:
            raise Refusal(404, f"no {split[:20]!r} split in the data folder")
        offset = _query_int(request, "offset", 0)
        limit = min(_query_int(request, "limit", 24), DATA_PAGE)
        return JSONResponse({"index": [int(i) for i in files.index[offset:offset + limit]],
                             "total": len(files)})

    async def data_predict(self, request):
        from starlette.responses import JSONResponse

        from dirtymnist.data.dataset import read_image

        split, i = request.path_params["split"], _path_index(request.path_params["index"])
        path, truth = self._data().find(split, i)
        per_run = await self.queue.run(lambda: self.infer(read_image(path)[None]))
        return JSONResponse(result_json(path.name, i, truth, per_run))

    async def data_png(self, request):
        import anyio
        from starlette.responses import Response

        raw = request.path_params["name"]
        if not raw.lower().endswith(".png"):
            raise Refusal(404, "not an image (a name like 00004.png)")
        path, _ = self._data().find(request.path_params["split"], _path_index(raw[:-4]))
        try:  # read whole (an image is tens of KB): a file gone since the listing is a 404, not a 500
            body = await anyio.Path(path).read_bytes()
        except OSError:
            raise Refusal(404, f"{path.name}: image no longer in the data folder") from None
        return Response(body, media_type="image/png")

    async def csv(self, request):
        import json

        from starlette.responses import Response

        try:
            body = json.loads(await request.body())
        except ValueError:
            raise DataError("CSV request: not JSON") from None
        text = submission_csv(body)
        return Response(text, media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="predictions.csv"'})


def _path_index(raw: str) -> int:
    if not INDEX_RE.fullmatch(raw):
        raise Refusal(404, f"{raw[:20]!r}{'...' if len(raw) > 20 else ''}: not an image index (0-9, at most 9 digits)")
    return int(raw)


def _query_int(request, key: str, default: int) -> int:
    raw = request.query_params.get(key, str(default))
    if not INDEX_RE.fullmatch(raw):
        raise Refusal(400, f"{key} must be a whole number 0..999999999")
    return int(raw)


def build_app(runs: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None, *,
              tta: str = "none", device: str | None = None, thresholds: str | float | Thresholds = "0.5",
              allowed_hosts: Sequence[str] = (), token: str | None = None, timeout: float = 10.0):
    """The Starlette app of the page (`serve` runs it with uvicorn; tests too). `allowed_hosts`:
    Host header names accepted besides the loopback ones ("*": any); `token`: needed by every
    request when given; `timeout`: seconds a client has to send a request's body."""
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles
    except ImportError:
        raise ConfigError("serve needs starlette and uvicorn: pip install 'dirtymnist[serve]'") from None
    from dirtymnist.look.httpguard import LOOPBACK_NAMES, Guard, GuardRules, host_name

    infer = Inference(runs, tta, device, thresholds, data_dir)
    data = _DataFolder(data_dir) if data_dir is not None else None
    r = _Routes(infer, data)
    routes = [
        Route("/", r.index),
        Route("/api/info", r.info),
        Route("/api/predict", r.predict_upload, methods=["POST"]),
        Route("/api/data/{split}", r.data_list),
        Route("/api/data/{split}/{index}", r.data_predict),
        Route("/data/{split}/{name}", r.data_png),
        Route("/api/csv", r.csv, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    rules = GuardRules(
        hosts=LOOPBACK_NAMES | {"*" if h == "*" else host_name(h) for h in allowed_hosts} - {""},
        token=token, timeout=timeout, form_slack=MULTIPART_SLACK,
        limits={"/api/predict": MAX_UPLOAD_BYTES, "/api/csv": CSV_BODY_BYTES},
        post_types={"/api/predict": (*RAW_TYPES, FORM_TYPE), "/api/csv": ("application/json",)},
        public=_hide_paths([*runs, *([data_dir] if data_dir else [])]))

    async def not_found(request, exc: HTTPException):
        return JSONResponse({"error": f"{request.url.path[:100]}: {exc.detail}"}, status_code=exc.status_code)

    return Starlette(routes=routes, middleware=[Middleware(Guard, rules)],
                     exception_handlers={HTTPException: not_found})


def _hide_paths(paths: Sequence[str | os.PathLike]):
    """A message with the folders above the served runs and data cut away (no absolute paths):
    above each path as given (made absolute) and above where it resolves to (a symlink)."""
    parents = {os.getcwd()}
    for p in paths:
        given = Path(p).expanduser()
        parents |= {str(given.absolute().parent), str(given.resolve().parent)}
        parents.add(os.path.normpath(given.absolute().parent))
    parents = sorted(parents, key=len, reverse=True)

    def public(text: str) -> str:
        for parent in parents:
            if parent != "/":
                text = text.replace(parent + os.sep, "")
        return text
    return public


def serve(runs: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None, *,
          host: str = "127.0.0.1", port: int = 7860, tta: str = "none", device: str | None = None,
          thresholds: str = "0.5", allowed_hosts: Sequence[str] = (), token: str | None = None,
          public: bool = False, timeout: float = 10.0) -> None:
    """Run the page until interrupted (Ctrl-C). Binds to 127.0.0.1 unless `host` says otherwise;
    another address needs a `token` ("auto": a random one, printed in the URL) or `public`."""
    import secrets

    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve needs starlette and uvicorn: pip install 'dirtymnist[serve]'") from None
    from dirtymnist.look.httpguard import is_loopback, slow_client_protocol

    if token is not None and not token.strip():
        raise ConfigError("--token is empty: give a token, or --token auto for a random one")
    if not is_loopback(host):
        if token is None and not public:
            raise ConfigError(f"--host {host} lets other machines use this server: give --token TOKEN "
                              f"(or --token auto), or --public to serve without one")
        log.warning("serve: listening on %s, reachable from other machines%s", host,
                    "" if token else " by anyone (--public, no token)")
    if token == "auto":
        token = secrets.token_urlsafe(24)
    if token:  # a rebinding page cannot know the token: any Host name may reach the server
        allowed_hosts = ["*"]
    elif host not in ("0.0.0.0", "::", ""):
        allowed_hosts = [*allowed_hosts, host]
    elif not is_loopback(host) and not allowed_hosts:
        log.warning("serve: only Host names localhost / 127.0.0.1 / ::1 are accepted; add the "
                    "name others reach this machine by with --allowed-host NAME")
    sock = _bind(host, port)  # first: a busy port is a one-line error before any model loads
    try:
        app = build_app(runs, data_dir, tta=tta, device=device, thresholds=thresholds,
                        allowed_hosts=allowed_hosts, token=token, timeout=timeout)
        shown = f"[{host}]" if ":" in host else host
        query = f"/?token={token}" if token else ""
        log.info("serving %d run(s) on http://%s:%d%s (Ctrl-C stops)", len(runs), shown,
                 sock.getsockname()[1], query)
        config = uvicorn.Config(app, log_level="warning", http=slow_client_protocol(timeout),
                                limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _bind(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def launch(argv: Sequence[str | os.PathLike], *, timeout: float = 120.0, **popen):
    """Start `dirtymnist serve ARGV` in a subprocess on a free loopback port and wait until it
    answers (it imports torch and loads its models first). Returns (process, base URL): for the
    benchmark, the screenshot script and the browser test, which drive the page from outside.
    `popen`: extra `subprocess.Popen` arguments (env, stdout...)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dirtymnist", "serve", *map(str, argv), "--port", str(port)],
                            **popen)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/info", timeout=5).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0]
                raise RuntimeError(f"dirtymnist serve did not start (exit {proc.returncode}): {out}") from None
            time.sleep(0.2)
