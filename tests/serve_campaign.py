"""Attack and load campaign against a running `dirtymnist serve`: loopback only, bounded in count and time.

Each case sends what an attacker (or a careless client) would: decompression bombs, huge bodies
on every route (declared and chunked), odd paths and indices, foreign Host / Origin /
Content-Type, stalled and idle connections, clients that vanish mid-upload, N parallel uploads.
Meanwhile a prober asks GET /api/info every 20 ms and the server's memory (VmRSS) is sampled
every 2 ms. A case passes when every answer is the expected one, in time, with peak memory
under 300 MB above the case's start, the server still up, the prober answered within 100 ms,
and one log line per refused request.

`tests/test_serve_attack.py` runs it in CI; `bench/serve_attack.py` prints the BENCHMARKS table.
"""

from __future__ import annotations

import json
import socket
import statistics
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mdtable

HOST = "127.0.0.1"
MB = 1 << 20
MAX_PEAK_MB = 300
MAX_OTHERS_MS = 100


# --------------------------------------------------------------------------- bombs
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_stream(total: int) -> bytes:
    """A valid zlib stream of `total` zero bytes, built in milliseconds: after a full flush the
    deflater emits the same bytes for the same block, so one block's output is repeated and the
    Adler-32 of zeros (a = 1, b = total mod 65521) is written directly."""
    block = bytes(MB)
    c = zlib.compressobj(9)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(total, len(block))
    tail = c.compress(bytes(rest)) + c.flush()
    body = first + again * (blocks - 1) + tail[:-4] if blocks else zlib.compress(bytes(rest))[:-4]
    return body + struct.pack(">I", ((total % 65521) << 16) | 1)


def bomb_png(width: int, height: int, depth: int = 8, colour: int = 0, pixels: tuple[int, int] | None = None) -> bytes:
    """A PNG whose header says `width` x `height` (`depth` bits, PNG colour type `colour`) and
    whose IDAT inflates to that many zero pixels, or to `pixels` = (w, h) of them (a lying header)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    w, h = pixels or (width, height)
    raw = (1 + w * channels * depth // 8) * h
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zero_stream(raw))
            + png_chunk(b"IEND", b""))


# --------------------------------------------------------------------------- raw HTTP
@dataclass
class Answer:
    status: str  # "200", "413", ... or "closed" / "reset" / "timeout"
    body: str = ""
    seconds: float = 0.0


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | Callable | None = None, timeout: float = 10.0, host: str = HOST) -> Answer:
    """One HTTP/1.1 request on a fresh connection. `body`: bytes, or a callable yielding chunks
    (sent while no answer has come: a server that answers early stops the sending)."""
    t0 = time.perf_counter()
    head = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
    if isinstance(body, bytes):
        head.setdefault("Content-Length", str(len(body)))
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        try:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            chunks = [body] if isinstance(body, bytes) else body() if body is not None else []
            for chunk in chunks:
                if _readable(s):
                    break
                s.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server answered early and closed: its answer may still be there to read
        except TimeoutError:
            return Answer("timeout", "", time.perf_counter() - t0)
        try:
            return _read_answer(s, t0)
        except TimeoutError:
            return Answer("timeout", "", time.perf_counter() - t0)


def _readable(s: socket.socket) -> bool:
    import select

    return bool(select.select([s], [], [], 0)[0])


def _read_answer(s: socket.socket, t0: float) -> Answer:
    data = b""
    try:
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
    except ConnectionResetError:
        if not data:
            return Answer("reset", "", time.perf_counter() - t0)
    if not data:
        return Answer("closed", "", time.perf_counter() - t0)
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return Answer(status, body.decode("utf-8", "replace"), time.perf_counter() - t0)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2:]
    return out


def chunked(total: int, piece: int = MB):
    """A body of `total` bytes in Transfer-Encoding: chunked pieces (no Content-Length)."""
    def gen():
        sent = 0
        while sent < total:
            n = min(piece, total - sent)
            yield f"{n:x}\r\n".encode() + bytes(n) + b"\r\n"
            sent += n
        yield b"0\r\n\r\n"
    return gen


def streamed(total: int, piece: int = MB):
    """A body of `total` bytes (declared with Content-Length) in pieces."""
    def gen():
        for start in range(0, total, piece):
            yield bytes(min(piece, total - start))
    return gen


# --------------------------------------------------------------------------- watching
class _Watch:
    """During one case: the server's VmRSS every 2 ms, GET /api/info every 20 ms."""

    def __init__(self, pid: int, port: int):
        self.pid, self.port = pid, port
        self.idle = self.peak = self._rss()
        self.latencies: list[float] = []
        self.probe_errors: list[str] = []
        self._stop = threading.Event()

    def _rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._rss())
            except OSError:
                return
            time.sleep(0.002)

    def _probe(self):
        while not self._stop.is_set():
            a = request(self.port, "GET", "/api/info", timeout=5)
            if a.status != "200":
                self.probe_errors.append(a.status)
            self.latencies.append(a.seconds)
            self._stop.wait(0.02)

    def __enter__(self):
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._sample, self._probe)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(10)


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    send: Callable[[int], list[Answer]]  # port -> the answers of this case's requests
    expect: set[str]  # the statuses allowed
    max_seconds: float = 1.0  # the slowest answer allowed
    logged: int | None = None  # log lines expected (default: one per answer >= 400 or closed)


