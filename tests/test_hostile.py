"""Issue #12, "nothing lost under hostile conditions": a matrix of hostile runs of both CLIs, every mode.

Each case asserts the product's promise: the exit code; for a failure exactly one readable stderr line and no
traceback; no temporary or half-written file anywhere; nothing left in the output place of a refused run; the
inputs untouched. To stay fast on a small machine most cases run the CLI's `main` in this process through
`run_cli` (one torch import for all of them; stop signals are really sent to this process, at chosen points);
the cases that need a real process (a signal arriving from outside, dropped file permissions) are subprocesses
started together when the module starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from fast_train_data import make_dataset, make_style
from stylefusion.networks.transformer import TransformerNet
from stylefusion.networks.model_files import save_model
from stylefusion_cli import common as cli_common
from stylefusion_cli import fast as fast_style_transfer
from stylefusion_cli import iterative as iterative_cli
from tests.helpers import REPO, scene, stripes
from test_video import make_clip

SCRIPTS = {"fast": fast_style_transfer, "iter": iterative_cli}
# tqdm's training bar (it stays on for --mode train, whose tests read it); every other mode has no bar here.
BAR = re.compile(r"^\s*train:\s+\d+%\|")
TEMP = re.compile(r"^\..*\.tmp|\.tmp(\.|$)|^\.saved_models\.")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        """stderr lines a person reads: progress-bar redraws left out."""
        return [s for s in re.split(r"[\r\n]", self.stderr) if s.strip() and not BAR.match(s)]


def invoke(script: str, argv: list[str]) -> Outcome:
    """Run a CLI's main as `python <script> argv` would, in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_common.run_cli(SCRIPTS[script].main, argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
    return Outcome(rc, out.getvalue(), err.getvalue())


