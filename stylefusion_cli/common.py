"""Plumbing shared by the two command-line interfaces: with them, the only place that prints and exits.

The library raises StyleFusionError with a one-line message; `run_cli` turns it (and Ctrl-C) into one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

from stylefusion import __version__
from stylefusion.core.errors import (ConfigError, DatasetError, InputImageError, ModelError, StyleFusionError,
                                     VideoError, WeightsError, is_finite_non_negative)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT; a SIGTERM exits 143 (128 + SIGTERM)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A repeat of the same stop within this many seconds is the same request arriving twice (terminal + launcher).
REPEAT_WINDOW_S = 2.0
# Errors in what the user gave: every torchrun process meets the same one, so only rank 0 reports it.
SAME_ON_EVERY_RANK = (ConfigError, InputImageError, ModelError, WeightsError, DatasetError, VideoError)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a stop signal: unwinds like Ctrl-C, so temporary files are removed."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def raise_interrupted(signum: int, frame: object) -> None:
    """Default stop handler: raise Interrupted at the next bytecode of the main thread."""
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, object], None] = raise_interrupted) -> Iterator[None]:
    """Handle SIGINT and SIGTERM alike with `handler` inside the block; repeats within 2 s are ignored.

    The previous handlers come back on exit. Outside the main thread signals cannot be handled: no-op.
    """
    first: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        if first and time.monotonic() - first[0] <= REPEAT_WINDOW_S:
            return  # the same stop reaching us twice, or a second signal during the clean-up it started
        first[:] = [time.monotonic()]
        handler(signum, frame)

    try:
        previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def is_main_process() -> bool:
    """False in torchrun's processes other than rank 0 (read from the environment, no process group needed)."""

    try:
        return int(os.environ.get("WORLD_SIZE") or 1) <= 1 or int(os.environ.get("RANK") or 0) == 0
    except ValueError:
        return True  # a malformed variable is reported by the library, by every process


