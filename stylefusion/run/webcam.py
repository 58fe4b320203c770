"""Live style transfer from a camera: capture -> stylise -> callback (window) and/or recording.

A capture thread reads the camera as fast as it delivers and keeps only the newest frame: when stylising is
slower than the camera, older frames are dropped, never queued, so latency stays bounded. The calling thread
stylises the newest frame, hands it to a callback (the CLI shows it and turns key presses into commands) and
passes it to an encoder thread through a small bounded queue. A recording is written under a temporary name
and renamed only when the run ends cleanly (frame limit, quit command, stop event, end of the input).
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2  # before av: with PyAV's FFmpeg libraries loaded first, OpenCV's Qt window (cv2.imshow) hangs
import av  # noqa: I001
import numpy as np
import torch
from PIL import Image

from ..core import color
from ..core.device import check_precision, resolve_device
from ..core.errors import ConfigError, DeviceError, ModelError, OutputError, VideoError, require_file
from ..core.images import (atomic_path, ensure_not_input, first_missing, path_list, prepare_output_dir,
                           remove_empty_tree, save_image)
from ..networks.arbitrary import STYLE_SIZE
from ..networks.model_files import load_model
from ..networks.transformer import MIN_INPUT_SIDE
from .painting import Paintings, each_painting
from .stylizer import Stylizer
from .video import CONTAINERS, ffmpeg_path

# Commands a frame callback may return (or an int: switch to that model index).
COMMANDS = ("next", "previous", "side_by_side", "snapshot", "quit")
# Key codes (cv2.waitKey & 0xFF) -> commands; digits 1..9 select a model.
KEYS = {ord("n"): "next", ord("p"): "previous", ord("s"): "side_by_side", ord(" "): "snapshot",
        ord("q"): "quit", 27: "quit"}
_DEFAULT_FPS = 30.0          # when the camera does not report its frame rate
_POLL_S = 0.1                # how often a blocked wait checks for a stop request
_RECORD_QUEUE = 4            # stylised frames waiting for the encoder at most
_LATENCY_WINDOW = 500        # latencies kept for percentiles (the most recent ones)


def command_for_key(key: int) -> str | int | None:
    """The command for a key code from cv2.waitKey (digits 1..9 select model 0..8), or None."""
    key &= 0xFF
    if ord("1") <= key <= ord("9"):
        return key - ord("1")
    return KEYS.get(key)


@dataclass
class WebcamConfig:
    """What to capture, which models, and where the recording and snapshots go."""
    camera: str | int = 0                         # a device index, or a file path / URL OpenCV can open
    model_paths: Sequence[str | os.PathLike] = ()
    style_images: Sequence[str | os.PathLike] = ()  # paintings (any painting, now), after the models in the keys
    style_size: int = STYLE_SIZE                  # the paintings' shorter side as the style predictor sees them
    stroke_scale: float | None = None             # paintings: the network runs this many times smaller (None: auto)
    max_size: int | None = None                   # longest side of the working size (None: the camera's)
    video_output: str | os.PathLike | None = None  # record the stylised stream here (.mp4/.m4v/.mov/.mkv)
    snapshot_dir: str | os.PathLike = "output/snapshots"
    max_frames: int | None = None                 # stop after this many stylised frames
    preserve_color: str = "none"
    device: str = "auto"
    precision: str = "auto"
    crf: int = 20                                 # x264 quality of the recording
    preset: str = "veryfast"                      # x264 speed: the encoder must keep up with the camera

    def __post_init__(self) -> None:
        self.style_images = path_list(self.style_images)  # one path given bare is one painting


@dataclass(frozen=True)
class WebcamFrame:
    """One stylised frame, handed to the callback; `display_bgr()` composes what a window shows."""
    index: int                   # 1-based count of stylised frames
    raw: np.ndarray              # (H, W, 3) uint8 RGB at the working size
    stylised: np.ndarray         # (H, W, 3) uint8 RGB
    model_index: int
    model_name: str
    side_by_side: bool
    fps: float                   # stylised frames per second (smoothed)
    latency_s: float             # capture -> stylised frame ready
    stylise_s: float             # of which in the network (the rest: waiting to be taken, converting)
    dropped: int                 # camera frames never stylised so far
    snapshot: Path | None = None  # set on the frame after a snapshot command

    def display_bgr(self) -> np.ndarray:
        """The window image: stylised (or raw | stylised) in BGR with model, fps and latency written on it."""
        image = np.concatenate([self.raw, self.stylised], axis=1) if self.side_by_side else self.stylised
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        text = f"{self.model_name}  {self.fps:.1f} fps  {self.latency_s * 1000:.0f} ms"
        scale = max(0.4, image.shape[0] / 720)
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(image, text, (8, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour,
                        max(1, int(thickness * scale)), cv2.LINE_AA)
        return image


@dataclass(frozen=True)
class WebcamResult:
    """What a run did."""
    frames: int                  # stylised (and recorded, when recording)
    captured: int                # frames the camera delivered
    dropped: int                 # delivered but never stylised (stylising was slower than the camera)
    width: int
    height: int
    camera_fps: float
    elapsed_s: float
    fps: float                   # stylised frames per second over the run
    latency_mean_s: float
    latency_p95_s: float         # over the last frames (at most 500)
    output: Path | None
    snapshots: tuple[Path, ...]
    stop_reason: str             # "max_frames", "quit", "stopped", "end of input"


# -------------------------------------------------------------------------------------------------- input
@dataclass
class _Captured:
    image: np.ndarray            # (H, W, 3) uint8 RGB at the working size
    time: float                  # time.monotonic() when it was read


class _Newest:
    """A one-frame slot: the capture thread overwrites it, the consumer takes it (older frames are dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: _Captured | None = None
        self._ended = False
        self.captured = self.dropped = 0
        self.error: BaseException | None = None

    def put(self, item: _Captured) -> None:
        with self._cond:
            self.captured += 1
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._ended, self.error = True, error
            self._cond.notify()

    def take(self, stop: threading.Event) -> _Captured | None:
        """The newest frame, waiting for one; None when the input ended or `stop` was set."""
        with self._cond:
            while self._item is None or stop.is_set():
                if self._ended or stop.is_set():
                    return None
                self._cond.wait(_POLL_S)
            item, self._item = self._item, None
            return item


def _camera_spec(camera: str | int) -> str | int:
    """A device index, or the file or URL to open: a file:// URL is the file it names (paced as a file, and never
    the recording's target)."""
    text = str(camera).strip()
    if text.isdigit():
        return int(text)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme.lower() == "file" and parsed.netloc in ("", "localhost"):
        return urllib.request.url2pathname(parsed.path)
    return text


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (it logs to stderr when a device is missing); our error says it once."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def open_camera(camera: str | int) -> tuple[cv2.VideoCapture, np.ndarray, float, bool]:
    """Open a camera index, file or URL: (capture, first BGR frame, frames per second, is a file)."""
    spec = _camera_spec(camera)
    is_file = isinstance(spec, str) and Path(spec).is_file()  # paced like a camera; /dev/video0 is not a file
    if isinstance(spec, str) and "://" not in spec and not Path(spec).exists():
        raise VideoError(f"camera not found: '{spec}' is not a device index, an existing file or a URL")
    with _quiet_opencv():  # a file by its absolute path: FFmpeg would read "2024-01-01T10:00:00.mp4" as a protocol
        capture = cv2.VideoCapture(os.path.abspath(spec) if is_file else spec)
        if not capture.isOpened():
            capture.release()
            if is_file:
                raise VideoError(f"cannot read '{spec}' as a video: damaged, empty or in a format OpenCV cannot decode")
            what = f"camera {spec}" if isinstance(spec, int) else f"'{spec}'"
            raise VideoError(f"cannot open {what} (no such device, in use by another program, or no permission)")
        ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise VideoError(f"'{spec}' holds no frame OpenCV can decode" if is_file
                         else f"camera {spec} opened but delivered no frame")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and math.isfinite(fps) and 1 <= fps <= 1000 else _DEFAULT_FPS
    return capture, first, fps, is_file


def working_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(height, width) to stylise at: scaled so the longest side is at most max_size, both sides even."""
    scale = min(1.0, max_size / max(height, width)) if max_size else 1.0
    size = (max(2, int(height * scale) // 2 * 2), max(2, int(width * scale) // 2 * 2))
    if min(size) < MIN_INPUT_SIDE:
        raise VideoError(f"camera frames are too small ({width}x{height}) at --max_size {max_size}")
    return size


def _to_rgb(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if bgr.shape[:2] != size:
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _capture_loop(capture: cv2.VideoCapture, first: np.ndarray, size: tuple[int, int], pace_fps: float | None,
                  slot: _Newest, stop: threading.Event) -> None:
    """The capture thread: read, convert, overwrite the slot; a file is paced to its frame rate like a camera."""
    try:
        bgr, due = first, time.monotonic()
        while not stop.is_set():
            if pace_fps:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                due = max(due + 1.0 / pace_fps, time.monotonic() - 1.0 / pace_fps)
            slot.put(_Captured(_to_rgb(bgr, size), time.monotonic()))
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
        slot.end()
    except BaseException as exc:  # noqa: BLE001  (handed to the calling thread)
        slot.end(exc)


# -------------------------------------------------------------------------------------------------- output
class _Recorder:
    """Encodes stylised frames to H.264 on its own thread, timestamped with their capture times."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, config: WebcamConfig) -> None:
        container_format = CONTAINERS[path.suffix.lower()][0]
        try:
            self.output = av.open(ffmpeg_path(path), "w", format=container_format)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot write {config.video_output}: {exc}") from None
        self.time_base = Fraction(1, 1000)  # frames carry their capture times: the recording plays in real time
        try:
            stream = self.output.add_stream("libx264", rate=Fraction(round(fps)),
                                            options={"crf": str(config.crf), "preset": config.preset})
            stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
            stream.time_base = stream.codec_context.time_base = self.time_base
        except (av.FFmpegError, ValueError) as exc:
            self.output.close()
            raise VideoError(f"cannot set up the H.264 encoder: {exc}") from None
        self.stream = stream
        self.queue: queue.Queue = queue.Queue(maxsize=_RECORD_QUEUE)
        self.frames, self.error = 0, None
        self._origin: float | None = None
        self._last_pts = -1
        self.thread = threading.Thread(target=self._run, name="record", daemon=True)
        self.thread.start()

    def add(self, image: np.ndarray, captured_at: float) -> None:
        """Queue a frame (blocks while the encoder is behind; raises its error if it failed)."""
        while self.thread.is_alive():
            try:
                self.queue.put((image, captured_at), timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise self.error or OutputError("the recording stopped unexpectedly")

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                image, captured_at = item
                self._origin = captured_at if self._origin is None else self._origin
                pts = max(round((captured_at - self._origin) / self.time_base), self._last_pts + 1)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base, self._last_pts = pts, self.time_base, pts
                for packet in self.stream.encode(frame):
                    self.output.mux(packet)
                self.frames += 1
        except BaseException as exc:  # noqa: BLE001  (raised by close() on the calling thread)
            self.error = exc

    def close(self) -> None:
        """Flush and close the file; raises OutputError if encoding failed."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        try:
            if self.error is None:
                for packet in self.stream.encode(None):
                    self.output.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self.error = exc
        finally:
            with contextlib.suppress(av.FFmpegError, OSError):
                self.output.close()
        if self.error is not None:
            raise OutputError(f"cannot write the recording: {self.error}") from None


def save_snapshot(image: np.ndarray, folder: str | os.PathLike) -> Path:
    """Save an RGB uint8 frame as a PNG named by the time, atomically; returns its path."""
    folder = prepare_output_dir(folder)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")[:-3]
    return save_image(Image.fromarray(image), folder / f"snapshot_{stamp}.png")


# ------------------------------------------------------------------------------------------------ the loop
@dataclass
class _Session:
    """The loop's running state (what the commands change, and the counters the result reports)."""
    model: int = 0
    side_by_side: bool = False
    frames: int = 0
    fps: float = 0.0
    last_time: float | None = None
    latency_sum: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))
    snapshots: list[Path] = field(default_factory=list)
    pending_snapshot: Path | None = None
    reason: str = "stopped"

    def apply(self, command: str | int | None, models: int, stylised: np.ndarray, config: WebcamConfig) -> bool:
        """Carry out a callback's command; False when it asks to quit."""
        if command == "quit":
            self.reason = "quit"
            return False
        if isinstance(command, int) and not isinstance(command, bool):
            self.model = command if 0 <= command < models else self.model
        elif command in ("next", "previous"):
            self.model = (self.model + (1 if command == "next" else -1)) % models
        elif command == "side_by_side":
            self.side_by_side = not self.side_by_side
        elif command == "snapshot":
            self.pending_snapshot = save_snapshot(stylised, config.snapshot_dir)
            self.snapshots.append(self.pending_snapshot)
        elif command is not None:
            raise ConfigError(f"unknown webcam command {command!r} (expected one of {', '.join(COMMANDS)} or an int)")
        return True