def spawn(script: str, args: list[str], prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start a CLI as a user would, in its own session (so a signal reaches only it)."""
    name = "fast_style_transfer.py" if script == "fast" else "stylefusion.py"
    return subprocess.Popen([*prefix, sys.executable, str(REPO / name), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finished(proc: subprocess.Popen, timeout: float = 240) -> Outcome:
    stdout, stderr = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, stdout, stderr)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file: any write to an input shows."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(*folders: Path) -> list[str]:
    return [str(p) for folder in folders if folder.exists() for p in folder.rglob("*") if TEMP.search(p.name)]


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------------------------ inputs
def _models(m: Path) -> None:
    torch.manual_seed(0)
    network = TransformerNet()
    save_model(network, m / "good.pth")
    shutil.copy(m / "good.pth", m / "good.pt")
    state = network.state_dict()
    torch.save({**state, "conv1.conv2d.bias": torch.full((32,), float("nan"))}, m / "nan.pth")
    big = {k: v * 1e38 if k.startswith(("deconv3", "in5")) else v for k, v in state.items()}
    torch.save(big, m / "overflow.pth")
    data = (m / "good.pth").read_bytes()
    (m / "truncated.pth").write_bytes(data[: len(data) // 3])
    (m / "empty.pth").write_bytes(b"")
    (m / "dir.pth").mkdir()
    torch.save(print, m / "object.pth")  # a pickled function: weights_only loading refuses it
    (m / "pickle4.pth").write_bytes(pickle.dumps({"conv1.weight": [0.0]}, protocol=4))
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, m / "vgg.pth")


def build_inputs(b: Path) -> None:
    """Every input file of the matrix, under b (never written by a case)."""
    for folder in ("imgs/sub", "emptydir", "models", "dir.mp4", "ckpt/m_checkpoints"):
        (b / folder).mkdir(parents=True)
    scene((48, 32), 0).save(b / "imgs" / "a.jpg")
    scene((32, 40), 1).save(b / "imgs" / "sub" / "b.png")
    scene((48, 32), 2).save(b / "one.png")
    stripes((32, 32)).save(b / "style.png")
    Image.new("RGB", (40, 3)).save(b / "tiny.png")
    (b / "text.jpg").write_text("this is not an image\n")
    (b / "empty.jpg").write_bytes(b"")
    (b / "notes.txt").write_text("notes")
    full = (b / "imgs" / "a.jpg").read_bytes()
    (b / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (b / "text.mp4").write_text("this is not a video\n")
    (b / "empty.mp4").write_bytes(b"")
    make_clip(b / "clip.mp4", width=32, height=24, frames=8, audio=None)
    _models(b / "models")
    make_dataset(b / "dataset", count=4, corrupt=False)
    make_style(b / "stripes.png")
    (b / "ckpt" / "m_checkpoints" / "checkpoint_step_00000003.pt").write_bytes(b"")
    _png_header_only(b / "huge_header.png", 100000, 100000)
    (b / "loopa").symlink_to(b / "loopb")  # a loop of symbolic links (Path.resolve raised a bare RuntimeError)
    (b / "loopb").symlink_to(b / "loopa")
    (b / "dangling").symlink_to(b / "missing_folder")
    os.mkfifo(b / "fifo.jpg")
    (b / "masks").mkdir()
    Image.new("L", (48, 32), 0).save(b / "masks" / "black.png")
    left = Image.new("L", (48, 32), 0)
    left.paste(255, (0, 0, 24, 32))
    left.save(b / "masks" / "left.png")
    red = Image.new("RGB", (48, 32), (0, 0, 0))
    red.paste((255, 0, 0), (0, 0, 24, 32))  # a region painted red on a layer: read as 30 % grey
    red.save(b / "masks" / "red.png")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with almost no pixel data (decoding it fails as truncated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------- process cases
def _signal_when(proc: subprocess.Popen, seen: Callable[[], bool], sig: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not seen() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)


def _video_sigterm(b: Path, w: Path) -> Outcome:
    """The hostile run's case: SIGTERM while the video is being written (the temporary file exists)."""
    clip = make_clip(w / "long.mp4", width=32, height=24, frames=400, audio=None)
    proc = spawn("fast", ["--mode", "video", "--device", "cpu", "--video_input", str(clip), "--video_output",
                          str(w / "out" / "o.mp4"), "--model_path", str(b / "models" / "good.pth"),
                          "--batch_size", "1"])
    _signal_when(proc, lambda: bool(temp_files(w / "out")), signal.SIGTERM)
    return finished(proc)


def _iterative_sigterm(b: Path, w: Path) -> Outcome:
    proc = spawn("iter", ["--content_image", str(b / "one.png"), "--style_image", str(b / "style.png"), "--output_dir",
                          str(w / "out"), "--image_size", "32", "--epochs", "500", "--steps_per_epoch", "1",
                          "--quiet", "--device", "cpu", "--optimizer", "adam"])
    _signal_when(proc, lambda: (w / "out" / "epoch_002.jpg").exists(), signal.SIGTERM)
    return finished(proc)


def _unreadable(b: Path, w: Path) -> Outcome:
    """Image mode as root without the permission-override capabilities: a locked sub-folder and a locked file."""
    tree_ = w / "in"
    (tree_ / "locked").mkdir(parents=True)
    scene((32, 24), 5).save(tree_ / "ok.png")
    scene((32, 24), 6).save(tree_ / "locked" / "hidden.png")
    scene((32, 24), 7).save(tree_ / "file.png")
    os.chmod(tree_ / "locked", 0)
    os.chmod(tree_ / "file.png", 0)
    proc = spawn("fast", ["--mode", "image", "--device", "cpu", "--input_images_dir", str(tree_),
                          "--output_images_dir", str(w / "out"), "--model_path", str(b / "models" / "good.pth")],
                 prefix=("setpriv", "--bounding-set=-dac_override,-dac_read_search"))
    result = finished(proc)
    os.chmod(tree_ / "locked", 0o755)
    os.chmod(tree_ / "file.png", 0o644)
    return result


def _unreadable_content(b: Path, w: Path) -> Outcome:
    (w / "in").mkdir()
    shutil.copy(b / "one.png", w / "in" / "locked.png")
    os.chmod(w / "in" / "locked.png", 0)
    proc = spawn("iter", ["--content_image", str(w / "in" / "locked.png"), "--style_image", str(b / "style.png"),
                          "--output_dir", str(w / "out"), "--quiet", "--device", "cpu"],
                 prefix=("setpriv", "--bounding-set=-dac_override,-dac_read_search"))
    result = finished(proc)
    os.chmod(w / "in" / "locked.png", 0o644)
    return result


PROCESS_CASES = {"video-sigterm-mid": _video_sigterm, "iterative-sigterm-mid": _iterative_sigterm,
                 "unreadable-tree": _unreadable, "unreadable-content": _unreadable_content}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    b = tmp_path_factory.mktemp("hostile_inputs")
    build_inputs(b)
    return b


@pytest.fixture(scope="module")
def processes(base, tmp_path_factory) -> dict[str, tuple[Path, Future]]:
    """The subprocess cases, started at once so they run while the in-process cases do."""
    can_setpriv = shutil.which("setpriv") is not None and os.geteuid() == 0
    pool = ThreadPoolExecutor(len(PROCESS_CASES))
    started = {}
    for name, case in PROCESS_CASES.items():
        if name.startswith("unreadable") and not can_setpriv:
            continue
        work = tmp_path_factory.mktemp(name)
        started[name] = (work, pool.submit(case, base, work))
    yield started
    pool.shutdown(wait=True)


@pytest.fixture(scope="module", autouse=True)
def inputs_unchanged(base):
    """The inputs are byte-identical at the end of the module (each case also checks sizes and times)."""
    before = digests(base)
    yield
    assert digests(base) == before


@pytest.fixture(autouse=True)
def pixel_limit_restored():
    """--max_pixels sets Pillow's limit for the whole process: in-process runs must not leak it to the next."""
    limit = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = limit


@pytest.fixture(autouse=True)
def quiet_process(monkeypatch):
    """In-process runs: one thread, and no process-wide allocator setting left behind by image mode."""
    import stylefusion.networks.inference
    monkeypatch.setattr(stylefusion.networks.inference, "retain_freed_memory", lambda: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_failure(result: Outcome, needle: str, rc: int | None = None) -> None:
    """Non-zero (or exactly `rc`) exit, one 'error:' line on stderr containing `needle`, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.rc == rc if rc is not None else result.rc != 0, (result.rc, result.stderr)
    assert len(result.lines) == 1 and result.lines[0].startswith("error: "), result.stderr
    assert needle.lower() in result.lines[0].lower(), result.lines[0]


# ------------------------------------------------------------------------------------ bad files and flags
IMG = ["--mode", "image", "--device", "cpu", "--output_images_dir", "{w}/out"]
VID = ["--mode", "video", "--device", "cpu", "--video_output", "{w}/out/o.mp4"]
TRAIN = ["--mode", "train", "--device", "cpu", "--content_dataset", "{b}/dataset", "--model_save_path", "{w}/out/m.pth",
         "--image_size", "32", "--batch_size", "2", "--num_workers", "0", "--preview_interval", "0", "--max_steps", "1"]
ITER = ["--output_dir", "{w}/out", "--image_size", "32", "--epochs", "1", "--steps_per_epoch", "1", "--quiet",
        "--device", "cpu"]
GOOD = "{b}/models/good.pth"
CONTENT, STYLE = ["--content_image", "{b}/one.png"], ["--style_image", "{b}/style.png"]

# id: (script, argv, needle in the one error line, exit code or None for any non-zero)
BAD: dict[str, tuple[str, list[str], str, int | None]] = {
    "image-missing-input": ("fast", [*IMG, "--input_images_dir", "{b}/nope", "--model_path", GOOD],
                            "input not found", 1),
    "image-empty-folder": ("fast", [*IMG, "--input_images_dir", "{b}/emptydir", "--model_path", GOOD],
                           "no image files", 1),
    "image-no-model-flag": ("fast", [*IMG, "--input_images_dir", "{b}/imgs"], "needs --model_path", 1),
    "image-model-missing": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", "{b}/nope.pth"],
                            "model file not found", 1),
    "image-model-truncated": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path",
                                       "{b}/models/truncated.pth"], "corrupt or truncated", 1),
    "image-model-empty": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", "{b}/models/empty.pth"],
                          "empty (0 bytes)", 1),
    "image-model-is-dir": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", "{b}/models/dir.pth"],
                           "is a directory", 1),
    "image-model-is-a-device": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", "/dev/zero"],
                                "is a device or pipe, not a file", 1),
    "image-model-pickled-code": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path",
                                          "{b}/models/object.pth"], "not a plain weights file", 1),
    "image-model-plain-pickle": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path",
                                          "{b}/models/pickle4.pth"], "not a plain weights file", 1),
    "image-model-nan": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", "{b}/models/nan.pth"],
                        "NaN or infinite weights", 1),
    "image-model-overflow": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path",
                                      "{b}/models/overflow.pth"], "NaN or infinite pixels", 1),
    "image-model-other-arch": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", "{b}/models/vgg.pth"],
                               "another architecture", 1),
    "image-output-is-input-folder": ("fast", ["--mode", "image", "--input_images_dir", "{b}/imgs",
                                              "--output_images_dir", "{b}/imgs", "--model_path", GOOD], "overwrite", 1),
    "image-output-is-a-file": ("fast", ["--mode", "image", "--input_images_dir", "{b}/imgs", "--output_images_dir",
                                        "{b}/one.png", "--model_path", GOOD], "output directory is a file", 1),
    "image-input-not-an-image-name": ("fast", [*IMG, "--input_images_dir", "{b}/notes.txt", "--model_path", GOOD],
                                      "not an image file", 1),
    "image-input-text-as-jpg": ("fast", [*IMG, "--input_images_dir", "{b}/text.jpg", "--model_path", GOOD],
                                "not an image file", 1),
    "image-input-truncated": ("fast", [*IMG, "--input_images_dir", "{b}/truncated.jpg", "--model_path", GOOD],
                              "truncated.jpg", 1),
    "image-input-too-small": ("fast", [*IMG, "--input_images_dir", "{b}/tiny.png", "--model_path", GOOD],
                              "too small", 1),
    "image-max-size-4": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", GOOD, "--max_size", "4"],
                         "too small", 1),
    "image-batch-size-0": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", GOOD, "--batch_size", "0"],
                           "must be >= 1", 2),
    "image-precision-unknown": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", GOOD,
                                         "--precision", "fp8"], "fp8", 1),
    "image-device-unknown": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", GOOD, "--device", "tpu"],
                             "tpu", 1),
    "video-missing": ("fast", [*VID, "--video_input", "{b}/nope.mp4", "--model_path", GOOD], "video not found", 1),
    "video-text": ("fast", [*VID, "--video_input", "{b}/text.mp4", "--model_path", GOOD], "not a video file", 1),
    "video-empty": ("fast", [*VID, "--video_input", "{b}/empty.mp4", "--model_path", GOOD], "empty", 1),
    "video-image-as-video": ("fast", [*VID, "--video_input", "{b}/one.png", "--model_path", GOOD], "one.png", 1),
    "video-output-extension": ("fast", ["--mode", "video", "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                        "--video_output", "{w}/out/o.avi"], "unsupported output video extension", 1),
    "video-output-url": ("fast", ["--mode", "video", "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                  "--video_output", "file://{w}/out/o.mp4"], "is a URL", 2),
    "iterative-output-tilde": ("iter", [*ITER, *CONTENT, *STYLE, "--output_dir", "~/stylefusion-out"], "starts with ~",
                               2),
    "iterative-content-url": ("iter", [*ITER, "--content_image", "https://example.com/a.jpg", *STYLE], "a URL?", 1),
    "video-input-file-url": ("fast", ["--mode", "video", "--video_input", "file:///tmp/sf-no-such/a.mp4",
                                      "--model_path", GOOD],
                             "a file:// URL: give the path itself, /tmp/sf-no-such/a.mp4", 1),
    "video-output-is-input": ("fast", ["--mode", "video", "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                       "--video_output", "{b}/clip.mp4"], "refusing to overwrite", 1),
    "video-output-is-a-folder": ("fast", ["--mode", "video", "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                          "--video_output", "{b}/dir.mp4"], "directory", 1),
    "video-model-nan": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", "{b}/models/nan.pth"],
                        "NaN or infinite weights", 1),
    "video-start-past-the-end": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                          "--start", "100"], "no video frames", 1),
    "video-crf-99": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD, "--crf", "99"],
                     "from 0 to 51", 2),
    "video-duration-nan": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD, "--duration", "nan"],
                           "--duration", 2),
    "export-extension": ("fast", ["--mode", "export", "--model_path", GOOD, "--export_path", "{w}/m.h5"], ".onnx", 1),
    "export-over-the-model": ("fast", ["--mode", "export", "--model_path", "{b}/models/good.pt", "--export_path",
                                       "{b}/models/good.pt"], "refusing to overwrite", 1),
    "export-model-nan": ("fast", ["--mode", "export", "--model_path", "{b}/models/nan.pth", "--export_path",
                                  "{w}/m.pt"], "NaN or infinite weights", 1),
    "export-no-path": ("fast", ["--mode", "export", "--model_path", GOOD], "needs --export_path", 1),
    "export-path-ends-in-a-slash": ("fast", ["--mode", "export", "--model_path", GOOD, "--export_path",
                                             "{w}/exports.onnx/"], "give a file name, not a folder", 2),
    "train-save-path-ends-in-a-slash": ("fast", ["--mode", "train", "--style_image", "{b}/style.png",
                                                 "--content_dataset", "{b}/imgs", "--model_save_path", "{w}/models/"],
                                        "give a file name, not a folder", 2),
    "download-archive-missing": ("fast", ["--mode", "download", "--models_dir", "{w}/out/models", "--models_url",
                                          "{b}/nope.zip"], "archive not found", 1),
    "download-relative-file-url": ("fast", ["--mode", "download", "--models_dir", "{w}/out/models", "--models_url",
                                            "file://nope.zip"], "needs an absolute path", 1),
    "download-archive-a-folder": ("fast", ["--mode", "download", "--models_dir", "{w}/out/models", "--models_url",
                                           "{b}/masks"], "is a folder, not a .zip", 1),
    "download-not-a-zip": ("fast", ["--mode", "download", "--models_dir", "{w}/out/models", "--models_url",
                                    "{b}/text.jpg"], "not a zip archive", 1),
    "download-connection-refused": ("fast", ["--mode", "download", "--models_dir", "{w}/out/models", "--models_url",
                                             "http://127.0.0.1:9/saved_models.zip"], "cannot download", 1),
    "train-no-style": ("fast", TRAIN, "needs --style_image", 1),
    "train-style-missing": ("fast", [*TRAIN, "--style_image", "{b}/nope.png"], "not found", 1),
    "train-style-text": ("fast", [*TRAIN, "--style_image", "{b}/text.jpg"], "not an image", 1),
    "train-dataset-empty-name": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--content_dataset", ""],
                                 "argument --content_dataset: is empty", 2),  # was the current folder
    "train-dataset-empty": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--content_dataset", "{b}/emptydir"],
                            "no image files", 1),
    "train-image-size-100000": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--image_size", "100000"],
                                "of memory", 1),
    "train-style-size-100000": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--style_size", "100000"],
                                "of memory", 1),
    "train-image-size-not-multiple-of-4": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--image_size", "34"],
                                           "multiple of 4", 1),
    "train-resume-without-checkpoint": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--resume"],
                                        "no checkpoint found", 1),
    "train-resume-only-corrupt-checkpoints": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--resume",
                                                       "--checkpoint_dir", "{b}/ckpt/m_checkpoints"],
                                              "no readable checkpoint", 1),
    "train-pretrained-nan": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--pretrained_model_path",
                                      "{b}/models/nan.pth"], "NaN or infinite weights", 1),
    "train-model-over-the-style": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--model_save_path",
                                            "{b}/stripes.png"], "refusing to overwrite", 1),
    # A PyTorch file under an .onnx name, written silently; x.onnx then x.pt also shared x_checkpoints.
    "train-model-onnx": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--model_save_path", "{w}/out/m.onnx"],
                         "--model_save_path must end in .pth or .pt (a PyTorch model file), got m.onnx: for ONNX, "
                         "train to a .pth, then convert it with --mode export", 1),
    "train-model-path-is-a-folder": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--model_save_path",
                                              "{b}/imgs"], "is a directory", 1),
    "train-unknown-layer": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--style_layers", "relu9_9"],
                            "relu9_9", 1),
    "train-lr-inf": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--lr", "inf"], "--lr", 2),
    "iterative-content-missing": ("iter", [*ITER, *STYLE, "--content_image", "{b}/nope.jpg"], "not found", 1),
    "iterative-style-empty": ("iter", [*ITER, *CONTENT, "--style_image", "{b}/empty.jpg"], "empty", 1),
    "iterative-content-text": ("iter", [*ITER, *STYLE, "--content_image", "{b}/text.jpg"], "not an image", 1),
    "iterative-content-truncated": ("iter", [*ITER, *STYLE, "--content_image", "{b}/truncated.jpg"], "truncated", 1),
    "iterative-content-is-the-final-image": ("iter", [*ITER, *STYLE, "--output_format", "png", "--output_dir", "{b}",
                                                      "--content_image", "{b}/final.png"], "final.png", 1),
    "iterative-style-is-an-epoch-image": ("iter", [*ITER, *CONTENT, "--output_format", "png", "--output_dir",
                                                   "{b}/imgs/sub", "--style_image", "{b}/imgs/sub/epoch_001.png"],
                                          "refusing to overwrite", 1),
    "iterative-content-too-small": ("iter", [*ITER, *STYLE, "--content_image", "{b}/tiny.png"],
                                    "content image is too small (40x3)", 1),
    "iterative-style-too-small": ("iter", [*ITER, *CONTENT, "--style_image", "{b}/tiny.png"],
                                  "style image is too small (40x3)", 1),
    "iterative-content-is-a-link-loop": ("iter", [*ITER, *STYLE, "--content_image", "{b}/loopa"],
                                         "loop of symbolic links", 1),
    "iterative-output-is-a-link-loop": ("iter", [*ITER, *CONTENT, *STYLE, "--output_dir", "{b}/loopa"],
                                        "output directory is a loop of symbolic links: ", 1),  # not a file in it
    "image-output-is-a-link-loop": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD,
                                             "--output_images_dir", "{b}/loopa"], "loop of symbolic links", 1),
    "image-model-is-a-link-loop": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", "{b}/loopa"],
                                   "model file path is a loop of symbolic links", 1),
    "train-model-in-a-link-loop": ("fast", [*TRAIN, "--style_image", "{b}/style.png", "--model_save_path",
                                            "{b}/loopa/m.pth"], "loop of symbolic links", 1),
    "iterative-output-dir-empty": ("iter", [*ITER, *CONTENT, *STYLE, "--output_dir", ""], "--output_dir: is empty", 2),
    "image-output-dir-empty": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD,
                                        "--output_images_dir", ""], "--output_images_dir: is empty", 2),
    "iterative-output-is-a-dangling-link": ("iter", [*ITER, *CONTENT, *STYLE, "--output_dir", "{b}/dangling"],
                                            "symbolic link to a missing folder", 1),
    "image-input-is-a-pipe": ("fast", [*IMG, "--input_images_dir", "{b}/fifo.jpg", "--model_path", GOOD],
                              "neither an image file nor a folder", 1),
    "video-output-is-a-folder": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                          "--video_output", "{b}/imgs"], "--video_output is a folder", 1),
    "export-painting-with-style": ("fast", ["--mode", "export", "--export_path", "{w}/out/x.onnx", "--style_image",
                                            "{b}/style.png", "--style", "2"], "--style picks a style", 1),
    "iterative-unknown-optimizer": ("iter", [*ITER, *CONTENT, *STYLE, "--optimizer", "sgd"], "unknown optimizer", 1),
    "iterative-init-missing": ("iter", [*ITER, *CONTENT, *STYLE, "--init", "{b}/nope.png"], "--init", 1),
    "iterative-epochs-0": ("iter", [*ITER, *CONTENT, *STYLE, "--epochs", "0"], "--epochs", 2),
    # 10^9 epochs filled the memory with the epoch plan (and the epoch names checked) before step 1.
    "iterative-epochs-huge": ("iter", [*ITER, *CONTENT, *STYLE, "--epochs", "1000000000"], "from 1 to 100000", 2),
    "iterative-seed-huge": ("iter", [*ITER, *CONTENT, *STYLE, "--seed", "99999999999999999999999"], "--seed", 2),
    "train-seed-huge": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--seed", "99999999999999999999999"],
                        "--seed", 2),
    "iterative-output-is-a-file": ("iter", [*ITER, *CONTENT, *STYLE, "--output_dir", "{b}/one.png"],
                                   "output directory is a file", 1),
    "iterative-vgg-plain-pickle": ("iter", [*ITER, *CONTENT, *STYLE, "--vgg_weights", "{b}/models/pickle4.pth"],
                                   "not a plain weights file", 1),
    "iterative-vgg-empty": ("iter", [*ITER, *CONTENT, *STYLE, "--vgg_weights", "{b}/models/empty.pth"],
                            "empty (0 bytes)", 1),
    "train-vgg-truncated": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--vgg_weights",
                                     "{b}/models/truncated.pth"], "corrupt or truncated", 1),
    "iterative-nan-weight": ("iter", [*ITER, *CONTENT, *STYLE, "--style_weight", "nan"], "--style_weight", 2),
    # The second hostile run's surfaces (#27)
    "image-huge-header": ("fast", [*IMG, "--input_images_dir", "{b}/huge_header.png", "--model_path", GOOD,
                                   "--max_pixels", "20000", "--max_memory", "1"], "too large for the memory budget", 1),
    "iterative-huge-header": ("iter", [*ITER, *STYLE, "--content_image", "{b}/huge_header.png", "--max_pixels",
                                       "20000", "--max_memory", "1"], "too large for the memory budget", 1),
    "iterative-over-the-pixel-limit": ("iter", [*ITER, *STYLE, "--content_image", "{b}/huge_header.png"],
                                       "--max_pixels", 1),
    "image-max-memory-tiny": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD,
                                       "--max_memory", "0.000001"], "1.0 KB budget", 1),
    "iterative-max-memory-0": ("iter", [*ITER, *CONTENT, *STYLE, "--max_memory", "0"], "finite number > 0, got 0", 2),
    "iterative-max-memory-negative": ("iter", [*ITER, *CONTENT, *STYLE, "--max_memory", "-1"],
                                      "finite number > 0, got -1", 2),
    "flags-live-port-70000-fast": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--live", "--live_port",
                                            "70000"], "0-65535", 2),
    "flags-live-port-70000-iterative": ("iter", [*ITER, *CONTENT, *STYLE, "--live", "--live_port", "70000"],
                                        "0-65535", 2),
    # Every loss term weighed 0: a traceback from autograd at the first step; now one line before VGG is loaded.
    "train-every-loss-weight-0": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--content_weight", "0",
                                           "--style_weight", "0"],
                                  "every loss weight is 0 (--content_weight 0, --style_weight 0, --tv_weight 0, "
                                  "--stability_weight 0): nothing to train", 1),
    "train-every-layer-weight-0": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--content_layers",
                                            "relu2_2:0", "--style_weight", "0"],
                                   "every loss weight is 0 (--content_layers relu2_2:0, --style_weight 0,", 1),
    "flags-unknown-mode": ("fast", ["--mode", "webcam2"], "invalid choice", 2),
    "flags-unknown-option": ("fast", ["--mode", "image", "--no_such_flag"], "unrecognized arguments", 2),
    "flags-no-mode": ("fast", [], "--mode", 2),
}


def _fill(argv: list[str], b: Path, w: Path) -> list[str]:
    return [a.format(b=b, w=w) for a in argv]


@pytest.fixture
def clash_inputs(base):
    """Inputs named like outputs (the iterative clash cases): made for the case, removed after it."""
    made = [base / "final.png", base / "imgs" / "sub" / "epoch_001.png"]
    for path in made:
        shutil.copy(base / "style.png", path)
    yield
    for path in made:
        path.unlink()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, base, tmp_path, processes, request):
    script, argv, needle, rc = BAD[case]
    if case.startswith("iterative-") and "-is-" in case:
        request.getfixturevalue("clash_inputs")
    before = snapshot(base)
    result = invoke(script, _fill(argv, base, tmp_path))
    check_failure(result, needle, rc)
    assert tree(tmp_path) == [], "a refused run left files behind"
    assert temp_files(base, tmp_path) == []
    assert snapshot(base) == before


# id: (script, argv, the output that must exist, a warning line that must be printed or None)
MUST_WORK: dict[str, tuple[str, list[str], str, str | None]] = {
    "image-tile-larger-than-the-image": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD,
                                                  "--tile_size", "100000"], "out/one.png", None),
    "video-tile-larger-than-the-image": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                                                  "--tile_size", "100000"], "out/o.mp4", None),
    "iterative-tile-larger-than-the-image": ("iter", [*ITER, *CONTENT, *STYLE, "--tile_size", "100000"],
                                             "out/final.jpg", None),
    "image-feather-1e308": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD, "--mask",
                                     "{b}/masks/left.png", "--feather", "1e308"], "out/one.png", None),
    "image-feather-1e9": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD, "--mask",
                                   "{b}/masks/left.png", "--feather", "1e9"], "out/one.png", None),
    "image-black-mask-warns": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD, "--mask",
                                        "{b}/masks/black.png"], "out/one.png", "black everywhere"),
    "image-red-mask-warns": ("fast", [*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD, "--mask",
                                      "{b}/masks/red.png"], "out/one.png", "is in colour: its grey level"),
    "iterative-red-mask-warns": ("iter", [*ITER, *CONTENT, *STYLE, "--style_masks", "{b}/masks/red.png"],
                                 "out/final.jpg", "is in colour: its grey level"),
    "train-tv-weight-only": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--content_weight", "0",
                                      "--style_weight", "0", "--tv_weight", "1"], "out/m.pth", None),
}


@pytest.mark.parametrize("case", list(MUST_WORK))
def test_new_surfaces_that_must_work(case, base, tmp_path, processes):
    script, argv, output, warning = MUST_WORK[case]
    before = snapshot(base)
    result = invoke(script, _fill(argv, base, tmp_path))
    assert result.rc == 0 and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / output).is_file()
    assert (warning is None) or any(line.startswith("warning: ") and warning in line for line in result.lines), \
        result.stderr
    assert temp_files(base, tmp_path) == [] and snapshot(base) == before


def test_video_names_with_a_colon_are_files_not_protocols(base, tmp_path, monkeypatch, processes):
    # Bare names, as a user in the clip's folder types them: FFmpeg read "2024-01-01T10:00:00.mp4" as the protocol
    # "2024-01-01T10" (refused), and "file:o.mp4" as the file o.mp4 (written there; an empty file renamed into place).
    import av

    shutil.copy(base / "clip.mp4", tmp_path / "2024-01-01T10:00:00.mp4")
    monkeypatch.chdir(tmp_path)
    model = ["--model_path", str(base / "models" / "good.pth"), "--device", "cpu"]
    runs = {"take1:final.mp4": ["--mode", "video", "--video_input", "2024-01-01T10:00:00.mp4"],
            "file:o.mp4": ["--mode", "video", "--video_input", "2024-01-01T10:00:00.mp4"],
            "take2:final.mp4": ["--mode", "webcam", "--camera", "2024-01-01T10:00:00.mp4", "--no_window",
                                "--max_frames", "3"]}
    for output, argv in runs.items():
        result = invoke("fast", [*argv, *model, "--video_output", output])
        assert result.rc == 0, result.stderr
        with av.open(str(tmp_path / output)) as video:
            assert sum(1 for _ in video.decode(video=0)) == (3 if "webcam" in argv else 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["2024-01-01T10:00:00.mp4", *runs])

def test_an_all_black_mask_leaves_the_image_as_it_was(base, tmp_path, processes):
    result = invoke("fast", _fill([*IMG, "--input_images_dir", "{b}/one.png", "--model_path", GOOD, "--mask",
                                   "{b}/masks/black.png"], base, tmp_path))
    assert result.rc == 0, result.stderr
    assert np.array_equal(np.array(Image.open(tmp_path / "out" / "one.png")), np.array(Image.open(base / "one.png")))


# ------------------------------------------------------------------------------------ signals, in process
class SignalAt:
    """Wrap `owner.name` so that its `nth` call sends `sig` to this process (before or after the real call)."""

    def __init__(self, monkeypatch, owner: Any, name: str, sig: int, nth: int = 1, after: bool = False) -> None:
        real, calls = getattr(owner, name), [0]

        def wrapper(*args, **kwargs):
            calls[0] += 1
            fire = calls[0] == nth
            if fire and not after:
                os.kill(os.getpid(), sig)
            value = real(*args, **kwargs)
            if fire and after:
                os.kill(os.getpid(), sig)
            return value

        monkeypatch.setattr(owner, name, wrapper)


@contextlib.contextmanager
def _signal_inside(real: Callable, sig: int):
    """An atomic_path that receives `sig` while its temporary file exists."""
    with real as tmp:
        os.kill(os.getpid(), sig)
        yield tmp


# Where each signal case stops the run: (stylefusion module[:attribute], function, SignalAt options).
SIGNAL_POINTS = {
    "image-early": ("run.stylizer", "load_model", {}),
    "image-mid": ("run.folder", "save_image", {"nth": 1, "after": True}),
    "video-early": ("run.stylizer", "load_model", {}),  # video mode loads through stylizer.load_networks
    "video-mid": ("run.stylizer:Stylizer", "__call__", {"nth": 2}),
    "iterative-early": ("iterative.gatys", "load_vgg19", {}),
    "iterative-mid": ("iterative.gatys", "save_image", {"nth": 1, "after": True}),
    "train-early": ("training.loop", "load_vgg19", {}),
    "train-mid": ("training.loop", "train_step", {"nth": 2}),
    "download-extracting": ("networks.released", "install_from_zip", {}),
    "webcam-early": ("run.webcam", "load_model", {}),  # the camera is open, no frame stylised yet
}


def _hook(point: str, monkeypatch, sig: int) -> None:
    import importlib

    import stylefusion.networks.export

    if point == "export-writing":  # the signal lands inside the atomic write itself
        real = stylefusion.networks.export.atomic_path
        monkeypatch.setattr(stylefusion.networks.export, "atomic_path", lambda path: _signal_inside(real(path), sig))
        return
    where, name, options = SIGNAL_POINTS[point]
    module, _, attribute = where.partition(":")
    target = importlib.import_module(f"stylefusion.{module}")
    SignalAt(monkeypatch, getattr(target, attribute) if attribute else target, name, sig, **options)


SIGNAL_RUNS = {
    "image-early": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", GOOD, "--batch_size", "1"]),
    "image-mid": ("fast", [*IMG, "--input_images_dir", "{b}/imgs", "--model_path", GOOD, "--batch_size", "1"]),
    "video-early": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD, "--batch_size", "1"]),
    "video-mid": ("fast", [*VID, "--video_input", "{b}/clip.mp4", "--model_path", GOOD, "--batch_size", "1"]),
    "iterative-early": ("iter", [*ITER, *CONTENT, *STYLE, "--epochs", "3"]),
    "iterative-mid": ("iter", [*ITER, *CONTENT, *STYLE, "--epochs", "3"]),
    "train-early": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--max_steps", "5"]),
    "train-mid": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--max_steps", "5"]),
    "export-writing": ("fast", ["--mode", "export", "--model_path", GOOD, "--export_path", "{w}/m.pt"]),
    "download-extracting": ("fast", ["--mode", "download", "--models_dir", "{w}/out/models", "--models_url",
                                     "{b}/text.jpg"]),
    "webcam-early": ("fast", ["--mode", "webcam", "--device", "cpu", "--camera", "{b}/clip.mp4", "--model_path", GOOD,
                              "--no_window", "--video_output", "{w}/out/sub/rec.mp4"]),
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", list(SIGNAL_RUNS))
def test_stop_signal(point, sig, base, tmp_path, monkeypatch, processes):
    script, argv = SIGNAL_RUNS[point]
    _hook(point, monkeypatch, sig)
    before = snapshot(base)
    result = invoke(script, _fill(argv, base, tmp_path))
    out = tmp_path / "out"
    assert result.rc == 128 + sig, (result.rc, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert temp_files(base, tmp_path) == []
    assert snapshot(base) == before
    if point.startswith("train"):  # training stops after the step and checkpoints; --resume continues
        assert f"stopped at step {1 if point == 'train-early' else 2}" in result.stderr, result.stderr
        assert tree(out / "m_checkpoints") == [f"checkpoint_step_0000000{1 if point == 'train-early' else 2}.pt"]
        assert not (out / "m.pth").exists()
        again = "press Ctrl-C again" if sig == signal.SIGINT else "send SIGTERM again"  # what the handler takes
        assert f"stopping after this step and saving a checkpoint ({again} to abort)" in result.lines, result.stderr
        return
    assert result.lines == [f"error: interrupted by {signal.Signals(sig).name}: stopped; what was finished is kept, "
                            "nothing half-written"], result.stderr
    if point in ("image-mid", "iterative-mid"):  # images finished before the stop stay, whole
        assert "a.jpg" in tree(out) or "epoch_001.jpg" in tree(out)
        for path in out.rglob("*.*"):
            Image.open(path).load()
    else:
        assert tree(tmp_path) == []


# --------------------------------------------------------------------------------------------- full disk
@pytest.fixture(scope="module")
def full_disk(tmp_path_factory) -> Path:
    """A small tmpfs filled to the last byte (root only; skipped where it cannot be mounted)."""
    mount = tmp_path_factory.mktemp("full_disk")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        with open(mount / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


DISK_RUNS = {
    "image": ("fast", ["--mode", "image", "--input_images_dir", "{b}/imgs", "--model_path", GOOD,
                       "--output_images_dir", "{d}/out"], "No space left on device"),
    "video": ("fast", ["--mode", "video", "--video_input", "{b}/clip.mp4", "--model_path", GOOD,
                       "--video_output", "{d}/out/o.mp4"], "o.mp4"),
    "export-torchscript": ("fast", ["--mode", "export", "--model_path", GOOD, "--export_path", "{d}/m.pt"],
                           "No space left on device"),
    "iterative": ("iter", [*ITER, *CONTENT, *STYLE, "--output_dir", "{d}/out"], "No space left on device"),
    "train": ("fast", [*TRAIN, "--style_image", "{b}/stripes.png", "--model_save_path", "{d}/out/m.pth"],
              "No space left on device"),
}


@pytest.mark.parametrize("case", list(DISK_RUNS))
def test_full_disk(case, base, full_disk, processes):
    script, argv, needle = DISK_RUNS[case]
    before = snapshot(base)
    result = invoke(script, [a.format(b=base, d=full_disk, w=full_disk) for a in argv])
    check_failure(result, needle, 1)
    assert tree(full_disk) == ["filler"]
    assert snapshot(base) == before


# ----------------------------------------------------------------------------- real processes, real signals
def test_sigterm_while_writing_a_video_removes_the_temporary_file(processes):
    work, future = processes["video-sigterm-mid"]
    result = future.result()
    assert result.rc == 143, result.stderr
    assert result.lines == ["error: interrupted by SIGTERM: stopped; what was finished is kept, nothing "
                            "half-written"], result.stderr
    assert tree(work / "out") == []


def test_sigterm_during_iterative_keeps_only_whole_epoch_images(processes):
    work, future = processes["iterative-sigterm-mid"]
    result = future.result()
    assert result.rc == 143, result.stderr
    *saved, last = result.lines  # a status line per saved epoch image (stderr, like every status line), then one error
    assert last == ("error: interrupted by SIGTERM: stopped; what was finished is kept, nothing "
                    "half-written"), result.stderr
    assert all(re.fullmatch(r"epoch \d+/500 \(\d+x\d+\): saved .*epoch_\d{3}\.jpg", s) for s in saved), result.stderr
    assert result.stdout == ""
    names = tree(work / "out")
    # The signal may land between an image's rename and its status line (seen once in CI): one more, whole image.
    assert len(saved) <= sum(name.startswith("epoch_") for name in names) <= len(saved) + 1, result.stderr
    assert "epoch_001.jpg" in names and "final.jpg" not in names and temp_files(work) == []
    for name in names:
        if name.endswith(".jpg"):
            Image.open(work / "out" / name).load()  # every image left is whole


def test_unreadable_sub_folder_and_file_are_both_reported_and_counted(processes):
    if "unreadable-tree" not in processes:
        pytest.skip("needs root and setpriv to make files unreadable")
    work, future = processes["unreadable-tree"]
    result = future.result()
    assert result.rc == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.lines == [f"skipped: permission denied reading folder: {work / 'in' / 'locked'}",
                            f"skipped: permission denied reading image: {work / 'in' / 'file.png'}",
                            f"1 stylised, 2 failed (output: {work / 'out'})"], result.stderr
    assert result.stdout == ""
    assert tree(work / "out") == ["ok.png"]


def test_unreadable_content_image_is_one_line(processes):
    if "unreadable-content" not in processes:
        pytest.skip("needs root and setpriv to make files unreadable")
    work, future = processes["unreadable-content"]
    result = future.result()
    check_failure(result, "permission denied reading image", 1)
    assert tree(work / "out") == []


# ------------------------------------------------------------------------------ options of another mode
def test_options_of_another_mode_are_named_in_one_warning(base, tmp_path):
    result = invoke("fast", ["--mode", "image", "--input_images_dir", str(base / "one.png"), "--output_images_dir",
                             str(tmp_path / "out"), "--model_path", str(base / "models" / "good.pth"),
                             "--content_dataset", str(base / "dataset"), "--epochs", "3", "--crf", "20"])
    assert result.rc == 0, result.stderr
    assert result.lines == ["warning: --content_dataset, --epochs, --crf do not apply to --mode image and are ignored",
                            f"1 stylised, 0 failed (output: {tmp_path / 'out'})"]
    assert result.stdout == ""
    assert tree(tmp_path / "out") == ["one.png"]


def test_export_with_masks_does_not_offer_one_model_per_mask(base, tmp_path):
    """--mask is ignored in export (one warning): the error for two models must not then offer one per mask."""
    b = str(base)
    result = invoke("fast", ["--mode", "export", "--model_path", f"{b}/models/good.pth", f"{b}/models/good.pth",
                             "--mask", f"{b}/one.png", f"{b}/one.png", "--export_path", str(tmp_path / "x.onnx")])
    assert result.rc == 2 and result.lines[0] == "warning: --mask does not apply to --mode export and is ignored"
    assert "--mode export takes one --model_path, got 2 (" in result.lines[1], result.lines


@pytest.mark.parametrize("extra, line", [
    (["--num_scales", "3"], "warning: --num_scales applies only with --multiscale on: ignored"),
    (["--live_port", "5000"], "warning: --live_port applies only with --live (no page is served): ignored"),
    (["--stroke_steps", "2", "--style_layers", "relu4_1,relu5_1"],
     "warning: --stroke_steps do nothing without a style layer up to relu3_1: no stroke step is taken"),
])
def test_iterative_options_that_do_nothing_here_are_named(base, tmp_path, extra, line):
    b = str(base)
    result = invoke("iter", ["--content_image", f"{b}/one.png", "--style_image", f"{b}/style.png", "--image_size", "32",
                             "--epochs", "1", "--steps_per_epoch", "1", "--output_dir", str(tmp_path / "o"), *extra])
    assert result.rc == 0 and line in result.lines, result.lines


def test_painting_options_with_a_model_are_named_in_one_warning(base, tmp_path):
    # --style_size and --stroke_scale shape how a painting is read and rendered; a trained model has no painting.
    result = invoke("fast", ["--mode", "image", "--input_images_dir", str(base / "one.png"), "--output_images_dir",
                             str(tmp_path / "out"), "--model_path", str(base / "models" / "good.pth"),
                             "--style_size", "64", "--stroke_scale", "2"])
    assert result.rc == 0, result.stderr
    assert result.lines[0] == ("warning: --style_size, --stroke_scale set how a painting (--style_image) is read and "
                               "rendered, not a --model_path: ignored")
    assert tree(tmp_path / "out") == ["one.png"]


def test_every_option_is_in_the_mode_table():
    parser = fast_style_transfer.build_parser()
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "version", "mode")}
    assert dests == set(fast_style_transfer.MODE_OPTIONS)
    assert all(set(modes) <= set(fast_style_transfer.MODES) for modes in fast_style_transfer.MODE_OPTIONS.values())


def test_each_mode_reads_only_options_the_table_gives_it():
    """Every `args.X` a mode's runner reads is listed for that mode (so the ignored-option warning is never wrong)."""
    import ast
    import inspect

    for mode in fast_style_transfer.MODES:
        runner = ast.parse(inspect.getsource(getattr(fast_style_transfer, f"run_{mode}")))
        read = {node.attr for node in ast.walk(runner) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id == "args"}
        unlisted = {dest for dest in read if dest in fast_style_transfer.MODE_OPTIONS
                    and mode not in fast_style_transfer.MODE_OPTIONS[dest]}
        assert not unlisted, (mode, unlisted)


def test_help_names_the_modes_of_each_option_and_old_flags_still_parse():
    parser = fast_style_transfer.build_parser()
    text = " ".join(parser.format_help().split())  # unwrapped
    for action in parser._actions:
        if action.dest in fast_style_transfer.MODE_OPTIONS:
            modes = f"[{', '.join(fast_style_transfer.MODE_OPTIONS[action.dest])}] "
            assert parser._get_formatter()._get_help_string(action).startswith(modes), action
    assert "--image_size IMAGE_SIZE, --crop_size IMAGE_SIZE [train] side of the square training crops" in text
    assert "--max_size MAX_SIZE [image, video, webcam, sheet] downscale each input so its longest side" in text
    old = parser.parse_args(["--mode", "train", "--image_size", "128", "--style_size", "64"])
    alias = parser.parse_args(["--mode", "train", "--crop_size", "128", "--style_size", "64"])
    assert vars(old) == vars(alias) and old.image_size == 128


def test_resume_past_a_corrupt_checkpoint_warns_in_one_line(base, tmp_path):
    argv = _fill([*TRAIN, "--style_image", "{b}/stripes.png", "--checkpoint_interval", "1"], base, tmp_path)
    assert invoke("fast", [*argv, "--max_steps", "2"]).rc == 0
    newest = tmp_path / "out" / "m_checkpoints" / "checkpoint_step_00000002.pt"
    newest.write_bytes(newest.read_bytes()[:4096])  # cut off mid-write, as by a crash or a full disk
    result = invoke("fast", [*argv, "--max_steps", "3", "--resume"])
    assert result.rc == 0, result.stderr
    warnings = [line for line in result.lines if line.startswith("warning:")]
    assert warnings == [f"warning: resuming from checkpoint_step_00000001.pt (step 1) because the newer checkpoint "
                        f"is unreadable: checkpoint {newest} is truncated or damaged (not a readable PyTorch archive); "
                        f"renamed it to checkpoint_step_00000002.pt.broken"]
    assert torch.load(tmp_path / "out" / "m.pth", weights_only=True)["settings"]["steps"] == 3


def _closed_stderr() -> None:
    os.close(2)


def test_a_closed_stderr_still_writes_the_result_and_keeps_stdout_clean(base, tmp_path):
    # Python makes sys.stderr None: print(file=None) went to stdout and tqdm failed (exit 1, nothing written).
    proc = subprocess.run([sys.executable, str(REPO / "fast_style_transfer.py"), "--mode", "image", "--device", "cpu",
                           "--input_images_dir", str(base / "one.png"), "--output_images_dir", str(tmp_path / "out"),
                           "--model_path", str(base / "models" / "good.pth")], env=ENV, stdout=subprocess.PIPE,
                          preexec_fn=_closed_stderr, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == ""
    assert (tmp_path / "out" / "one.png").is_file()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_stderr_that_cannot_be_written_does_not_stop_the_run(base, tmp_path):
    # 2>/dev/full (or a reader gone: 2>&1 | head): the first status line failed and the run stopped, exit 1.
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(REPO / "stylefusion.py"), "--content_image", str(base / "one.png"),
                               "--style_image", str(base / "style.png"), "--image_size", "32", "--epochs", "2",
                               "--steps_per_epoch", "1", "--output_dir", str(tmp_path / "out")], env=ENV,
                              stdout=subprocess.PIPE, stderr=full, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["epoch_001.jpg", "epoch_002.jpg", "final.jpg",
                                                                    "loss_log.csv"]


def test_a_deleted_current_folder_is_one_line_not_a_library_load_failure(tmp_path):
    gone = tmp_path / "gone"

    def enter_then_delete() -> None:
        gone.mkdir()
        os.chdir(gone)
        gone.rmdir()

    proc = subprocess.run([sys.executable, str(REPO / "stylefusion.py"), "--version"], env=ENV, capture_output=True,
                          text=True, preexec_fn=enter_then_delete, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "current folder no longer exists" in proc.stderr
