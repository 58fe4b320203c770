"""Webcam mode without a camera: a video file opened as the camera, headless, recording to a file; the
newest-frame slot that drops old frames; commands; the CLI's frame limit, SIGINT and bad-camera errors; the
window under Xvfb when it is installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_one_line_error
from stylefusion.core.errors import OutputError, VideoError
from stylefusion.networks.transformer import TransformerNet
from stylefusion.networks.model_files import save_model
from stylefusion.run.webcam import (WebcamConfig, _Captured, _Newest, command_for_key, open_camera, run_webcam,
                                    working_size)
from test_video import make_clip

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
FPS = 30


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("webcam")
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_model(TransformerNet(), folder / f"model{seed}.pth")
    (folder / "text.jpg").write_text("not an image")  # OpenCV's FFmpeg opens it and logs "No JPEG data found"
    return {"dir": folder, "model0": folder / "model0.pth", "model1": folder / "model1.pth",
            "clip": make_clip(folder / "camera.mp4", width=64, height=48, frames=45, fps=FPS, audio=None),
            "long": make_clip(folder / "long.mp4", width=64, height=48, frames=600, fps=FPS, audio=None)}


def frame_count(path: Path) -> tuple[int, int, int, int]:
    """(frames in the header, frames decoded, width, height) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(stream))
        return stream.frames, decoded, stream.codec_context.width, stream.codec_context.height


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


# -------------------------------------------------------------------------------------------------- units
def test_newest_slot_keeps_only_the_latest_frame() -> None:
    slot, stop = _Newest(), threading.Event()
    for i in range(3):
        slot.put(_Captured(np.full((2, 2, 3), i, np.uint8), float(i)))
    item = slot.take(stop)
    assert item is not None and item.time == 2.0
    assert (slot.captured, slot.dropped) == (3, 2)
    slot.end()
    assert slot.take(stop) is None  # ended and empty: no waiting


def test_keys_and_working_size() -> None:
    assert [command_for_key(ord(k)) for k in "nps q"] == ["next", "previous", "side_by_side", "snapshot", "quit"]
    assert command_for_key(27) == "quit" and command_for_key(ord("1")) == 0 and command_for_key(ord("9")) == 8
    assert command_for_key(ord("x")) is None and command_for_key(-1) is None
    assert working_size(480, 640, None) == (480, 640)
    assert working_size(720, 1280, 640) == (360, 640)
    assert working_size(361, 641, None) == (360, 640)  # even sides for H.264 4:2:0
    with pytest.raises(VideoError, match="too small"):
        working_size(48, 64, 4)


def test_missing_camera_is_a_video_error(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="camera not found"):
        open_camera(str(tmp_path / "missing.mp4"))
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="cannot read .* as a video: damaged"):  # a file, not a busy device
        open_camera(str(tmp_path / "text.mp4"))