def _stylise(stylizer: Stylizer, image: np.ndarray, preserve: str) -> np.ndarray:
    """One RGB uint8 frame through the network, back to RGB uint8."""
    inputs = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    try:
        outputs = stylizer(inputs)
    except torch.OutOfMemoryError:
        raise DeviceError(f"out of memory on {stylizer.device}: lower --max_size") from None
    if preserve != "none":
        outputs = color.preserve_color(outputs[0], inputs[0], preserve).unsqueeze(0)
    return outputs[0].mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _as_error(error: BaseException) -> BaseException:
    if isinstance(error, (cv2.error, OSError)):
        return VideoError(f"the camera stopped delivering frames: {str(error).strip().splitlines()[-1][:160]}")
    return error


def _stream(capture: cv2.VideoCapture, first: np.ndarray, size: tuple[int, int], pace_fps: float | None,
            models: list[tuple[str, Stylizer]], recorder: _Recorder | None, config: WebcamConfig,
            callback: Callable[[WebcamFrame], str | int | None] | None, stop: threading.Event
            ) -> tuple[_Session, _Newest]:
    """Stylise the newest captured frame until a frame limit, a quit command, `stop`, or the end of input."""
    slot, stop_capture = _Newest(), threading.Event()
    thread = threading.Thread(target=_capture_loop, name="capture", daemon=True,
                              args=(capture, first, size, pace_fps, slot, stop_capture))
    state = _Session()
    thread.start()
    try:
        while True:
            if config.max_frames is not None and state.frames >= config.max_frames:
                state.reason = "max_frames"
                break
            item = slot.take(stop)
            if item is None:
                if slot.error is not None:
                    raise _as_error(slot.error)
                state.reason = "stopped" if stop.is_set() else "end of input"
                break
            name, stylizer = models[state.model]
            taken = time.monotonic()
            stylised = _stylise(stylizer, item.image, config.preserve_color)
            now = time.monotonic()
            if recorder is not None:
                recorder.add(stylised, item.time)
            if state.last_time is not None:
                rate = 1.0 / max(now - state.last_time, 1e-6)
                state.fps = rate if state.fps == 0 else 0.9 * state.fps + 0.1 * rate
            state.last_time = now
            state.frames += 1
            state.latency_sum += now - item.time
            state.latencies.append(now - item.time)
            if callback is not None:
                frame = WebcamFrame(state.frames, item.image, stylised, state.model, name, state.side_by_side,
                                    state.fps, now - item.time, now - taken, slot.dropped, state.pending_snapshot)
                state.pending_snapshot = None
                if not state.apply(callback(frame), len(models), stylised, config):
                    break
    finally:
        stop_capture.set()
        thread.join()
    return state, slot


