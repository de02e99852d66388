"""CLI parser for `serve`: the local page to look at one or more runs (starlette loads in the handler)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser(
        "serve",
        help="local web page: drop PNGs, see probabilities, letters and per-letter heat maps",
        description="Serve a page on http://HOST:PORT where you upload PNGs (or pick images of "
        "--data) and see each run's 26 probabilities against its thresholds (RUN/thresholds.json, "
        "else 0.5), the decided letters and, for class-map models, each letter's heat map; "
        "two runs side by side; the batch's predictions as a submission-format CSV. "
        "Needs the `serve` extra (starlette, uvicorn). Binds to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder (fold*/best.pt) or one checkpoint")
    p.add_argument("--data", help="a data folder whose images the page can show (train: with their letters)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--tta", default="none", help="TTA preset as in predict (default none)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from dirtymnist.look.serve import serve

    serve(args.runs, args.data, host=args.host, port=args.port, tta=args.tta, device=args.device)
    return 0
