"""A local web page to look at a model: drop PNGs, see the 26 probabilities, the letters and heat maps.

    dirtymnist serve runs/cpu [runs/other ...] --data data/ --port 7860    # http://127.0.0.1:7860

Starlette + uvicorn and one static page (`serve_static/`): a light install (no gradio-size
dependency tree), no front-end build, nothing loaded from the network. Probabilities come from
`ensemble.ensemble_probs` (the `predict` code path, models kept loaded) and letters from the
run's `Thresholds.apply`; heat maps from the class maps (`heatmaps.py`). Bad uploads answer
400 with a one-line message the page shows.
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

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 4 << 20  # a noisy 256x256 8-bit PNG is ~64 KB; 16-bit RGBA ~0.5 MB
DRAIN_BYTES = 64 << 20  # a larger upload is cut off without reading it all
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STATIC = Path(__file__).with_name("serve_static")
DATA_PAGE = 200  # most data-folder indices one listing returns


@dataclass
class ServedRun:
    """One RUN argument: its models, thresholds (RUN/thresholds.json, else 0.5) and name."""

    name: str
    members: list[Path]
    thresholds: Thresholds


class Inference:
    """The page's runs with their models loaded once; one request computes at a time."""

    def __init__(self, runs: Sequence[str | os.PathLike], tta: str = "none", device: str | None = None):
        import torch

        from dirtymnist.infer.loader import tta_views
        from dirtymnist.infer.thresholds import run_thresholds
        from dirtymnist.model.precision import choose_device
        from dirtymnist.rundir import model_files

        if not runs:
            raise ConfigError("give at least one RUN (run directory or checkpoint)")
        tta_views(tta)  # an unknown preset fails here, before the server starts
        self.tta = tta
        self.device = choose_device() if device is None else torch.device(device)
        names = [Path(r).name or str(r) for r in runs]
        self.runs = []
        for run, name in zip(runs, names):
            label = name if names.count(name) == 1 else str(run)
            self.runs.append(ServedRun(label, model_files(run), run_thresholds(run)))
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
                out.append({"probs": probs, "pred": run.thresholds.apply(probs),
                             "maps": mean_maps(loaded, images, self.device)})
        return out

    def info(self) -> list[dict]:
        return [{"name": r.name, "members": [str(p) for p in r.members],
                 "thresholds": [round(float(t), 4) for t in r.thresholds.values],
                 "decode": r.thresholds.decode, "threshold_source": r.thresholds.source,
                 "tta": self.tta} for r in self.runs]


# --------------------------------------------------------------------------- uploads
def decode_upload(data: bytes, name: str) -> np.ndarray:
    """(256, 256) uint8 of an uploaded PNG; DataError naming it unless 8-bit grey 256x256 PNG."""
    from dirtymnist.data.dataset import decode_bytes

    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"{name}: {len(data) / (1 << 20):.0f} MB upload, more than {MAX_UPLOAD_BYTES >> 20} MB")
    if not data.startswith(PNG_MAGIC):
        raise DataError(f"{name}: not a PNG file")
    img, channels = decode_bytes(np.frombuffer(data, np.uint8), name)
    if channels != 1:
        raise DataError(f"{name}: colour image ({channels} channels); the models read 8-bit grayscale "
                        f"like the competition's images")
    return img


def index_of(name: str) -> int | None:
    """Competition index of a file name like `50000.png`, else None."""
    m = re.fullmatch(r"(\d+)\.png", Path(name).name, flags=re.IGNORECASE)
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
    if len(index) == 0:
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
        return {"root": str(self.root),
                "splits": {s: {"images": len(f), "labelled": f.labels is not None}
                           for s, f in self.splits.items()}}

    def find(self, split: str, index: int) -> tuple[Path, np.ndarray | None]:
        files = self.splits.get(split)
        if files is None:
            raise DataError(f"{self.root}: no {split} split")
        pos = np.flatnonzero(files.index == index)
        if not len(pos):
            raise DataError(f"{files.folder}: no image {index}")
        labels = None if files.labels is None else files.labels[pos[0]]
        return files.paths[pos[0]], labels


