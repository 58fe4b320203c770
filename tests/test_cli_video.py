"""`fast_style_transfer.py --mode video` run as a user would: one success, and the bad-input matrix
(one line on stderr, non-zero exit, no traceback, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

from stylefusion.networks.transformer import TransformerNet

from stylefusion.networks.model_files import save_model
from test_video import damage_packets, make_clip

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "fast_style_transfer.py", "--mode", "video", "--device", "cpu", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli_video")
    torch.manual_seed(0)
    save_model(TransformerNet(), folder / "model.pth")
    (folder / "text.mp4").write_text("this is not a video\n")
    torch.save({"fc.weight": torch.zeros(2, 2)}, folder / "classifier.pth")
    data = bytearray(make_clip(folder / "z.mp4", audio=None, frames=4).read_bytes())
    start = data.find(b"mdat") + 4
    size = int.from_bytes(data[start - 8:start - 4], "big")
    data[start:start + size - 8] = bytes(size - 8)  # the container is intact, every packet is garbage
    (folder / "zeroed.mp4").write_bytes(bytes(data))
    return {"dir": folder, "model": folder / "model.pth", "clip": make_clip(folder / "clip.mp4", frames=12)}


def test_design_command_writes_the_video(files: dict[str, Path]) -> None:
    out = files["dir"] / "videos" / "clip_styled.mp4"  # the folder does not exist yet
    result = run("--video_input", str(files["clip"]), "--video_output", str(out), "--model_path",
                 str(files["model"]), "--batch_size", "4")
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # the summary is a status line: stderr, stdout stays clean for scripting
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12
        assert container.streams.audio and container.streams.video[0].average_rate == 24


def test_a_killed_runs_temporary_file_is_pointed_out_not_deleted(files: dict[str, Path]) -> None:
    out = files["dir"] / "again.mp4"
    left = files["dir"] / ".again.0123456789ab.tmp.mp4"  # what a SIGKILLed run into the same output leaves
    left.write_bytes(b"half a video")
    result = run("--video_input", str(files["clip"]), "--video_output", str(out), "--model_path",
                 str(files["model"]), "--max_size", "32")
    assert result.returncode == 0, result.stderr
    assert "1 temporary file(s) next to the output, e.g. .again.0123456789ab.tmp.mp4" in result.stderr, result.stderr
    assert left.read_bytes() == b"half a video" and out.is_file()
    assert [p.name for p in files["dir"].glob(".again.*")] == [left.name]  # the run's own was renamed


def test_a_damaged_input_is_written_with_one_warning(files: dict[str, Path], tmp_path: Path) -> None:
    source = damage_packets(make_clip(tmp_path / "clip.mp4", audio=None, frames=12), tmp_path / "damaged.mp4",
                            [4, 5, 6])
    out = tmp_path / "out.mp4"
    result = run("--video_input", str(source), "--video_output", str(out), "--model_path", str(files["model"]))
    assert result.returncode == 0 and out.is_file(), result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 3 of 12 frames could not be decoded and were skipped "
                        "(the input is damaged: 3 video packets failed to decode)"], result.stderr
    assert ": 9 frames," in result.stderr  # 9 written + 3 skipped = the 12 the container declares
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 9


@pytest.mark.parametrize("case", ["missing video", "not a video", "no decodable frames", "no model file",
                                  "not a transformer", "output is the input"])
def test_bad_input_is_one_line_without_traceback(files: dict[str, Path], case: str) -> None:
    folder, clip, model = files["dir"], str(files["clip"]), str(files["model"])
    out = folder / f"{case.replace(' ', '_')}.mp4"
    args, expected = {
        "missing video": (["--video_input", str(folder / "nope.mp4"), "--model_path", model], "video not found"),
        "not a video": (["--video_input", str(folder / "text.mp4"), "--model_path", model], "not a video file"),
        "no decodable frames": (["--video_input", str(folder / "zeroed.mp4"), "--model_path", model],
                                "no decodable video frames"),
        "no model file": (["--video_input", clip, "--model_path", str(folder / "models" / "udnie.pth")],
                          "--mode download"),
        "not a transformer": (["--video_input", clip, "--model_path", str(folder / "classifier.pth")],
                              "not a fast style transfer network"),
        "output is the input": (["--video_input", clip, "--model_path", model, "--video_output", clip],
                                "refusing to overwrite an input"),
    }[case]
    if "--video_output" not in args:
        args += ["--video_output", str(out)]
    result = run(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    assert files["clip"].stat().st_size > 0


def test_default_video_name_names_every_painting_and_never_a_models_video():
    """A blend was named after its first painting only, and udnie.jpg's video replaced udnie.pth's."""
    from stylefusion_cli.fast import default_video_output

    assert default_video_output("data/maigua.mp4", None, "models/udnie.pth") == "output/videos/maigua_udnie.mp4"
    assert default_video_output("clip.mov", None, ["a.pth", "b.pth"]) == "output/videos/clip_a.mp4"
    assert default_video_output("data/maigua.mp4", ["s/udnie.jpg"], None) == "output/videos/maigua_udnie_painting.mp4"
    assert (default_video_output("data/maigua.mp4", ["s/candy.jpg", "s/udnie.jpg"], None)
            == "output/videos/maigua_candy+udnie_painting.mp4")
