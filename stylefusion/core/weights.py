"""The safe weights-file reader: every .pth this project reads goes through here, never an unpickler that
can run code."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True and torch's own warnings (pickle protocol ...) kept off stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)
