"""Video style transfer with a trained transformer network: decode -> batched stylise -> encode, audio kept.

Three stages overlap: a decoder thread turns frames into RGB arrays, the calling thread stylises them in
batches, an encoder thread writes H.264 and interleaves the input's audio. Bounded queues between the stages
keep memory constant however long the video is. Frame timestamps are kept, so the output has the input's
frame count, frame rate (variable rate included) and audio sync. A damaged input is written with the frames that
decode; the result says how many packets did not (VideoResult.undecodable_packets). The file is written under a
temporary name and renamed at the end: an error or Ctrl-C never leaves a half-written video at the output path.
"""

from __future__ import annotations

import io
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import av
import numpy as np
import torch
from torch import nn

from ..core import color
from ..core.device import check_precision, resolve_device
from ..core.errors import (ConfigError, DeviceError, OutputError, Stopped, VideoError, first_line,
                           is_finite_non_negative, require_file)
from ..core.images import atomic_path, ensure_not_input, no_empty_folders_on_failure, path_list, prepare_output_dir
from ..networks.arbitrary import STYLE_SIZE
from ..networks.transformer import MIN_INPUT_SIDE
from .control import Control, ControlledStylizer
from .flicker import FlickerMeter
from .painting import Paintings
from .sources import check_source, controlled_run
from .stylizer import Stylizer

# Output extension -> (PyAV container format, audio codecs it may carry as a stream copy). Players handle these
# codecs in MP4/MOV; anything else is re-encoded to AAC. Matroska takes whatever FFmpeg's muxer accepts.
CONTAINERS: dict[str, tuple[str, frozenset[str] | None]] = {
    ".mp4": ("mp4", frozenset({"aac", "mp3", "ac3", "eac3", "alac"})),
    ".m4v": ("mp4", frozenset({"aac", "mp3", "ac3", "eac3", "alac"})),
    ".mov": ("mov", frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"})),
    ".mkv": ("matroska", None),
}
# Image demuxers: FFmpeg opens a PNG or JPEG as a one-frame "video"; refuse those.
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "webp")
# H.264 4:2:0 needs even sides; odd sizes are encoded 4:4:4 (High 4:4:4 profile) to keep the exact size.
_PIX_FMT_EVEN, _PIX_FMT_ODD = "yuv420p", "yuv444p"
# AAC channel layouts by channel count (an input layout "N channels" has no channel order AAC accepts).
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AUDIO_LEAD_S = 0.5          # audio is muxed up to this far ahead of the last video frame written
_POLL_S = 0.1                # queue timeouts: how often a blocked stage checks for a stop request


@dataclass
class VideoConfig:
    """What to stylise and how; the CLI fills it from argparse, library users directly."""
    video_input: str | os.PathLike
    video_output: str | os.PathLike
    model_path: str | os.PathLike | None = None   # not needed when a network is passed to stylize_video
    style_images: Sequence[str | os.PathLike] = ()  # or paintings: any painting, now (run/painting.py)
    style_size: int = STYLE_SIZE     # the paintings' shorter side as the style predictor sees them
    stroke_scale: float | None = None  # paintings: the network runs this many times smaller (None: auto)
    batch_size: int = 4
    max_size: int | None = None      # downscale so the longest side is at most this (even sides)
    preserve_color: str = "none"
    device: str = "auto"
    precision: str = "auto"          # auto: bf16 where the device computes it natively, else fp32
    start: float | None = None       # seconds from the start of the video
    duration: float | None = None    # seconds
    crf: int = 18                    # x264 quality: 0 lossless .. 51 worst; 18 is visually transparent
    preset: str = "medium"           # x264 speed/size trade-off
    channels_last: bool | None = None  # NHWC convolutions; None: on for CPU and CUDA (see stylize.Stylizer)
    max_memory: int | None = None    # bytes the network may use; larger frames run in tiles (None: a safe share)
    tile_size: int | None = None     # force tiles of about this side (px)
    measure_flicker: bool = True
    control: Control = Control()     # strength, masks (control.py); model_path then may list one model per mask

    def __post_init__(self) -> None:
        self.style_images = path_list(self.style_images)  # one path given bare is one painting


