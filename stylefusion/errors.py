"""Error types the CLIs turn into one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
from pathlib import Path


class StyleFusionError(Exception):
    """Base class: the message is a complete, one-line explanation for the user."""


class InputImageError(StyleFusionError):
    """An image file is missing, unreadable or not an image."""


class ConfigError(StyleFusionError):
    """An option has a value the library cannot use (unknown layer, negative weight, ...)."""


class WeightsError(StyleFusionError):
    """VGG-19 weights could not be found, downloaded or understood."""


class ModelError(StyleFusionError):
    """A transformer model file is missing, corrupt or of another architecture."""


class DeviceError(StyleFusionError):
    """The requested device or precision is not available here."""


class MemoryBudgetError(StyleFusionError):
    """The requested image size cannot fit the memory budget, even in tiles."""


class OutputError(StyleFusionError):
    """An output path cannot be written (unwritable, or it would overwrite an input)."""


class VideoError(StyleFusionError):
    """A video cannot be decoded or encoded."""


class DatasetError(StyleFusionError):
    """A training dataset is empty or has no readable image."""


def require_file(path: str | os.PathLike, what: str, error: type[StyleFusionError]) -> Path:
    """Check that `path` is an existing, non-empty regular file; else raise `error` saying which it is not."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} not found: {path}")
    if path.is_dir():
        raise error(f"{what} path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise error(f"{what} file is empty (0 bytes): {path}")
    return path