def _check_config(config: WebcamConfig) -> Path | None:
    """Validate the settings before opening anything; returns the recording path (or None)."""
    if not config.model_paths and not config.style_images:
        raise ConfigError("the webcam needs at least one model (--model_path) or painting (--style_image)")
    for path in config.model_paths:
        require_file(path, "model", ModelError)
    if config.max_size is not None and config.max_size < MIN_INPUT_SIDE:
        raise ConfigError(f"--max_size must be >= {MIN_INPUT_SIDE}, got {config.max_size}")
    if config.max_frames is not None and config.max_frames < 1:
        raise ConfigError(f"--max_frames must be >= 1, got {config.max_frames}")
    color.check_mode(config.preserve_color)
    if config.video_output is None:
        return None
    target = Path(config.video_output)
    if target.is_dir():
        raise OutputError(f"--video_output is a folder: {target} (give a file name, e.g. {target / 'out.mp4'})")
    if target.suffix.lower() not in CONTAINERS:
        raise OutputError(f"unsupported output video extension '{target.suffix}' for {target} "
                          f"(use {', '.join(CONTAINERS)})")
    if target.is_dir():
        raise OutputError(f"output video path is a directory: {target}")
    ensure_not_input(target, [*config.model_paths, *config.style_images, str(_camera_spec(config.camera))])
    return target