@dataclass(frozen=True)
class VideoProgress:
    """Reported after every stylised batch."""
    frames_done: int
    total_frames: int | None   # an estimate from the container; None when unknown
    elapsed_s: float
    fps: float


@dataclass(frozen=True)
class VideoInfo:
    """What the input container says about its first video stream."""
    width: int
    height: int
    fps: Fraction
    frames: int | None
    duration: float | None
    rotation: int               # display rotation in degrees, counter-clockwise
    audio_codec: str | None


@dataclass(frozen=True)
class VideoResult:
    """What was written."""
    output: Path
    frames: int
    width: int
    height: int
    fps: Fraction
    pix_fmt: str
    audio: str                  # "copied", "re-encoded (aac)", "none", or "dropped: <why>"
    flicker: float | None       # flow-free flicker score (see flicker.py), None if not measured
    elapsed_s: float
    # Video packets the decoder rejected (a damaged input): their frames are missing. With --start/--duration,
    # counted while reading from the keyframe before the start to the end, so it may include a few outside.
    undecodable_packets: int = 0
    input_frames: int | None = None  # the frame count the input states (None: it states none, or a cut)


# ----------------------------------------------------------------------------------------------- probing
def ffmpeg_path(path: str | os.PathLike) -> str:
    """A local file's name as FFmpeg must be given it: "file:" and the absolute path, so that a name with a colon
    ("2024-01-01T10:00:00.mp4", "take1:final.mp4") is never read as a protocol (FFmpeg would refuse it, or open
    another file)."""
    return "file:" + os.path.abspath(path)


def _open_input(path: Path) -> Any:
    """Open a video file for reading or raise VideoError with the reason."""
    require_file(path, "video", VideoError)
    try:
        container = av.open(ffmpeg_path(path), "r")
    except PermissionError:
        raise VideoError(f"permission denied reading video: {path}") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"not a video file (unrecognised format): {path} ({_reason(exc)})") from None
    name = container.format.name or ""
    if any(tag in name for tag in _IMAGE_FORMATS) or not container.streams.video:
        container.close()
        what = "an image" if any(tag in name for tag in _IMAGE_FORMATS) else "a file with no video stream"
        raise VideoError(f"not a video: {path} is {what}")
    return container


def _reason(exc: BaseException) -> str:
    return first_line(exc, 160)


def _rotation_of(first_frame: Any | None) -> int:
    """Display rotation (degrees, counter-clockwise) from the display matrix FFmpeg attaches to frames."""
    rotation = getattr(first_frame, "rotation", 0) if first_frame is not None else 0
    return int(round(rotation or 0))


def _fps_of(stream: Any) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