def build_app(runs: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None, *,
              tta: str = "none", device: str | None = None):
    """The Starlette app of the page (`serve` runs it with uvicorn; tests too)."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import FileResponse, JSONResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles
    except ImportError:
        raise ConfigError("serve needs starlette and uvicorn: pip install 'dirtymnist[serve]'") from None

    infer = Inference(runs, tta, device)
    data = _DataFolder(data_dir) if data_dir is not None else None

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request):
        return FileResponse(STATIC / "index.html")

    async def info(request):
        return JSONResponse({"runs": infer.info(), "letters": layout.LETTERS,
                             "data": data.info() if data else None,
                             "max_upload_bytes": MAX_UPLOAD_BYTES})

    async def predict_upload(request):
        name = Path(request.query_params.get("name", "upload.png")).name[:200] or "upload.png"
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= MAX_UPLOAD_BYTES:
                chunks.append(chunk)
            elif size > DRAIN_BYTES:
                break  # past this, the client may see a reset instead of the message
        if size > MAX_UPLOAD_BYTES:
            # read (and dropped) to the end, so that the client gets this answer, not a reset
            return error(413, f"{name}: {size / (1 << 20):.0f} MB upload, more than "
                              f"{MAX_UPLOAD_BYTES >> 20} MB")
        img = decode_upload(b"".join(chunks), name)
        per_run = await run_in_threadpool(infer, img[None])
        return JSONResponse(result_json(name, index_of(name), None, per_run))

    def _split_index(request) -> tuple[str, int]:
        split, raw = request.path_params["split"], request.path_params["index"]
        if not raw.isdigit():
            raise DataError(f"{raw}: not an image index")
        return split, int(raw)

    async def data_list(request):
        if data is None:
            return error(404, "no data folder: start with --data DIR")
        files = data.splits.get(request.path_params["split"])
        if files is None:
            return error(404, f"no {request.path_params['split']} split in {data.root}")
        try:
            offset = int(request.query_params.get("offset", 0))
            limit = min(int(request.query_params.get("limit", 24)), DATA_PAGE)
        except ValueError:
            return error(400, "offset and limit must be integers")
        return JSONResponse({"index": [int(i) for i in files.index[max(offset, 0):max(offset, 0) + max(limit, 0)]],
                             "total": len(files)})

    async def data_predict(request):
        from dirtymnist.data.dataset import read_image

        if data is None:
            return error(404, "no data folder: start with --data DIR")
        split, i = _split_index(request)
        path, truth = data.find(split, i)
        img = read_image(path)
        per_run = await run_in_threadpool(infer, img[None])
        return JSONResponse(result_json(path.name, i, truth, per_run))

    async def data_png(request):
        if data is None:
            return error(404, "no data folder: start with --data DIR")
        split, raw = request.path_params["split"], request.path_params["name"].removesuffix(".png")
        if not raw.isdigit():
            return error(404, "not an image")
        path, _ = data.find(split, int(raw))
        return FileResponse(path, media_type="image/png")

    async def csv(request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "CSV request: not JSON")
        text = submission_csv(body)
        return Response(text, media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="predictions.csv"'})

    async def on_data_error(request, exc: DataError):
        return error(400, str(exc))

    async def on_any_error(request, exc: Exception):
        # never a traceback on the page: one line there, the details in the server's log
        log.exception("serve: %s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/predict", predict_upload, methods=["POST"]),
        Route("/api/data/{split}", data_list),
        Route("/api/data/{split}/{index}", data_predict),
        Route("/data/{split}/{name}", data_png),
        Route("/api/csv", csv, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={DataError: on_data_error, ConfigError: on_data_error,
                                                        Exception: on_any_error})


def serve(runs: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None, *,
          host: str = "127.0.0.1", port: int = 7860, tta: str = "none", device: str | None = None) -> None:
    """Run the page until interrupted (Ctrl-C). Binds to 127.0.0.1 unless `host` says otherwise."""
    import socket

    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve needs starlette and uvicorn: pip install 'dirtymnist[serve]'") from None
    # bind first: a busy port is a one-line error before any model loads
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    try:
        app = build_app(runs, data_dir, tta=tta, device=device)
        log.info("serving %d run(s) on http://%s:%d (Ctrl-C stops)", len(runs), host, sock.getsockname()[1])
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()


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