def error(message: str) -> None:
    """Print one line to stderr, prefixed with the program name."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    """Print a status line to stderr (stdout stays free for data)."""
    print(message, file=sys.stderr, flush=True)


class _StatusStream:
    """stderr for status lines that a failing write never stops: a reader gone (`2>&1 | head`) or a full device
    (`2>/dev/full`) turns the rest of the run's messages into nothing, not into a failed run."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def _failed(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()  # its buffered text would fail again at exit
        self.stream = open(os.devnull, "w")

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):  # ValueError: a stream closed under us
            self._failed()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            self._failed()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding ... of the stream in use
        return getattr(self.stream, name)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`, mapping library errors and interrupts to a one-line message and an exit code.

    SIGTERM is treated like Ctrl-C: the work unwinds (temporary files are removed) and the exit code is
    128 + the signal number (130 for SIGINT, 143 for SIGTERM).
    """
    for name in ("stdout", "stderr"):  # closed (`2>&-`): None, so print() would write to stdout and tqdm fail
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))
    status = sys.stderr = _StatusStream(sys.stderr)
    try:
        with stop_signals():
            return main(argv)
    except StyleFusionError as exc:
        if is_main_process() or not isinstance(exc, SAME_ON_EVERY_RANK):
            error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        error(f"interrupted by {signal.Signals(signum).name}: stopped; what was finished is kept, nothing half-written")
        return 128 + int(signum)
    except OSError as exc:  # a write the library did not wrap, e.g. a full disk while flushing a log file
        where = f": {exc.filename}" if exc.filename else ""
        error(f"{exc.strerror or exc}{where}")
        return EXIT_ERROR
    except MemoryError:
        error("out of memory: try a smaller --image_size / --max_size or --batch_size")
        return EXIT_ERROR
    except RuntimeError as exc:  # torch's allocators raise RuntimeError (CUDA: its OutOfMemoryError subclass)
        if not is_out_of_memory(exc):
            raise
        error(out_of_memory_line(exc))
        return EXIT_ERROR
    finally:
        sys.stderr = status.stream  # the caller's stream again (the null device if it failed)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation the system refused (CPU or GPU), not another runtime error."""
    text = str(exc)
    return (type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text
            or "out of memory" in text.lower())


def out_of_memory_line(exc: BaseException) -> str:
    """One line for a refused allocation, with its size when torch names it."""
    import re

    found = re.search(r"(?:tried to )?allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]iB)", str(exc))
    size = ""
    if found:
        number, unit = float(found.group(1)), found.group(2)
        scale = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
        size = f" (an allocation of {number * scale / (1 << 30):.2f} GB was refused)"
    return (f"out of memory{size}: the memory this run planned with is not there now (other programs?): lower "
            f"--max_memory, --image_size / --max_size or --batch_size")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (rejects NaN, inf and negatives with a clear message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not is_finite_non_negative(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (0, negatives, NaN and inf get the same message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (is_finite_non_negative(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a relative change)."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1 (e.g. 0.001)")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
    return value


def seed(text: str) -> int:
    """argparse type: a random seed, 0 to 2**63 - 1 (what torch's generators take)."""
    value = _int_at_least(text, 0)
    if value >= 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1, got {text}")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free one)."""
    value = _int_at_least(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text}")
    return value


def in_range(text: str, low: float, high: float, cast: Callable[[str], float] = float, words: str = "") -> float:
    """argparse helper: `text` as a number (int with cast=int) from low to high; one message for every way it is
    not (`words` names other accepted values, e.g. "auto or ")."""
    message = f"must be {words}{'an integer' if cast is int else 'a number'} from {low:g} to {high:g}, got '{text}'"
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(message)
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def output_path(text: str) -> str:
    """argparse type: a path to write to, not empty (an unset shell variable would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file or folder to write to")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):  # it would become a local folder named "file:", "https:", ...
        raise argparse.ArgumentTypeError(f"is a URL ({text}): only local files are written; give a path")
    if text.startswith("~"):  # quoted, so the shell left it: a folder named ~ is never what was meant
        raise argparse.ArgumentTypeError(f"starts with ~ ({text}), which the shell expands only outside quotes: "
                                         f"write the path out")
    return text


def output_file(text: str) -> str:
    """argparse type: a file to write (output_path's checks), not a name ending in a folder separator, which would
    be written as a file named like the folder."""
    text = output_path(text)
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"ends in {text[-1]} ({text}): give a file name, not a folder")
    return text


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


class WeightList(argparse.Action):
    """nargs="+" weights written either way, "0.7,0.3" or "0.7 0.3" (the two CLIs once differed): one list of the
    comma- and space-separated parts, each checked by the argument's type; given twice, the lists add up (as the
    file lists' "extend" does)."""

    def __init__(self, *args: object, type: Callable[[str], object] = float, **kwargs: object) -> None:
        # argparse would apply `type` to each space-separated word, before the commas are split: kept for later.
        self.convert = type
        super().__init__(*args, nargs="+", **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parts = [part.strip() for value in values for part in str(value).split(",")]  # type: ignore[union-attr]
        parts = [part for part in parts if part]
        if not parts:
            raise argparse.ArgumentError(self, "expected numbers such as 0.7,0.3 or 0.7 0.3")
        weights = []
        for part in parts:
            try:
                weights.append(self.convert(part))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentError(self, str(error)) from None
            except ValueError:
                raise argparse.ArgumentError(self, f"'{part}' is not a number") from None
        setattr(namespace, self.dest, (getattr(namespace, self.dest, None) or []) + weights)


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage dump), exit code 2, and options only in full (a
    prefix such as --content would silently mean --content_image, or another option once one is added)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        # The same command line reaches every torchrun process: rank 0 alone says what is wrong with it.
        self.exit(2, f"error: {message} (see {self.prog} --help)\n" if is_main_process() else None)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' unless the help text already speaks of its default, there is none, or it is a flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, argparse.SUPPRESS) or action.required
                or action.nargs == 0):  # a flag: its default is "not given"
            return text
        return super()._get_help_string(action)


def apply_pixel_limit(megapixels: float | None) -> None:
    """Set Pillow's decompression-bomb limit for this process (a CLI-wide setting, like the allocator's)."""
    from PIL import Image

    if megapixels is not None:
        # Pillow refuses above twice MAX_IMAGE_PIXELS (and warns above it): the user's number is the refusal.
        Image.MAX_IMAGE_PIXELS = int(megapixels * 1e6 / 2)


def _this_command() -> str:
    """How the user ran this program: `python fast_style_transfer.py` from a clone, the console command when
    installed (whose advice must not name a script the install does not have)."""
    name = os.path.basename(sys.argv[0] or "") or "fast_style_transfer.py"
    return f"python {name}" if name.endswith(".py") else name


def require_model(args: argparse.Namespace, mode: str,
                  hint: str = "e.g. models/udnie.pth from --mode download") -> str | list[str]:
    """The --model_path a mode needs, checked to exist, with a hint on how to get one."""
    from pathlib import Path

    from stylefusion.core.errors import ConfigError, ModelError, not_found

    if args.model_path is None:
        raise ConfigError(f"--mode {mode} needs --model_path ({hint})")
    for path in args.model_path if isinstance(args.model_path, list) else [args.model_path]:  # list: one per mask
        if not Path(path).exists():
            raise ModelError(not_found("model file", path, f" (run `{_this_command()} --mode download` to fetch the "
                                       "released models into models/, or train one with --mode train)"))
    return args.model_path


def mask_warnings(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A warning line per mask that is black (or transparent) everywhere: its region gets no style; and per mask
    painted in colour: its grey level is what counts. The CLIs print them once the run has passed its checks (a bad
    mask's error comes alone)."""
    if not paths:
        return []
    from stylefusion.core.masks import mask_flags

    lines = []
    for path in paths:
        blank, coloured = mask_flags(path)
        if blank:
            lines.append(f"warning: the mask {path} is black everywhere: nothing will be stylised in its region")
        elif coloured:
            lines.append(f"warning: the mask {path} is in colour: its grey level is used (pure red = 30 % of the "
                         f"style); paint the regions white")
    return lines


def first_frame_warnings(paths: Sequence[str | os.PathLike | None]) -> list[str]:
    """A warning line per named image that holds several frames (an animated GIF, a multi-page TIFF): the run uses
    its first. Files that cannot be read are left to the run's own one-line error."""
    from PIL import Image

    lines = []
    for path in paths:
        if path is None or not os.path.isfile(path):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: the run applies its own limit
                with Image.open(path) as img:
                    frames = getattr(img, "n_frames", 1)
        except Exception:  # noqa: BLE001 (not an image, truncated...: the run says so in its own words)
            continue
        if frames > 1:
            lines.append(f"warning: {path} holds {frames} frames (animated or multi-page): only the first is used")
    return lines


def add_version_arg(parser: argparse.ArgumentParser) -> None:
    """--version: print the one version number (stylefusion.__version__) and exit."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def add_live_args(parser: argparse.ArgumentParser) -> None:
    """--live and its address options (a local page that shows the run as it happens)."""
    g = parser.add_argument_group("live view")
    g.add_argument("--live", action="store_true",
                   help="serve a local page with the current image, loss curves and progress (URL on stderr)")
    g.add_argument("--live_port", type=port, default=0, help="port of the live page, 0-65535 (0: any free one)")
    g.add_argument("--live_host", default="127.0.0.1",
                   help="address the live page listens on (0.0.0.0 makes it reachable from other machines)")


def live_unused(args: argparse.Namespace) -> list[str]:
    """A warning for --live_port / --live_host given without --live (no page is served)."""
    defaults = (("--live_port", "live_port", 0), ("--live_host", "live_host", "127.0.0.1"))
    given = [flag for flag, dest, default in defaults if getattr(args, dest, default) != default]
    if getattr(args, "live", False) or not given:
        return []
    verb = "applies" if len(given) == 1 else "apply"
    return [f"warning: {' and '.join(given)} {verb} only with --live (no page is served): ignored"]


def start_live(args: argparse.Namespace, title: str):  # -> stylefusion.live.LiveServer | None
    """Start the live page when --live was given, printing its URL once; None otherwise."""
    if not getattr(args, "live", False):
        return None
    from stylefusion.live import LiveServer

    server = LiveServer(title, args.live_host, args.live_port)
    if server.is_public:
        info(f"warning: the live page listens on {args.live_host}, open to the network: anyone who can reach "
             f"this machine can watch the run (--live_host 127.0.0.1 keeps it local)")
    info(f"live view: {' '.join(server.urls)}")
    return server