def _frame_estimate(stream: Any, container: Any, fps: Fraction) -> int | None:
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return max(1, round(float(stream.duration * stream.time_base) * fps))
    if container.duration:
        return max(1, round(container.duration / 1e6 * fps))
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count, duration, rotation and audio codec of a video file."""
    container = _open_input(Path(path))
    try:
        stream = container.streams.video[0]
        fps = _fps_of(stream)
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / 1e6 if container.duration else None)
        try:
            first = next(_iter_frames(container, stream, Path(path)), None)
        except VideoError:
            first = None
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=fps,
                         frames=_frame_estimate(stream, container, fps), duration=duration,
                         rotation=_rotation_of(first), audio_codec=audio)
    finally:
        container.close()


# --------------------------------------------------------------------------------------------- stylising
def _even_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """Output size: the input's, or scaled to fit max_size with even sides (H.264 4:2:0 friendly)."""
    if not max_size or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    even = lambda v: max(2, int(v * scale) // 2 * 2)  # noqa: E731  (floor: never exceeds max_size)
    return even(height), even(width)


# ------------------------------------------------------------------------------------------ the pipeline
class _Stop(Exception):
    """Raised inside a stage when another stage asked everyone to stop."""


@dataclass
class _Frame:
    image: np.ndarray           # (H, W, 3) uint8, upright
    time: float                 # seconds, on the input's clock


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _AnyOf:
    """Set when any of the events is: a stage stops on a failure elsewhere or on the caller's stop request."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _put(q: queue.Queue, item: Any, stop: threading.Event | _AnyOf) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event | _AnyOf) -> Any:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue


class _Worker(threading.Thread):
    """A pipeline stage: runs `target`, records its exception and stops the others when it fails."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self._stop_event = target, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001  (handed to the calling thread)
            self.error = exc
            self._stop_event.set()


def _join_all(workers: Sequence[threading.Thread]) -> None:
    """Wait for every started stage to end, even when a KeyboardInterrupt arrives meanwhile (then re-raised):
    the containers are closed after this, and a stage still inside FFmpeg would use a freed one."""
    interrupted: BaseException | None = None
    for worker in workers:
        while worker.is_alive():
            try:
                worker.join(_POLL_S)
            except KeyboardInterrupt as exc:
                interrupted = exc
    if interrupted is not None:
        raise interrupted


@dataclass
class _Plan:
    """Everything fixed before the first frame."""
    input_path: Path
    height: int                 # upright output size
    width: int
    rotation_k: int             # np.rot90 turns that make decoded frames upright
    start: float                # seconds on the input clock where the output starts (its time 0)
    end: float | None
    cut: bool                   # --start or --duration given: audio is trimmed (so re-encoded)
    fps: Fraction
    time_base: Fraction         # of the output video stream
    snap: float                 # frame times this close to a frame slot k/fps are moved onto it (seconds)
    declared_frames: int | None  # the container's frame count when it states one and no cut is asked for


def _output_time_base(input_time_base: Fraction | None, fps: Fraction) -> Fraction:
    """The input's time base when it can express 1/fps exactly, else a fine one that can (keeps CFR exact)."""
    if input_time_base and (1 / fps / input_time_base).denominator == 1:
        return input_time_base
    return Fraction(1, fps.numerator * max(1, math.ceil(1000 / fps.numerator)))


def _decode_frames(container: Any, stream: Any, plan: _Plan,
                   rejected: Callable[[], None] | None = None) -> Iterator[_Frame]:
    """Decoded frames in [start, end), as upright RGB arrays at the output size; `rejected` is called for each
    packet the decoder rejects on the way (a damaged input: a frame is missing)."""
    stream.thread_type = "AUTO"
    half_frame = 0.5 / float(plan.fps)
    if plan.start > 0:
        container.seek(int(plan.start / stream.time_base), stream=stream, backward=True)
    coded_h, coded_w = (plan.width, plan.height) if plan.rotation_k % 2 else (plan.height, plan.width)
    index = 0
    for frame in _iter_frames(container, stream, plan.input_path, rejected):
        t = float(frame.time) if frame.time is not None else plan.start + index / float(plan.fps)
        index += 1
        if t < plan.start - half_frame:
            continue
        if plan.end is not None and t >= plan.end - half_frame:
            break
        image = frame.to_ndarray(format="rgb24", width=coded_w, height=coded_h, interpolation="AREA")
        if plan.rotation_k:
            image = np.rot90(image, plan.rotation_k)
        yield _Frame(np.ascontiguousarray(image), t)


class _Audio:
    """The input's first audio track, stream-copied or re-encoded to AAC, muxed in step with the video."""

    def __init__(self, output: Any, plan: _Plan, copy_codecs: frozenset[str] | None, container_format: str):
        self.output, self.plan = output, plan
        self.input = av.open(ffmpeg_path(plan.input_path), "r")
        self.stream_in = self.input.streams.audio[0]
        self.mode, self.stream_out = "none", None
        self._packets: Iterator[Any] | None = None
        self._pending: list[Any] = []
        self._samples_out = 0
        codec = self.stream_in.codec_context.name if self.stream_in.codec_context else None
        copy_ok = codec is not None and (copy_codecs is None or codec in copy_codecs)
        # A cut is re-encoded: packet boundaries (~21 ms for AAC) cannot match the first video frame exactly.
        if not plan.cut and copy_ok and _muxer_accepts(self.stream_in, container_format):
            self.stream_out = output.add_stream_from_template(self.stream_in)
            self.mode = "copied"
        elif codec is not None and self.stream_in.codec_context.is_decoder:
            channels = self.stream_in.codec_context.channels
            layout = _AAC_LAYOUTS.get(channels, "stereo")
            rate = self.stream_in.rate if self.stream_in.rate in _AAC_RATES else 48000
            self.stream_out = output.add_stream("aac", rate=rate, layout=layout)
            self.stream_out.bit_rate = 96000 * min(channels, 2) if channels else 192000
            self._layout, self._channels = layout, channels
            self.mode = "re-encoded (aac)"
        else:
            self.mode = f"dropped: no decoder for audio codec '{codec}'"

    # -- stream copy
    def _copy_until(self, t: float | None) -> None:
        if self._packets is None:
            self._packets = self.input.demux(self.stream_in)
            self._shift = round(self.plan.start / self.stream_in.time_base) if self.plan.start else 0
        while True:
            packet = self._pending.pop() if self._pending else next(self._packets, None)
            if packet is None:
                return
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's empty flush packet
            when = float(packet.pts * packet.time_base) if packet.pts is not None else None
            if t is not None and when is not None and when - self.plan.start > t:
                self._pending.append(packet)
                return
            if self._shift:
                packet.pts = None if packet.pts is None else packet.pts - self._shift
                packet.dts = None if packet.dts is None else packet.dts - self._shift
            packet.stream = self.stream_out
            self.output.mux(packet)

    # -- re-encode with sample-exact trimming to [start, end)
    def _frames(self) -> Iterator[Any]:
        if self.plan.start > 0:
            self.input.seek(int(max(0.0, self.plan.start - 1.0) * 1e6), backward=True)
        for frame in self.input.decode(self.stream_in):
            if frame.time is None:
                continue
            rate = frame.sample_rate
            first = max(0, math.ceil((self.plan.start - float(frame.time)) * rate - 1e-6))
            last = frame.samples
            if self.plan.end is not None:
                last = min(last, math.floor((self.plan.end - float(frame.time)) * rate + 1e-6))
            if last <= first:
                if self.plan.end is not None and float(frame.time) >= self.plan.end:
                    return
                continue
            data = frame.to_ndarray()
            channels = frame.layout.nb_channels
            if frame.format.is_planar:
                data = data[:, first:last]
            else:
                data = data[:, first * channels:last * channels]
            # An unordered layout ("2 channels") is relabelled with the standard one for its channel count.
            layout = self._layout if channels == self._channels and channels in _AAC_LAYOUTS else frame.layout.name
            out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=layout)
            out.sample_rate = rate
            out.time_base = Fraction(1, rate)
            out.pts = self._samples_out
            self._samples_out += last - first
            yield out, float(frame.time) + first / rate

    def _encode_until(self, t: float | None) -> None:
        if self._packets is None:
            self._packets = self._frames()
        while True:
            item = self._pending.pop() if self._pending else next(self._packets, None)
            if item is None:
                return
            frame, when = item
            if t is not None and when - self.plan.start > t:
                self._pending.append(item)
                return
            for packet in self.stream_out.encode(frame):
                self.output.mux(packet)

    def mux_until(self, t: float | None) -> None:
        """Mux audio up to `t` seconds of output time (None: all of it, then flush)."""
        try:
            if self.mode == "copied":
                self._copy_until(t)
            elif self.mode.startswith("re-encoded"):
                self._encode_until(t)
                if t is None:
                    for packet in self.stream_out.encode(None):
                        self.output.mux(packet)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot process the audio track of {self.plan.input_path}: {_reason(exc)}") from None

    def close(self) -> None:
        self.input.close()