def _stylizers(config: WebcamConfig, device: torch.device) -> list[tuple[str, Any]]:
    """(name, stylizer) for every model, then every painting: the keys switch between them in this order."""
    models = [(Path(p).stem, Stylizer(load_model(p)[0], device, config.precision)) for p in config.model_paths]
    if config.style_images:
        paintings = Paintings(tuple(config.style_images), None, config.style_size, stroke_scale=config.stroke_scale)
        stylizers = each_painting(paintings, device=device, precision=config.precision)
        models += [(Path(p).stem, stylizer) for p, stylizer in zip(config.style_images, stylizers)]
    return models


class _NothingRecorded(Exception):
    """A run stopped before its first frame: the empty recording is discarded, not an error."""


def run_webcam(config: WebcamConfig, callback: Callable[[WebcamFrame], str | int | None] | None = None,
               stop: threading.Event | None = None) -> WebcamResult:
    """Stylise a camera stream live; `callback` gets every stylised frame and may return a command.

    Commands: "next", "previous", an int (switch model), "side_by_side", "snapshot", "quit" (see COMMANDS).
    Setting `stop` (e.g. from a signal handler) ends the run cleanly, like a frame limit: the recording is kept;
    stopped before the first frame, nothing is written (result.frames == 0, result.output is None).
    """
    target = _check_config(config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    stop = stop or threading.Event()
    capture, first, camera_fps, is_file = open_camera(config.camera)
    created = first_missing(target.parent) if target is not None else None
    try:
        size = working_size(first.shape[0], first.shape[1], config.max_size)
        models = _stylizers(config, device)
        started = time.monotonic()  # frames/s counts from here: the models are loaded
        if target is not None:
            prepare_output_dir(target.parent)
        with (atomic_path(target) if target is not None else contextlib.nullcontext()) as tmp:
            recorder = _Recorder(tmp, size, camera_fps, config) if tmp is not None else None
            try:
                state, slot = _stream(capture, first, size, camera_fps if is_file else None, models, recorder,
                                      config, callback, stop)
            except BaseException:
                if recorder is not None:
                    with contextlib.suppress(OutputError):
                        recorder.close()
                raise
            if recorder is not None:
                recorder.close()
            if recorder is not None and state.frames == 0:
                if stop.is_set():  # stopped before the first frame: no recording, and no folder made for it
                    raise _NothingRecorded
                raise VideoError("no frame was stylised, so nothing was recorded")
    except _NothingRecorded:
        target = None
        remove_empty_tree(created)
    except BaseException:
        remove_empty_tree(created)
        raise
    finally:
        capture.release()
    elapsed = time.monotonic() - started
    ordered = sorted(state.latencies)
    return WebcamResult(
        # Dropped: every delivered frame not stylised, the one still waiting in the slot at the stop included.
        frames=state.frames, captured=slot.captured, dropped=max(0, slot.captured - state.frames),
        width=size[1], height=size[0],
        camera_fps=camera_fps, elapsed_s=elapsed, fps=state.frames / elapsed if elapsed > 0 else 0.0,
        latency_mean_s=state.latency_sum / max(state.frames, 1),
        latency_p95_s=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0,
        output=target, snapshots=tuple(state.snapshots), stop_reason=state.reason)


__all__ = ["COMMANDS", "KEYS", "WebcamConfig", "WebcamFrame", "WebcamResult", "command_for_key", "open_camera",
           "run_webcam", "save_snapshot", "working_size"]