# ------------------------------------------------------------------------------------------------ library
def test_records_a_file_camera_at_its_pace(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    result = run_webcam(WebcamConfig(camera=str(files["long"]), model_paths=[files["model0"]], max_size=32,
                                     video_output=out, max_frames=5, device="cpu"))
    assert result.stop_reason == "max_frames" and result.frames == 5
    # The file is paced like a camera: never more frames than it could deliver in the run time.
    assert 0 < result.frames <= result.captured <= FPS * result.elapsed_s + 1
    assert result.frames + result.dropped == result.captured  # a frame read but not shown counts as dropped
    assert result.camera_fps == FPS and (result.width, result.height) == (32, 24)
    assert frame_count(out) == (5, 5, 32, 24)
    assert no_temp_files(tmp_path)


def test_a_file_url_camera_is_the_file_it_names(files: dict[str, Path], tmp_path: Path) -> None:
    """file:///…/clip.mp4 is paced like the path, and a recording over it is refused (it replaced the clip)."""
    clip = tmp_path / "clip.mp4"
    shutil.copy(files["long"], clip)
    before = clip.read_bytes()
    url = clip.resolve().as_uri()
    capture, _, fps, is_file = open_camera(url)
    capture.release()
    assert is_file and fps == FPS
    with pytest.raises(OutputError, match="overwrite an input"):
        run_webcam(WebcamConfig(camera=url, model_paths=[files["model0"]], max_size=32, video_output=clip,
                                max_frames=2, device="cpu"))
    assert clip.read_bytes() == before


def test_slow_consumer_drops_frames_and_latency_stays_bounded(files: dict[str, Path]) -> None:
    ages = []

    def slow(frame) -> None:
        ages.append(frame.latency_s - frame.stylise_s)  # how old the frame was when the network took it
        time.sleep(0.2)  # a display much slower than the 30 fps camera

    result = run_webcam(WebcamConfig(camera=str(files["long"]), model_paths=[files["model0"]], max_size=32,
                                     max_frames=6, device="cpu"), slow)
    assert result.frames == 6 and result.dropped > 0 and result.frames + result.dropped == result.captured
    # A queue would make the k-th frame wait k * 0.2 s at least; the newest-frame slot hands over a fresh one.
    assert max(ages) < 0.15, ages


def test_commands_switch_models_compose_and_snapshot(files: dict[str, Path], tmp_path: Path) -> None:
    commands = iter(["next", "side_by_side", "snapshot", 0, "previous", 7, "quit"])
    frames = []

    def on_frame(frame):
        frames.append((frame.model_index, frame.model_name, frame.side_by_side, frame.display_bgr().shape,
                       frame.snapshot, frame.stylised.copy()))
        return next(commands)

    result = run_webcam(WebcamConfig(camera=str(files["long"]), model_paths=[files["model0"], files["model1"]],
                                     max_size=32, snapshot_dir=tmp_path / "snaps", device="cpu"), on_frame)
    assert result.stop_reason == "quit" and result.frames == 7 and result.output is None
    assert [f[0] for f in frames] == [0, 1, 1, 1, 0, 1, 1]  # next, -, -, 0, previous (wraps), 7 is out of range
    assert [f[1] for f in frames[:2]] == ["model0", "model1"]
    assert [f[2] for f in frames] == [False, False, True, True, True, True, True]
    assert frames[1][3] == (24, 32, 3) and frames[2][3] == (24, 64, 3)  # side by side: twice as wide
    assert frames[3][4] is not None and frames[3][4] == result.snapshots[0]
    snapshot = Image.open(result.snapshots[0])
    assert snapshot.size == (32, 24) and np.array_equal(np.asarray(snapshot), frames[2][5])
    assert not np.array_equal(frames[0][5], frames[1][5])  # a different model, a different picture


def test_stop_event_ends_cleanly_and_keeps_the_recording(files: dict[str, Path], tmp_path: Path) -> None:
    stop = threading.Event()

    def on_frame(frame) -> None:
        if frame.index == 3:
            stop.set()  # what the CLI's SIGINT handler does

    out = tmp_path / "rec.mkv"
    result = run_webcam(WebcamConfig(camera=str(files["long"]), model_paths=[files["model0"]], max_size=32,
                                     video_output=out, device="cpu"), on_frame, stop)
    assert result.stop_reason == "stopped" and result.frames == 3
    assert frame_count(out)[1:] == (3, 32, 24)


def test_a_stop_before_the_first_frame_leaves_nothing(files: dict[str, Path], tmp_path: Path) -> None:
    """A signal after the camera opens but before a frame is stylised: no recording, no folder made for it."""
    stop = threading.Event()
    stop.set()
    out = tmp_path / "new" / "folder" / "rec.mp4"
    result = run_webcam(WebcamConfig(camera=str(files["long"]), model_paths=[files["model0"]], max_size=32,
                                     video_output=out, device="cpu"), None, stop)
    assert result.frames == 0 and result.output is None and result.stop_reason == "stopped"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------- CLI
def cli(*args: str, **kwargs) -> list[str]:
    return [sys.executable, "fast_style_transfer.py", "--mode", "webcam", "--device", "cpu", *map(str, args)]


def test_cli_frame_limit_records_headless(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    proc = subprocess.run(cli("--camera", files["long"], "--model_path", files["model0"], files["model1"],
                              "--max_size", 32, "--no_window", "--video_output", out, "--max_frames", 4),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 frames at 32x24" in proc.stderr and f"recorded to {out}" in proc.stderr
    assert frame_count(out) == (4, 4, 32, 24)


def test_cli_sigint_closes_the_recording(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    proc = subprocess.Popen(cli("--camera", files["long"], "--model_path", files["model0"], "--max_size", 32,
                                "--no_window", "--video_output", out), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.suffix == ".mp4" and p.stat().st_size
                                                      for p in tmp_path.iterdir()):
            time.sleep(0.2)  # the temporary file gets its first packets once several frames are encoded
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "(stopped)" in err, err
    header, decoded, width, height = frame_count(out)
    assert header == decoded > 0 and (width, height) == (32, 24)
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("args, env, message", [
    (["--camera", "{dir}/missing.mp4"], {}, "camera not found"),
    (["--camera", "9"], {}, "cannot open camera 9"),
    (["--camera", "{dir}/text.jpg"], {}, "holds no frame"),  # one line: FFmpeg's own lines silenced
    (["--camera", "{clip}", "--no_window"], {}, "--no_window needs --video_output"),
    (["--camera", "{clip}"], {"DISPLAY": "", "WAYLAND_DISPLAY": ""}, "no display"),
    # A display that is gone (a stale DISPLAY after ssh -X): Qt aborted the process with a page of messages.
    (["--camera", "{clip}", "--video_output", "{tmp}/rec.mp4"], {"DISPLAY": ":987", "WAYLAND_DISPLAY": ""},
     "cannot open the webcam window on display :987"),
    (["--camera", "{clip}", "--model_path", "{dir}/nope.pth"], {}, "model file not found"),
])
def test_cli_bad_input_one_line(files: dict[str, Path], tmp_path: Path, args, env, message) -> None:
    args = [a.format(dir=files["dir"], clip=files["clip"], tmp=tmp_path) for a in args]
    if "--model_path" not in args:
        args += ["--model_path", str(files["model0"])]
    if "--no_window" not in args and "DISPLAY" not in env:
        args += ["--no_window", "--video_output", str(tmp_path / "rec.mp4")]
    proc = subprocess.run(cli(*args), cwd=REPO, env={**ENV, **env}, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, message)
    assert not (tmp_path / "rec.mp4").exists() and no_temp_files(tmp_path)


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")
def test_window_under_xvfb(files: dict[str, Path], tmp_path: Path) -> None:
    display = f":{90 + os.getpid() % 800}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        assert xvfb.poll() is None, "Xvfb did not start"
        out = tmp_path / "rec.mp4"
        proc = subprocess.run(cli("--camera", files["long"], "--model_path", files["model0"], "--max_size", 32,
                                  "--max_frames", 3, "--video_output", out),
                              cwd=REPO, env={**ENV, "DISPLAY": display}, capture_output=True, text=True, timeout=120)
    finally:
        xvfb.terminate()
        xvfb.wait()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "3 frames at 32x24" in proc.stderr
    assert frame_count(out)[:2] == (3, 3)