def _muxer_accepts(stream: Any, container_format: str) -> bool:
    """Whether the output container can hold this audio stream as a copy (probed on an in-memory file)."""
    try:
        with av.open(io.BytesIO(), "w", format=container_format) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError, TypeError):
        return False


def _add_video_stream(output: Any, plan: _Plan, rotation: int, config: VideoConfig) -> Any:
    # The encoded (coded) frame is the input's orientation; the display rotation is carried over as metadata.
    coded_h, coded_w = (plan.width, plan.height) if plan.rotation_k % 2 else (plan.height, plan.width)
    pix_fmt = _PIX_FMT_EVEN if coded_w % 2 == 0 and coded_h % 2 == 0 else _PIX_FMT_ODD
    stream = output.add_stream("libx264", rate=plan.fps,
                               options={"crf": str(config.crf), "preset": config.preset})
    stream.width, stream.height, stream.pix_fmt = coded_w, coded_h, pix_fmt
    stream.time_base = plan.time_base
    stream.codec_context.time_base = plan.time_base
    stream.codec_context.framerate = plan.fps
    # Frames are converted to YUV with BT.709 and tagged so players decode them with the same matrix.
    stream.codec_context.colorspace = 1       # AVCOL_SPC_BT709
    stream.codec_context.color_primaries = 1  # AVCOL_PRI_BT709
    stream.codec_context.color_trc = 1        # AVCOL_TRC_BT709
    stream.codec_context.color_range = 1      # AVCOL_RANGE_MPEG (limited)
    if rotation:
        stream.set_display_rotation(rotation)
    return stream


