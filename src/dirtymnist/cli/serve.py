"""CLI parser for `serve`: the local page to look at one or more runs (starlette loads in the handler)."""

from __future__ import annotations

import argparse
import math


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser(
        "serve",
        help="local web page: drop PNGs, see probabilities, letters and per-letter heat maps",
        description="Serve a page on http://HOST:PORT where you upload PNGs (or pick images of "
        "--data) and see each run's 26 probabilities, the letters decided by the same rule as "
        "`predict` (--thresholds, default 0.5) and, for class-map models, each letter's heat map; "
        "two runs side by side; the batch's predictions as a submission-format CSV; an HTTP API "
        "(POST /api/predict takes a raw PNG body or curl -F file=@x.png). Needs the `serve` extra "
        "(starlette, uvicorn). Binds to 127.0.0.1 unless --host says otherwise; another address "
        "needs --token or --public.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder (fold*/best.pt) or one checkpoint")
    p.add_argument("--data", help="a data folder whose images the page can show (with their letters "
                   "when known: train, and test with test_answer.csv)")
    p.add_argument("--thresholds", default="0.5", metavar="SPEC",
                   help="decision rule, as in predict: a number (default 0.5; NUMBER:count for "
                   "count-aware decoding), a thresholds.json (e.g. RUN/thresholds.json) or fit")
    p.add_argument("--port", type=_port, default=7860, help="port, 0..65535 (default 7860; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this "
                   "machine only; another needs --token or --public)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host header name to accept besides localhost / 127.0.0.1 / ::1 (repeat; "
                   "'*' any): the name other machines reach this one by")
    p.add_argument("--token", help="every request must carry it (?token=, cookie or "
                   "'Authorization: Bearer'); 'auto': a random one, printed in the URL. With a token any Host "
                   "name is accepted")
    p.add_argument("--public", action="store_true",
                   help="allow a non-loopback --host without a token (anyone who reaches it may use it)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                   help="seconds a client has to send a request's headers, and again its body (default 10)")
    p.add_argument("--tta", default="none", help="TTA preset as in predict (default none)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=_serve)


def _port(text: str) -> int:
    if not text.strip().isascii() or not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _serve(args) -> int:
    from dirtymnist.look.serve import serve

    serve(args.runs, args.data, host=args.host, port=args.port, tta=args.tta, device=args.device,
          thresholds=args.thresholds, allowed_hosts=args.allowed_host, token=args.token,
          public=args.public, timeout=args.timeout)
    return 0
