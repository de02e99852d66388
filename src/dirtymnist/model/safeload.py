"""torch.load for files we did not write: weights_only=True, so no code in the file ever runs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def torch_load_safe(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True; torch's warnings about a file it refuses are dropped,
    since the caller's one-line error says what is wrong with it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)