def _check_config(config: VideoConfig) -> tuple[Path, Path, str, frozenset[str] | None]:
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise ConfigError(f"batch size must be an integer >= 1, got {config.batch_size}")
    if config.max_size is not None and config.max_size < MIN_INPUT_SIDE:
        raise ConfigError(f"max size must be >= {MIN_INPUT_SIDE}, got {config.max_size}")
    for name in ("start", "duration"):
        value = getattr(config, name)
        if value is not None and not is_finite_non_negative(value):
            raise ConfigError(f"--{name} must be a finite number of seconds >= 0, got {value}")
    if config.duration is not None and config.duration == 0:
        raise ConfigError("--duration must be > 0 seconds")
    if not 0 <= config.crf <= 51:
        raise ConfigError(f"crf must be between 0 and 51, got {config.crf}")
    color.check_mode(config.preserve_color)
    source, target = Path(config.video_input), Path(config.video_output)
    suffix = target.suffix.lower()
    if target.is_dir():
        raise OutputError(f"--video_output is a folder: {target} (give a file name, e.g. {target / 'out.mp4'})")
    if suffix not in CONTAINERS:
        raise OutputError(f"unsupported output video extension '{target.suffix}' for {target} "
                          f"(use {', '.join(CONTAINERS)})")
    if target.is_dir():
        raise OutputError(f"output video path is a directory: {target}")
    ensure_not_input(target, [source])
    if source.exists() and target.exists() and os.path.samefile(source, target):
        raise OutputError(f"refusing to overwrite an input file: {target}")
    fmt, copy_codecs = CONTAINERS[suffix]
    return source, target, fmt, copy_codecs


