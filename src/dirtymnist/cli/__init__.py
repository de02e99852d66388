"""Command-line entry: `dirtymnist COMMAND ...` (also `python -m dirtymnist`).

Each sub-command is a thin wrapper that parses arguments and calls one library function.
Parsers live in small modules grouped by topic; they import nothing heavy, so `--help`
and the data commands start without importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from dirtymnist import __version__
from dirtymnist.errors import DirtyMnistError

# errnos that mean "not allowed here": the user's setup, not a bug, so one line instead of a traceback
_NO_ACCESS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

# Modules under dirtymnist.cli, each with `register(subparsers)`; order = order in --help.
_GROUPS = ("job", "data", "synth", "training", "search", "squeeze", "inference", "look", "serve", "delivery")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dirtymnist",
        description="Find which of the 26 letters a-z appear in noisy 256x256 images.",
    )
    parser.add_argument("--version", action="version", version=f"dirtymnist {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _GROUPS:
        importlib.import_module(f"dirtymnist.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.func(args)
    except DirtyMnistError as exc:
        print(f"dirtymnist {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _NO_ACCESS:
            raise
        # a folder or file we may not write or read (read-only mount, another user's run folder)
        print(f"dirtymnist {args.command}: error: {exc.filename or '?'}: {exc.strerror.lower()}; "
              "choose another folder or change its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dirtymnist {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `dirtymnist evaluate ... | head`
        sys.stderr.close()
        return 0
    return int(result or 0)
