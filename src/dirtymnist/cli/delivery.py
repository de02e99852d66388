"""CLI parsers for the delivery commands (no heavy imports here)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