def stylize_video(config: VideoConfig, callback: Callable[[VideoProgress], None] | None = None,
                  network: nn.Module | None = None, stop: threading.Event | None = None) -> VideoResult:
    """Stylise a video file with a transformer network (loaded from config.model_path unless given), or with
    paintings (config.style_images: Magenta's arbitrary-style network, each style vector computed once).

    Setting `stop` (e.g. from a signal handler) ends the run at the next frame with Stopped, leaving no output:
    unlike an exception raised into the pipeline, it never interrupts a stage inside FFmpeg.
    """
    source, target, container_format, copy_codecs = _check_config(config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    started = time.perf_counter()
    paintings = Paintings(tuple(config.style_images), None, config.style_size, stroke_scale=config.stroke_scale)
    check_source(config.model_path, paintings, network)
    plan, total, rotation = _make_plan(source, config)  # before loading the model: a bad video fails fast
    # Paintings: each style vector once for the clip (with --strength, the first frame's own vector too).
    stylizer, _ = controlled_run(config.model_path, paintings, config.control, config.preserve_color, network,
                                 per_image=False, device=device, precision=config.precision,
                                 channels_last=config.channels_last, max_memory=config.max_memory,
                                 tile_size=config.tile_size)
    if isinstance(stylizer, ControlledStylizer):
        config = replace(config, preserve_color="none")  # applied inside, before the blend
    with no_empty_folders_on_failure(target.parent):  # a failed run leaves no empty output folder
        prepare_output_dir(target.parent)
        return _write(config, source, target, plan, container_format, copy_codecs, rotation, stylizer, total,
                      started, callback, stop)


def _write(config: VideoConfig, source: Path, target: Path, plan: _Plan, container_format: str,
           copy_codecs: frozenset[str] | None, rotation: int, stylizer: Stylizer, total: int | None, started: float,
           callback: Callable[[VideoProgress], None] | None, stop: threading.Event | None) -> VideoResult:
    """Stylise into a temporary file renamed onto `target` when complete."""
    with atomic_path(target) as tmp:
        frames, pix_fmt, audio_mode, flicker, undecodable = _run_pipeline(
            plan, tmp, container_format, copy_codecs, rotation, config, stylizer, total, started, callback, stop)
        if frames == 0:
            raise VideoError(f"no video frames in the requested range of {source}"
                             + (f" (--start {config.start:g}s is past the end?)" if config.start else ""))
    return VideoResult(output=target, frames=frames, width=plan.width, height=plan.height, fps=plan.fps,
                       pix_fmt=pix_fmt, audio=audio_mode, flicker=flicker, elapsed_s=time.perf_counter() - started,
                       undecodable_packets=undecodable, input_frames=plan.declared_frames)


def _make_plan(source: Path, config: VideoConfig) -> tuple[_Plan, int | None, int]:
    """Read the input's stream parameters and first frame: (plan, estimated frame count, display rotation)."""
    container = _open_input(source)
    try:
        stream = container.streams.video[0]
        fps = _fps_of(stream)
        origin = container.start_time / 1e6 if container.start_time is not None else 0.0
        start = origin + (config.start or 0.0)
        end = start + config.duration if config.duration is not None else None
        total = _frame_estimate(stream, container, fps)
        if total is not None and config.start:
            total = max(0, total - round(config.start * fps))
        if config.duration is not None:
            cap = max(1, round(config.duration * fps))
            total = cap if total is None else min(total, cap)
        first = _first_frame(container, stream, source)
        time_base = stream.time_base  # read while open: PyAV 18.1.1 refuses a closed container's stream's fields
        cut = config.start is not None or config.duration is not None
        declared = int(stream.frames) if stream.frames and not cut else None
    finally:
        container.close()
    rotation = _rotation_of(first)
    rotation_k = (round(rotation / 90) % 4) if rotation % 90 == 0 else 0  # other angles: left as they are
    upright_h, upright_w = (first.width, first.height) if rotation_k % 2 else (first.height, first.width)
    height, width = _even_size(upright_h, upright_w, config.max_size)
    if min(height, width) < MIN_INPUT_SIDE:
        scaled = f", {width}x{height} at --max_size {config.max_size}" if config.max_size else ""
        raise VideoError(f"video frames are too small ({upright_w}x{upright_h}{scaled}): the network needs at least "
                         f"{MIN_INPUT_SIDE} px per side")
    plan = _Plan(input_path=source, height=height, width=width, rotation_k=rotation_k, start=start, end=end,
                 cut=cut, fps=fps, time_base=_output_time_base(time_base, fps),
                 snap=float(time_base) if time_base else 0.0, declared_frames=declared)
    return plan, total, rotation if rotation_k else 0


def _first_frame(container: Any, stream: Any, source: Path) -> Any:
    frame = next(_iter_frames(container, stream, source), None)
    if frame is None:
        raise VideoError(f"no decodable video frames in {source}")
    return frame


def _iter_frames(container: Any, stream: Any, source: Path,
                 rejected: Callable[[], None] | None = None) -> Iterator[Any]:
    """Decoded frames; packets the decoder rejects are skipped (a damaged file yields what it can) and counted
    by calling `rejected`."""
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                # With frame threads the error surfaces a few packets late: counted, but not placed in time.
                if rejected is not None:
                    rejected()
                continue
            yield from frames
    except (av.FFmpegError, ValueError) as exc:  # the demuxer itself failed: the file is cut short or corrupt
        raise VideoError(f"cannot read the video stream of {source}: {_reason(exc)}") from None


def _output_frame(image: np.ndarray, t: float, plan: _Plan, pix_fmt: str, last_pts: int) -> Any:
    """A stylised RGB frame as an encoder frame: rotated back, converted, timed at its input time (snapped
    to the frame grid, and always after the previous frame)."""
    if plan.rotation_k:
        image = np.ascontiguousarray(np.rot90(image, -plan.rotation_k))
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt, dst_colorspace="ITU709")
    rel = t - plan.start
    slot = round(rel * plan.fps) / plan.fps  # undo e.g. Matroska's millisecond rounding
    rel = float(slot) if abs(rel - float(slot)) <= plan.snap else rel
    frame.pts = max(round(rel / plan.time_base), last_pts + 1)
    frame.time_base = plan.time_base
    return frame


