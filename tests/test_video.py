"""Video mode: frame count, rate, size, audio and timing of the output; odd sizes, rotation, cuts, errors,
interruption; and the flicker metrics. Every clip is generated here with PyAV (tiny, about a second long)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import pytest
import torch
from torch import nn

from stylefusion.run import flicker
from stylefusion.core.color import preserve_color
from stylefusion.core.errors import ConfigError, ModelError, OutputError, VideoError
from stylefusion.run.flicker import FlickerMeter, flicker_score, raft_weights_path, warping_error
from stylefusion.networks.transformer import TransformerNet
from stylefusion.networks.model_files import save_model
from stylefusion.run.video import VideoConfig, VideoProgress, probe_video, stylize_video


# ------------------------------------------------------------------------------------------ clip helpers
def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A test frame: gradients that move with the frame index, so order and orientation are checkable."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(xx * 255 // max(width - 1, 1) + index * 8) % 256,
                     yy * 255 // max(height - 1, 1),
                     np.full_like(xx, (index * 40) % 256)], axis=-1).astype(np.uint8)


def make_clip(path: Path, width: int = 64, height: int = 48, frames: int = 24, fps: int = 24,
              audio: str | None = "aac", rotation: int = 0, sample_rate: int = 44100) -> Path:
    """Write an H.264 clip (4:4:4 for odd sizes) with an optional 440 Hz mono sine track as long as the video."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream(audio, rate=sample_rate, layout="mono") if audio else None
        for i in range(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            n = sample_rate * frames // fps
            wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate)
            for k in range(0, n, 1024):
                chunk = wave[k:k + 1024]
                data = chunk.astype(np.float32) if audio == "aac" else (chunk * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(data[None], format="flt" if audio == "aac" else "s16",
                                                   layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, k, Fraction(1, sample_rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def damage_packets(source: Path, target: Path, packets: Sequence[int]) -> Path:
    """Copy `source` with the H.264 length prefix of these video packets (demux order) made impossible, so the
    decoder rejects exactly them (InvalidData) while the container stays readable."""
    data = bytearray(source.read_bytes())
    with av.open(str(source)) as container:
        found = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    for index in packets:
        pos, size = found[index]
        data[pos:pos + 4] = b"\xff\xff\xff\xff"  # a NAL unit longer than its packet
    target.write_bytes(bytes(data))
    return target


def read_video(path: Path) -> dict:
    """Independent read-back: decoded frames (RGB), times, rate, size, pixel format, rotation, audio."""
    info: dict = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info["codec"] = stream.codec_context.name
        info["pix_fmt"] = stream.codec_context.pix_fmt
        info["fps"] = stream.average_rate
        frames = list(container.decode(stream))
        info["frames"] = [f.to_ndarray(format="rgb24") for f in frames]
        info["times"] = [float(f.time) for f in frames]
        info["size"] = (frames[0].width, frames[0].height)
        info["rotation"] = frames[0].rotation
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            info["audio_codec"] = stream.codec_context.name
            info["audio_seconds"] = sum(f.samples for f in container.decode(stream)) / stream.rate
        else:
            info["audio_codec"] = None
    return info


class Negate(nn.Module):
    """A stand-in 'style': 255 - x, so every output pixel can be predicted from the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 255.0 - x


class _Shared(list):
    def __deepcopy__(self, memo: dict) -> "_Shared":  # Stylizer deep-copies the network; keep one record
        return self


class RecordShapes(Negate):
    def __init__(self) -> None:
        super().__init__()
        self.seen = _Shared()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return super().forward(x)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.pth"
    save_model(TransformerNet(), path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


def config(source: Path, target: Path, model: Path | None = None, **kw) -> VideoConfig:
    return VideoConfig(video_input=source, video_output=target, model_path=model, device="cpu", **kw)


# ---------------------------------------------------------------------------------------- the pipeline
def test_output_keeps_frames_rate_size_and_audio(clip: Path, model_path: Path, tmp_path: Path) -> None:
    reports: list[VideoProgress] = []
    out = tmp_path / "out.mp4"
    result = stylize_video(config(clip, out, model_path, batch_size=4), reports.append)
    got = read_video(out)
    assert len(got["frames"]) == 24 and result.frames == 24
    assert got["fps"] == 24 and got["size"] == (64, 48)
    assert got["codec"] == "h264" and got["pix_fmt"] == "yuv420p"
    assert got["audio_codec"] == "aac" and result.audio == "copied"
    assert got["audio_seconds"] == pytest.approx(1.0, abs=0.05)
    assert got["times"][0] == pytest.approx(0.0, abs=1e-6)
    assert reports[-1].frames_done == 24 and reports[-1].total_frames == 24
    assert [r.frames_done for r in reports] == [4, 8, 12, 16, 20, 24]
    assert result.flicker is not None and result.flicker > 0
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left behind


def test_frames_are_stylised_in_order(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "neg.mp4"
    stylize_video(config(clip, out, batch_size=5), network=Negate())  # 24 = 4 full batches + one of 4
    frames = read_video(out)["frames"]
    for i in (0, 7, 23):
        expected = 255 - frame_pattern(i, 64, 48).astype(np.float64)
        assert np.abs(frames[i] - expected).mean() < 6, f"frame {i} is not the negated input frame {i}"
    assert np.abs(frames[7] - (255 - frame_pattern(8, 64, 48).astype(np.float64))).mean() > 6


def test_preserve_color_is_applied_to_every_frame(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept_colours.mp4"
    stylize_video(config(clip, out, preserve_color="luminance", duration=0.25), network=Negate())
    frames = read_video(out)["frames"]
    source = torch.from_numpy(frame_pattern(4, 64, 48)).permute(2, 0, 1).float() / 255
    expected = preserve_color(1 - source, source, "luminance").permute(1, 2, 0).numpy() * 255
    assert len(frames) == 6 and np.abs(frames[4] - expected).mean() < 6
    assert np.abs(frames[4] - (255 - frame_pattern(4, 64, 48).astype(np.float64))).mean() > 12


def test_odd_size_keeps_exact_size(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "odd.mp4", width=63, height=47)
    out = tmp_path / "odd_out.mp4"
    result = stylize_video(config(source, out), network=Negate())
    got = read_video(out)
    assert got["size"] == (63, 47) and len(got["frames"]) == 24 and got["fps"] == 24
    assert got["pix_fmt"] == result.pix_fmt == "yuv444p"  # 4:2:0 H.264 cannot hold odd sides
    assert got["audio_codec"] == "aac"
    expected = 255 - frame_pattern(3, 63, 47).astype(np.float64)
    assert np.abs(got["frames"][3] - expected).mean() < 6


def test_no_audio(tmp_path: Path, model_path: Path) -> None:
    source = make_clip(tmp_path / "silent.mp4", audio=None, frames=10)
    out = tmp_path / "silent_out.mp4"
    result = stylize_video(config(source, out, model_path))
    got = read_video(out)
    assert result.audio == "none" and got["audio_codec"] is None and len(got["frames"]) == 10


def test_start_and_duration_cut_video_and_audio(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.mp4"
    result = stylize_video(config(clip, out, start=0.25, duration=0.5), network=Negate())
    got = read_video(out)
    assert len(got["frames"]) == 12 == result.frames   # frames 6..17 of 24 at 24 fps
    assert got["times"][0] == pytest.approx(0.0, abs=1e-6) and got["fps"] == 24
    assert got["audio_codec"] == "aac" and result.audio.startswith("re-encoded")
    assert got["audio_seconds"] == pytest.approx(0.5, abs=0.05)
    expected = 255 - frame_pattern(6, 64, 48).astype(np.float64)
    assert np.abs(got["frames"][0] - expected).mean() < 6


def test_undecodable_packets_are_skipped_and_counted(tmp_path: Path) -> None:
    source = damage_packets(make_clip(tmp_path / "clip.mp4", audio=None, frames=12), tmp_path / "damaged.mp4",
                            [4, 5, 6])  # the frames shown 3rd, 5th and 7th (pts order 0, 2, 1, 3, 5, 4, 7, ...)
    out = tmp_path / "out.mp4"
    result = stylize_video(config(source, out), network=Negate())
    assert len(read_video(out)["frames"]) == result.frames == 9  # what decoded is written
    assert result.undecodable_packets == 3 and result.input_frames == 12
    cut = stylize_video(config(source, tmp_path / "cut.mp4", duration=0.25), network=Negate())  # frames 0..5
    assert cut.frames == 4 and cut.undecodable_packets > 0 and cut.input_frames is None  # no count for a cut
    whole = stylize_video(config(make_clip(tmp_path / "intact.mp4", audio=None, frames=4), tmp_path / "i.mp4"),
                          network=Negate())
    assert (whole.frames, whole.undecodable_packets, whole.input_frames) == (4, 0, 4)


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "pcm.mkv", audio="pcm_s16le", frames=12)
    out = tmp_path / "pcm_out.mp4"
    result = stylize_video(config(source, out), network=Negate())
    got = read_video(out)
    assert result.audio == "re-encoded (aac)" and got["audio_codec"] == "aac"
    assert got["audio_seconds"] == pytest.approx(0.5, abs=0.05)
    assert got["fps"] == 24 and len(got["frames"]) == 12  # Matroska's millisecond times snapped back to 1/24


def test_rotation_metadata_is_kept_and_network_sees_upright_frames(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "rot.mp4", rotation=90, frames=8)
    assert probe_video(source).rotation == 90
    out = tmp_path / "rot_out.mp4"
    network = RecordShapes()
    result = stylize_video(config(source, out, batch_size=8), network=network)
    got = read_video(out)
    assert got["rotation"] == 90 and got["size"] == (64, 48)          # coded size and display matrix kept
    assert network.seen == [(8, 3, 64, 48)]                          # the network saw the frames upright
    assert (result.width, result.height) == (48, 64)
    expected = 255 - frame_pattern(2, 64, 48).astype(np.float64)
    assert np.abs(got["frames"][2] - expected).mean() < 6


def test_max_size_downscales_to_even_sides(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.mp4"
    result = stylize_video(config(clip, out, max_size=33), network=Negate())
    got = read_video(out)
    assert got["size"] == (32, 24) == (result.width, result.height) and got["pix_fmt"] == "yuv420p"


def test_interruption_leaves_no_file_and_keeps_an_old_output(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")

    def interrupt(progress: VideoProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stylize_video(config(clip, out, batch_size=2), interrupt, network=Negate())
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


# ------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_one_line_errors(clip: Path, model_path: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    image = tmp_path / "still.png"
    av.VideoFrame.from_ndarray(frame_pattern(0, 16, 16), format="rgb24").to_image().save(image)
    zeroed = tmp_path / "zeroed.mp4"   # a valid container whose packets are all zero bytes
    data = bytearray(make_clip(tmp_path / "z.mp4", audio=None, frames=4).read_bytes())
    start = data.find(b"mdat") + 4
    size = int.from_bytes(data[start - 8:start - 4], "big")
    data[start:start + size - 8] = bytes(size - 8)
    zeroed.write_bytes(bytes(data))
    not_a_model = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, not_a_model)
    out = tmp_path / "out.mp4"

    cases = [
        (VideoError, "video not found", config(tmp_path / "missing.mp4", out, model_path)),
        (VideoError, "not a video file", config(text, out, model_path)),
        (VideoError, "is an image", config(image, out, model_path)),
        (VideoError, "no decodable video frames", config(zeroed, out, model_path)),
        (ModelError, "another architecture", config(clip, out, not_a_model)),
        (ModelError, "not found", config(clip, out, tmp_path / "nope.pth")),
        (OutputError, "refusing to overwrite an input", config(clip, clip, model_path)),
        (OutputError, "unsupported output video extension", config(clip, tmp_path / "out.avi", model_path)),
        (ConfigError, "--start", config(clip, out, model_path, start=-1.0)),
        (VideoError, "no video frames in the requested range", config(clip, out, model_path, start=5.0)),
        # The size that is too small is the scaled one: the message names both.
        (VideoError, r"too small \(64x48, 6x4 at --max_size 6\)", config(clip, out, model_path, max_size=6)),
    ]
    for error, words, cfg in cases:
        with pytest.raises(error) as caught:
            stylize_video(cfg)
        message = str(caught.value)
        assert re.search(words, message) and "\n" not in message, message
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_probe_video(clip: Path) -> None:
    info = probe_video(clip)
    assert (info.width, info.height, info.fps, info.frames) == (64, 48, 24, 24)
    assert info.duration == pytest.approx(1.0, abs=0.05) and info.audio_codec == "aac" and info.rotation == 0


# ------------------------------------------------------------------------------------------------ flicker
def _panning(frames: int = 6, shift: int = 2, size: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16 + frames, generator=generator),
                                              scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    return torch.cat([texture[..., :size, i * shift:i * shift + size] for i in range(frames)])


def test_flicker_score_definition_and_streaming() -> None:
    clip = _panning(shift=1)
    assert flicker_score(clip, clip) == pytest.approx(1.0)
    assert flicker_score(clip, clip * 0.5) == pytest.approx(0.5)
    noisy = (clip + 0.4 * torch.rand(clip.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    whole = flicker_score(clip, noisy)
    assert whole > 1.4  # the output changes more than the input: flicker
    meter = FlickerMeter()
    for i in range(0, len(clip), 4):  # batch boundaries must not lose the pair across them
        meter.update(clip[i:i + 4], noisy[i:i + 4])
    assert meter.pairs == len(clip) - 1 and meter.score == pytest.approx(whole)
    static = clip[:1].expand(4, -1, -1, -1)
    assert flicker_score(static, static) is None and flicker_score(clip[:1], clip[:1]) is None
    with pytest.raises(ConfigError):
        flicker_score(clip, clip[:, :, :10])


def test_warping_error_with_farneback_flow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty cache: RAFT is not available
    clip = _panning(frames=5, shift=2, size=48)
    steady = warping_error(clip, clip, flow="auto")
    assert steady.method == "farneback" and 0.3 < steady.valid_fraction <= 1.0
    flickering = clip * torch.linspace(0.6, 1.0, len(clip)).roll(1).view(-1, 1, 1, 1)  # brightness jumps
    assert warping_error(clip, flickering, flow="farneback").value > 3 * steady.value
    assert warping_error(clip[:1], clip[:1]) is None
    with pytest.raises(ConfigError, match="RAFT weights"):
        warping_error(clip, clip, flow="raft")


def test_warping_error_uses_raft_weights_from_the_local_cache(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    optical_flow = pytest.importorskip("torchvision.models.optical_flow")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    monkeypatch.setattr(flicker, "RAFT_FLOW_UPDATES", 1)  # keep the test fast; the loading path is the point
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(0)  # random weights stand in for the real file: this checks the loading path only
    torch.save(optical_flow.raft_small(weights=None).state_dict(),
               tmp_path / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth")
    assert raft_weights_path() is not None
    clip = _panning(frames=2, shift=2, size=32)
    result = warping_error(clip, clip, flow="auto")
    assert result.method == "raft_small" and np.isfinite(result.value)