@dataclass
class Row:
    case: str
    answers: str = ""
    peak_mb: float = 0.0
    seconds: float = 0.0
    up: bool = True
    others_ms: float = 0.0
    log_lines: int = 0
    problems: list[str] = field(default_factory=list)


def _times(n: int, fn: Callable[[], Answer], workers: int | None = None) -> list[Answer]:
    with ThreadPoolExecutor(workers or n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def build_cases(png: bytes, limit_png: int, timeout: float, parallel: int = 50) -> list[Case]:
    """The campaign. `png`: a valid upload; `limit_png`: the server's upload limit in bytes;
    `timeout`: the server's --timeout."""
    post = {"Content-Type": "image/png"}
    huge = 300 * MB
    at_limit = bomb_png(31000, 31000)
    assert len(at_limit) < limit_png, len(at_limit)

    def upload(body, headers=None, path="/api/predict?name=x.png"):
        return lambda port: [request(port, "POST", path, {**post, **(headers or {})}, body)]

    routes = [("GET", "/"), ("GET", "/api/info"), ("POST", "/api/predict"), ("POST", "/api/csv"),
              ("GET", "/api/data/train"), ("GET", "/api/data/train/1"), ("GET", "/data/train/00001.png"),
              ("GET", "/static/app.js")]
    types = {"/api/predict": post, "/api/csv": {"Content-Type": "application/json"}}
    odd = ["/api/data/train/%C2%B2", "/api/data/train/" + "9" * 5000, "/api/data/train/-1",
           "/api/data/..%2F..%2Fetc%2Fpasswd", "/data/train/..%2F..%2Fconfig.yaml", "/static/..%2F..%2Fserve.py",
           "/static/%2e%2e/%2e%2e/serve.py", "/api/data/nosuch/1", "/api/data/train?offset=1e999",
           "/api/data/train?limit=-1", "/data/train/%C2%B2.png", "/api/data/train/00001.png"]
    foreign = [("evil.example", {}, "GET", "/api/info", None),
               (HOST, {"Origin": "http://evil.example"}, "POST", "/api/predict", png),
               (HOST, {"Content-Type": "text/plain"}, "POST", "/api/predict", png),
               (HOST, {"Sec-Fetch-Site": "cross-site"}, "POST", "/api/predict", png),
               ("attacker.example", {}, "GET", "/", None)]

    def send_foreign(port):
        return [request(port, method, path, {**(post if body else {}), **headers}, body, host=host)
                for host, headers, method, path, body in foreign]

    def stalled(port):  # headers and 4 bytes of a 100 KB upload, then nothing
        return _times(20, lambda: request(port, "POST", "/api/predict", {**post, "Content-Length": "100000"},
                                          lambda: [b"\x89PNG"], timeout=timeout + 5))

    def slow_headers(port):  # half a request line-and-headers, then nothing
        def one():
            t0 = time.perf_counter()
            with socket.create_connection((HOST, port), timeout=timeout + 5) as s:
                s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                return _read_answer(s, t0)
        return _times(20, one)

    def idle(port):  # 100 connections that send nothing
        def one():
            t0 = time.perf_counter()
            with socket.create_connection((HOST, port), timeout=timeout + 5) as s:
                return _read_answer(s, t0)
        return _times(100, one)

    def vanish(port):  # half an upload, then the client is gone
        out = []
        for _ in range(5):
            t0 = time.perf_counter()
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                          f"Content-Length: {len(png)}\r\n\r\n".encode() + png[:len(png) // 2])
                time.sleep(0.05)
            out.append(Answer("closed", "", time.perf_counter() - t0))
        time.sleep(0.3)  # the server notices
        return out

    def parallel_uploads(port):
        answers = _times(parallel, lambda: request(port, "POST", "/api/predict?name=x.png", post, png, timeout=60))
        bodies = {a.body for a in answers}
        if len(bodies) != 1:
            answers.append(Answer("different", f"{len(bodies)} different answers"))
        return answers

    form_boundary = "b0undary"
    form = (f"--{form_boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{form_boundary}--\r\n".encode()
    return [
        Case("PNG bomb 20000x20000 8-bit grey (389 KB)", upload(bomb_png(20000, 20000)), {"400"}),
        Case("PNG bomb 9000x9000 16-bit RGBA (630 KB)", upload(bomb_png(9000, 9000, 16, 6)), {"400"}),
        Case(f"PNG bomb 31000x31000 at the upload limit ({len(at_limit) >> 10} KB)", upload(at_limit), {"400"}),
        Case("lying PNG header: 256x256, IDAT inflates to 400 MB", upload(bomb_png(256, 256, pixels=(20000, 20000))),
             {"200", "400"}),
        Case("300 MB body declared, each of 8 routes",
             lambda port: [request(port, m, p, {**types.get(p, {}), "Content-Length": str(huge)}, streamed(huge))
                           for m, p in routes],
             {"413"}),
        Case("300 MB chunked body, no length: /api/predict, /api/csv",
             lambda port: [request(port, "POST", "/api/predict", {**post, "Transfer-Encoding": "chunked"}, chunked(huge)),
                           request(port, "POST", "/api/csv", {"Content-Type": "application/json",
                                                              "Transfer-Encoding": "chunked"}, chunked(huge))],
             {"413"}),
        Case("16 MB upload sent whole by a simple client", upload(bytes(16 * MB)), {"413"}),
        Case("empty, not-PNG and JSON-less bodies",
             lambda port: [request(port, "POST", "/api/predict", post, b""),
                           request(port, "POST", "/api/predict", post, b"GIF89a" + bytes(100)),
                           request(port, "POST", "/api/csv", {"Content-Type": "application/json"}, b"{" * 100000)],
             {"400"}),
        Case(f"odd paths and indices ({len(odd)})", lambda port: [request(port, "GET", p) for p in odd],
             {"400", "404"}),
        Case("foreign Host, Origin, Content-Type (5)", send_foreign, {"403", "415"}),
        Case("20 stalled uploads (headers + 4 bytes)", stalled, {"408"}, max_seconds=timeout + 1),
        Case("20 slow-header connections", slow_headers, {"closed"}, max_seconds=timeout + 1),
        Case("100 idle connections", idle, {"closed"}, max_seconds=timeout + 1, logged=0),
        Case("5 clients vanish mid-upload", vanish, {"closed"}),
        Case("raw + multipart upload (curl -F)",
             lambda port: upload(png)(port) + [request(port, "POST", "/api/predict", {
                 "Content-Type": f"multipart/form-data; boundary={form_boundary}"}, form)], {"200"}),
        Case(f"{parallel} parallel uploads, answers identical", parallel_uploads, {"200"}, max_seconds=30.0),
    ]


def run_case(case: Case, pid: int, port: int, log: Path | None) -> Row:
    row = Row(case.name)
    lines_before = _lines(log)
    with _Watch(pid, port) as watch:
        t0 = time.perf_counter()
        answers = case.send(port)
        row.seconds = time.perf_counter() - t0
        time.sleep(0.05)
    row.peak_mb = (watch.peak - watch.idle) / MB
    row.others_ms = 1000 * max(watch.latencies, default=0.0)
    row.up = request(port, "GET", "/api/info", timeout=5).status == "200"
    counts = Counter(a.status for a in answers)
    refused = case.logged if case.logged is not None else sum(
        a.status not in ("200", "different") for a in answers)
    row.log_lines = _settled_lines(log, lines_before, refused)
    row.answers = ", ".join(f"{s} x{n}" if n > 1 else s for s, n in sorted(counts.items()))
    bad = sorted(set(counts) - case.expect)
    if bad:
        row.problems.append(f"answers {bad}: " + "; ".join(a.body[:120] for a in answers if a.status in bad)[:300])
    slowest = max((a.seconds for a in answers), default=0.0)
    if slowest > case.max_seconds:
        row.problems.append(f"slowest answer {slowest:.2f} s > {case.max_seconds} s")
    if row.peak_mb > MAX_PEAK_MB:
        row.problems.append(f"peak {row.peak_mb:.0f} MB above idle")
    if not row.up:
        row.problems.append("server down")
    if watch.probe_errors or row.others_ms > MAX_OTHERS_MS:
        row.problems.append(f"others: {row.others_ms:.0f} ms, errors {watch.probe_errors[:3]}")
    for a in answers:
        _check_body(a, row)
    if log is not None:
        if row.log_lines != refused:
            row.problems.append(f"{row.log_lines} log lines for {refused} refused requests")
    return row


def _check_body(a: Answer, row: Row) -> None:
    """A refusal is one line of JSON, without an absolute path or a Python error text."""
    if a.status in ("closed", "reset", "timeout", "200", "different") or not a.body:
        return
    try:
        text = json.loads(a.body)["error"]
    except (ValueError, KeyError, TypeError):
        row.problems.append(f"{a.status} without a JSON error: {a.body[:80]!r}")
        return
    if "\n" in text or "Traceback" in text or "/tmp/" in text or "/home/" in text or "/work/" in text:
        row.problems.append(f"{a.status} message {text[:120]!r}")


def _settled_lines(log: Path | None, before: int, expected: int, wait: float = 10.0, settle: float = 0.3) -> int:
    """Log lines written since `before`: waits (up to `wait` s, a loaded machine writes late) until
    `expected` are there, then `settle` s more and counts again, so that a surplus line shows too."""
    deadline = time.monotonic() + wait
    while _lines(log) - before < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle)
    return _lines(log) - before


def _lines(log: Path | None) -> int:
    if log is None or not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines() if line.strip())


def campaign(pid: int, port: int, png: bytes, limit_png: int, timeout: float, log: Path | None = None,
             parallel: int = 50) -> list[Row]:
    """Every case against the server process `pid` listening on 127.0.0.1:`port`."""
    return [run_case(c, pid, port, log) for c in build_cases(png, limit_png, timeout, parallel)]


def table(rows: list[Row]) -> str:
    return mdtable.table(
        ["case", "answer", "peak memory above idle", "time", "server up", "others' slowest answer meanwhile"],
        [[r.case, r.answers, f"{max(r.peak_mb, 0):.0f} MB", f"{r.seconds:.2f} s", "yes" if r.up else "NO",
          f"{r.others_ms:.0f} ms"] for r in rows])


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values) if values else 0.0