def _run_pipeline(plan: _Plan, tmp: Path, container_format: str, copy_codecs: frozenset[str] | None,
                  rotation: int, config: VideoConfig, stylizer: Stylizer,
                  total: int | None, started: float, callback: Callable[[VideoProgress], None] | None,
                  cancel: threading.Event | None = None) -> tuple[int, str, str, float | None, int]:
    """Run decode / stylise / encode; returns (frames written, pixel format, audio mode, flicker score,
    undecodable video packets).

    `cancel` (set by the caller, e.g. from a signal handler) stops every stage at its next frame: Stopped.
    """
    source = av.open(ffmpeg_path(plan.input_path), "r")
    try:
        output = av.open(ffmpeg_path(tmp), "w", format=container_format,
                         options={"movflags": "+faststart"} if container_format in ("mp4", "mov") else {})
    except (av.FFmpegError, OSError) as exc:
        source.close()
        raise OutputError(f"cannot write {config.video_output}: {_reason(exc)}") from None
    audio: _Audio | None = None
    try:
        video_out = _add_video_stream(output, plan, rotation, config)
        if source.streams.audio:
            audio = _Audio(output, plan, copy_codecs, container_format)
        stages = _Stages(source, output, video_out, audio, plan, config.batch_size, cancel, config.video_output)
        meter = FlickerMeter() if config.measure_flicker else None
        stages.run(lambda: _stylise_stream(stages.decoded, stages.stylised, stages.halt, stylizer, config, meter,
                                           total, started, callback))
        if cancel is not None and cancel.is_set():
            raise Stopped("stopped on request: no partial output left behind")
        return (stages.written, video_out.pix_fmt, audio.mode if audio else "none", meter.score if meter else None,
                stages.undecodable)
    finally:
        if audio is not None:
            audio.close()
        source.close()
        try:
            output.close()
        except (av.FFmpegError, OSError, ValueError):
            pass  # a failed run: the temporary file is removed by atomic_path


