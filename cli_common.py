"""Plumbing shared by the two command-line scripts: the only place that prints and exits.

The library raises StyleFusionError with a one-line message; `run_cli` turns it (and Ctrl-C) into one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from stylefusion.errors import StyleFusionError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def error(message: str) -> None:
    """Print one line to stderr, prefixed with the program name."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    """Print a status line to stderr (stdout stays free for data)."""
    print(message, file=sys.stderr, flush=True)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`, mapping library errors and interrupts to a one-line message and an exit code."""
    try:
        return main(argv)
    except StyleFusionError as exc:
        error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except MemoryError:
        error("out of memory: try a smaller --image_size / --max_size or --batch_size")
        return EXIT_ERROR


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (rejects NaN, inf and negatives with a clear message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' unless the help text already speaks of its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        return super()._get_help_string(action)


def add_live_args(parser: argparse.ArgumentParser) -> None:
    """--live and its address options (a local page that shows the run as it happens)."""
    g = parser.add_argument_group("live view")
    g.add_argument("--live", action="store_true",
                   help="serve a local page with the current image, loss curves and progress (URL on stderr)")
    g.add_argument("--live_port", type=non_negative_int, default=0, help="port of the live page (0: any free one)")
    g.add_argument("--live_host", default="127.0.0.1",
                   help="address the live page listens on (0.0.0.0 makes it reachable from other machines)")


def start_live(args: argparse.Namespace, title: str):  # -> stylefusion.live.LiveServer | None
    """Start the live page when --live was given, printing its URL once; None otherwise."""
    if not getattr(args, "live", False):
        return None
    from stylefusion.live import LiveServer

    server = LiveServer(title, args.live_host, args.live_port)
    info(f"live view: {server.url}")
    return server
