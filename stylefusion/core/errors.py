"""Error types the CLIs turn into one line on stderr and a non-zero exit."""

from __future__ import annotations

import errno
import math
import os
import re
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


class PathError(StyleFusionError):
    """A path cannot be followed (a loop of symbolic links)."""


class DeviceError(StyleFusionError):
    """The requested device or precision is not available here."""


def non_finite_output() -> ModelError:
    """The error for a network output with NaN/inf (clamping keeps NaN: a broken model would write black)."""
    return ModelError("the model produced NaN or infinite values on this input: the model file is broken "
                      "(e.g. trained until it diverged)")


class MemoryBudgetError(StyleFusionError):
    """The requested image size cannot fit the memory budget, even in tiles."""


class OutputError(StyleFusionError):
    """An output path cannot be written (unwritable, or it would overwrite an input)."""


class VideoError(StyleFusionError):
    """A video cannot be decoded or encoded."""


class DatasetError(StyleFusionError):
    """A training dataset is empty or has no readable image."""


class Stopped(StyleFusionError):
    """The caller asked a run to stop (its stop event was set, e.g. by a signal handler): it stopped at a safe
    point and left no partial output."""


def first_line(exc: BaseException, limit: int = 200, default: str | None = None) -> str:
    """One line for a user from an exception: its strerror or first message line, else `default` or its type."""
    text = str(getattr(exc, "strerror", None) or exc).strip()
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's '[source/file.cc:123] ' prefix
    return text.splitlines()[0][:limit] if text else (default or type(exc).__name__)


def is_finite_non_negative(value: object) -> bool:
    """True for a real number (int or float) that is finite and >= 0: weights, seconds, sizes."""
    return isinstance(value, (int, float)) and not (math.isnan(value) or math.isinf(value)) and value >= 0


def shown(value: object) -> str:
    """`value` as a message shows it: a number as itself, anything else by its repr, text marked as text ("got '1'
    (text)"), so that a library caller's string "1" is not mistaken for the number it looks like."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return f"{value!r} (text)" if isinstance(value, str) else repr(value)


def check_non_negative(what: str, value: object) -> float:
    """`value` as a float when it is a finite number >= 0; else ConfigError naming `what`."""
    if not is_finite_non_negative(value):
        raise ConfigError(f"{what} must be a finite number >= 0, got {shown(value)}")
    return float(value)


def require_file(path: str | os.PathLike, what: str, error: type[StyleFusionError]) -> Path:
    """Check that `path` is an existing, non-empty regular file; else raise `error` saying which it is not."""
    path = Path(path)
    if not path.exists():
        raise error(not_found(what, path))
    if path.is_dir():
        raise error(f"{what} path is a directory, not a file: {path}")
    if not path.is_file():  # /dev/zero, a named pipe: reading would never end, or give what no file holds
        raise error(f"{what} path is a device or pipe, not a file: {path}")
    if path.stat().st_size == 0:
        raise error(f"{what} file is empty (0 bytes): {path}")
    return path


def not_found(what: str, path: str | os.PathLike, hint: str = "") -> str:
    """The message for a path that does not exist: "{what} not found: {path}{hint}", or that it is a loop of
    symbolic links (which exists() also reports as missing)."""
    if is_link_loop(path):
        return f"{what} path is a loop of symbolic links: {path}"
    text = str(path)
    if re.match(r"file:/", text, re.I):  # Path() makes file:/x of file:///x
        hint = f" (a file:// URL: give the path itself, {re.sub(r'^file:/*', '/', text, flags=re.I)})"
    elif re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", text):  # Path() makes https://x of https:/x
        hint = " (a URL? only local files are read: download it and give its path)"
    elif text.startswith(("~", "$")):
        hint = " (the shell expands ~ and $VARIABLES only outside quotes: write the path out)"
    return f"{what} not found: {path}{hint}"


def is_link_loop(path: str | os.PathLike) -> bool:
    """Whether following `path` runs into a loop of symbolic links (exists() just says False for one)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def resolved(path: str | os.PathLike) -> Path:
    """`path` made absolute with its links followed; a loop of them is a one-line PathError (Python 3.11's
    Path.resolve raises a bare RuntimeError there)."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        raise PathError(f"a loop of symbolic links: {path}") from None
    except OSError as exc:
        raise PathError(f"cannot follow the path {path}: {exc.strerror or exc}") from None