class _Stages:
    """The decode and encode threads around the calling thread's stylise stage, joined before any container
    is closed, whatever stops them (the end, a failure, the caller's stop, Ctrl-C)."""

    def __init__(self, source: Any, output: Any, video_out: Any, audio: _Audio | None, plan: _Plan, batch: int,
                 cancel: threading.Event | None, output_name: str | os.PathLike) -> None:
        self.source, self.output, self.video_out, self.audio, self.plan = source, output, video_out, audio, plan
        self.output_name = output_name
        self.stop = threading.Event()              # set by a failing stage, and at the end
        self.halt = _AnyOf(self.stop, cancel)      # what every stage checks between frames
        self.decoded: queue.Queue = queue.Queue(maxsize=2 * batch)   # single frames
        self.stylised: queue.Queue = queue.Queue(maxsize=2)          # whole batches
        self.written = 0
        self.undecodable = 0                       # packets the decoder rejected (written by the decode thread)

    def _rejected(self) -> None:
        """Count a video packet the decoder rejected: its frame is missing from the output."""
        self.undecodable += 1

    def decode(self) -> None:
        count = 0
        try:
            for frame in _decode_frames(self.source, self.source.streams.video[0], self.plan, self._rejected):
                _put(self.decoded, frame, self.halt)
                count += 1
        except VideoError as exc:
            _put(self.decoded, _Failure(exc), self.halt)
        except av.FFmpegError as exc:
            _put(self.decoded, _Failure(VideoError(f"cannot decode {self.plan.input_path} after {count} frames: "
                                                   f"{_reason(exc)}")), self.halt)
        _put(self.decoded, _END, self.halt)

    def encode(self) -> None:
        last_pts = -1
        while (item := _get(self.stylised, self.halt)) is not _END:
            images, times = item
            for image, t in zip(images, times):
                frame = _output_frame(image, t, self.plan, self.video_out.pix_fmt, last_pts)
                last_pts = frame.pts
                _mux(self.output, self.video_out.encode(frame))
                self.written += 1
                if self.audio is not None:
                    self.audio.mux_until(t - self.plan.start + _AUDIO_LEAD_S)
        _mux(self.output, self.video_out.encode(None))
        if self.audio is not None:
            self.audio.mux_until(None)

    def run(self, stylise: Callable[[], Any]) -> None:
        """Start the threads, run `stylise` here, let the encoder finish; raise the first stage's error."""
        workers: list[_Worker] = []
        try:
            for name, target in (("decode", self.decode), ("encode", self.encode)):
                workers.append(_Worker(name, target, self.stop))
                workers[-1].start()
            stylise()
            _put(self.stylised, _END, self.halt)
            while workers[1].is_alive() and not self.halt.is_set():  # the encoder flushes and writes the audio
                workers[1].join(_POLL_S)
        except _Stop:
            pass  # a stage failed or the caller stopped the run: said below
        finally:
            self.stop.set()  # ends the decoder, and the encoder too on an error or a stop
            _join_all(workers)
        for worker in workers:
            if worker.error is not None:
                raise _as_video_error(worker.error, self.output_name)


def _mux(output: Any, packets: list[Any]) -> None:
    for packet in packets:
        output.mux(packet)


def _as_video_error(error: BaseException, output_name: str | os.PathLike) -> BaseException:
    if isinstance(error, (VideoError, OutputError, ConfigError)):
        return error
    if isinstance(error, OSError):
        return OutputError(f"cannot write {output_name}: {_reason(error)}")
    if isinstance(error, av.FFmpegError):
        return VideoError(f"cannot encode {output_name}: {_reason(error)}")
    return error


def _stylise_stream(decoded: queue.Queue, stylised: queue.Queue, stop: threading.Event | _AnyOf,
                    stylizer: Stylizer, config: VideoConfig, meter: FlickerMeter | None, total: int | None,
                    started: float, callback: Callable[[VideoProgress], None] | None) -> int:
    """The calling thread's stage: batches of decoded frames -> network -> encoder queue."""
    done = 0
    finished = False
    while not finished:
        frames: list[_Frame] = []
        while len(frames) < config.batch_size:
            item = _get(decoded, stop)
            if item is _END:
                finished = True
                break
            if isinstance(item, _Failure):
                raise item.error
            frames.append(item)
        if not frames:
            break
        inputs = torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float().div_(255.0)
        try:
            outputs = stylizer(inputs)  # on the CPU, like inputs
        except torch.OutOfMemoryError:
            raise DeviceError(f"out of memory on {stylizer.device}: lower --batch_size or --max_size") from None
        if config.preserve_color != "none":
            outputs = torch.stack([color.preserve_color(o, i, config.preserve_color) for o, i in zip(outputs, inputs)])
        if meter is not None:
            meter.update(inputs, outputs)
        images = outputs.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        _put(stylised, (images, [f.time for f in frames]), stop)
        done += len(frames)
        if callback is not None:
            elapsed = time.perf_counter() - started
            callback(VideoProgress(frames_done=done, total_frames=max(total, done) if total else None,
                                   elapsed_s=elapsed, fps=done / elapsed if elapsed > 0 else 0.0))
    return done


__all__ = ["CONTAINERS", "VideoConfig", "VideoInfo", "VideoProgress", "VideoResult", "probe_video",
           "stylize_video"]
