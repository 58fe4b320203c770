"""fast_style_transfer.py --mode image / export / download, run as a user would (subprocess).

The runs are independent, so they start together in one module fixture (a few at a time) and each test
checks one result: the file stays fast on a small shared machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylefusion.networks.released import RELEASED_MODELS_URL
from stylefusion.networks.transformer import TransformerNet
from stylefusion.networks.model_files import save_model
from tests.helpers import REPO, assert_one_line_error, scene
from tests.test_released import build_archive
from tests.test_transformer import trained_like_network

SCRIPT = str(REPO / "fast_style_transfer.py")
# The design's verbatim command, run inside a scratch folder.
VERBATIM = ["--mode", "image", "--input_images_dir", "./data/train2014/default_class",
            "--output_images_dir", "./output/images_generated", "--model_path", "./models/udnie.pth"]


class NotWeights:
    """torch.save of an instance of this is a pickle that weights_only loading must refuse."""


def run(*args: str, cwd: Path = REPO, env: dict | None = None, launcher: tuple[str, ...] = ()
        ) -> subprocess.CompletedProcess:
    start = time.monotonic()
    # One compute thread: the images are tiny, and idle OpenMP threads spin on a busy shared machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run([sys.executable, *launcher, SCRIPT, *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=300, env=env)
    result.elapsed = time.monotonic() - start  # type: ignore[attr-defined]
    return result


def build(base: Path) -> dict[str, Path]:
    """Model files (good and bad) and image folders for every case."""
    p = {name: base / name for name in ("models", "imgs", "empty")}
    for folder in p.values():
        folder.mkdir()
    save_model(trained_like_network(), p["models"] / "good.pth",
               {"style_image": "udnie.jpg", "style_weight": 1e10, "image_size": 256})
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)},
               p["models"] / "vgg.pth")
    torch.save(TransformerNet().state_dict(), p["models"] / "truncated.pth")
    data = (p["models"] / "truncated.pth").read_bytes()
    (p["models"] / "truncated.pth").write_bytes(data[: len(data) // 3])
    torch.save(NotWeights(), p["models"] / "object.pth")
    (p["imgs"] / "sub").mkdir()
    scene((48, 32), 0).save(p["imgs"] / "a.jpg")
    scene((48, 32), 1).save(p["imgs"] / "b.png")
    scene((32, 40), 2).save(p["imgs"] / "sub" / "c.jpg")
    (p["imgs"] / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (p["empty"] / "notes.txt").write_text("no images here")
    p["five"] = base / "five"  # five good images in two folders, for the torchrun run
    (p["five"] / "sub").mkdir(parents=True)
    for i in range(5):
        scene((40, 32), 10 + i).save(p["five"] / ("sub" if i % 2 else "") / f"f{i}.jpg")
    Image.new("RGB", (40, 3)).save(base / "tiny.png")
    build_archive(base / "saved_models.zip")
    return p


def verbatim_flow(base: Path) -> dict[str, subprocess.CompletedProcess]:
    """In an empty folder: the verbatim command without a model, then download (from a local zip), then it."""
    work = base / "verbatim"
    (work / "data" / "train2014" / "default_class" / "nested").mkdir(parents=True)
    scene((48, 32), 4).save(work / "data" / "train2014" / "default_class" / "x.jpg")
    scene((36, 28), 5).save(work / "data" / "train2014" / "default_class" / "nested" / "y.png")
    results = {"no-model": run(*VERBATIM, cwd=work),
               "download": run("--mode", "download", "--models_url", base / "saved_models.zip", cwd=work)}
    results["image"] = run(*VERBATIM, cwd=work)
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("cli")
    p = build(base)
    models, out = p["models"], base / "out"
    image = ["--mode", "image", "--output_images_dir", out]
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "",
               "NO_PROXY": ""}  # proxy on a closed port: fails the same with or without a network
    jobs = {
        "vgg": (*image, "--input_images_dir", p["imgs"], "--model_path", models / "vgg.pth"),
        "truncated": (*image, "--input_images_dir", p["imgs"], "--model_path", models / "truncated.pth"),
        "object": (*image, "--input_images_dir", p["imgs"], "--model_path", models / "object.pth"),
        "missing-input": (*image, "--input_images_dir", base / "nope", "--model_path", models / "good.pth"),
        "empty-input": (*image, "--input_images_dir", p["empty"], "--model_path", models / "good.pth"),
        "batch-zero": (*image, "--input_images_dir", p["imgs"], "--model_path", models / "good.pth",
                       "--batch_size", "0"),
        "max-size": (*image, "--input_images_dir", p["imgs"], "--model_path", models / "good.pth",
                     "--max_size", "4"),
        "too-small": (*image, "--input_images_dir", base / "tiny.png", "--model_path", models / "good.pth"),
        "same-dir": ("--mode", "image", "--input_images_dir", p["imgs"], "--output_images_dir", p["imgs"],
                     "--model_path", models / "good.pth"),
        "mixed": ("--mode", "image", "--input_images_dir", p["imgs"], "--output_images_dir", base / "out-mixed",
                  "--model_path", models / "good.pth", "--batch_size", "2", "--preserve_color", "luminance"),
        "export-ext": ("--mode", "export", "--model_path", models / "good.pth", "--export_path", base / "m.h5"),
        "export-pt": ("--mode", "export", "--model_path", models / "good.pth", "--export_path", base / "m.pt"),
        "download-offline": ("--mode", "download", "--models_dir", base / "dl-offline"),
    }
    with ThreadPoolExecutor(6) as pool:
        flow = pool.submit(verbatim_flow, base)
        futures = {name: pool.submit(run, *args, env=offline if name == "download-offline" else None)
                   for name, args in jobs.items()}
        torchrun = pool.submit(run, "--mode", "image", "--input_images_dir", p["five"], "--output_images_dir",
                               base / "out-torchrun", "--model_path", models / "good.pth", "--device", "cpu",
                               launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
        results = {name: f.result() for name, f in futures.items()}
        results["torchrun"] = torchrun.result()
        results.update({f"verbatim-{k}": v for k, v in flow.result().items()})
    results["base"] = base  # type: ignore[assignment]
    return results


@pytest.mark.cuda(also_cpu=True)  # --device auto: runs on CUDA when present (bench/gpu_check.py)
@pytest.mark.parametrize("case, needles", [
    ("vgg", ["another architecture"]),
    ("truncated", ["corrupt or truncated"]),
    ("object", ["not a plain weights file"]),  # a pickled function: tests/test_transformer.py
    ("missing-input", ["input not found"]),
    ("empty-input", ["no image files"]),
    ("batch-zero", ["--batch_size", "must be >= 1"]),
    ("max-size", ["--max_size 4", "too small"]),
    ("too-small", ["tiny.png", "too small"]),
    ("same-dir", ["input folder", "overwrite"]),
    ("export-ext", [".h5", ".onnx", ".pt"]),
    ("verbatim-no-model", ["models/udnie.pth", "--mode download"]),
])
def test_bad_input_is_one_line(runs, case, needles):
    # A failure after the model loaded follows its settings line (a status line, on stderr since #10).
    assert_one_line_error(runs[case], *needles, status=("model settings: ",))
    assert runs[case].stdout == ""


def test_bad_input_writes_nothing(runs):
    base = runs["base"]
    assert not (base / "out").exists()
    assert sorted(p.name for p in (base / "imgs").rglob("*")) == ["a.jpg", "b.png", "broken.jpg", "c.jpg", "sub"]


def test_download_offline_fails_fast_naming_the_url(runs):
    from stylefusion.networks.released import DOWNLOAD_TIMEOUT_S

    result = runs["download-offline"]
    assert_one_line_error(result, RELEASED_MODELS_URL)
    # Fails fast: one attempt bounded by the socket timeout, not a wall-clock assertion (load would make it flaky).
    assert DOWNLOAD_TIMEOUT_S <= 60


@pytest.mark.cuda(also_cpu=True)  # --device auto: runs on CUDA when present (bench/gpu_check.py)
@pytest.mark.parametrize("case", ["mixed", "torchrun", "export-pt", "download-offline", "verbatim-download",
                                  "verbatim-image", "missing-input"])
def test_stdout_stays_empty(runs, case):
    """Status, summary and error lines all go to stderr, so stdout is free for scripting."""
    assert runs[case].stdout == "", runs[case].stdout
    assert runs[case].stderr.strip(), case  # each case does say something, on stderr


@pytest.mark.cuda(also_cpu=True)  # --device auto: runs on CUDA when present (bench/gpu_check.py)
def test_image_mode_mirrors_tree_reports_settings_and_skips_unreadable(runs):
    result, out = runs["mixed"], runs["base"] / "out-mixed"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()  # no progress bar: stderr is not a terminal here
    # Status lines go to stderr too: the model's settings, one line per skipped file, the summary last.
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith("model settings: ") and "style_image=udnie.jpg" in lines[0], result.stderr
    assert lines[1].startswith("skipped") and "broken.jpg" in lines[1], result.stderr
    assert lines[2].startswith("3 stylised, 1 failed"), result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.jpg", "b.png", "sub", "sub/c.jpg"]
    assert Image.open(out / "a.jpg").size == (48, 32) and Image.open(out / "sub" / "c.jpg").size == (32, 40)
    assert Image.open(out / "b.png").format == "PNG"


def test_image_mode_under_torchrun_splits_the_files_between_processes(runs):  # 2 CPU processes on any machine
    result, out = runs["torchrun"], runs["base"] / "out-torchrun"
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert written == ["f0.jpg", "f2.jpg", "f4.jpg", "sub/f1.jpg", "sub/f3.jpg"]
    counts = sorted(int(line.split()[0]) for line in result.stderr.splitlines() if " stylised, " in line)
    assert counts == [2, 3]  # each process took its own share, none did all five


def test_export_from_the_cli(runs):
    assert runs["export-pt"].returncode == 0, runs["export-pt"].stderr
    assert "TorchScript" in runs["export-pt"].stderr
    assert (runs["base"] / "m.pt").stat().st_size > 1_000_000  # the ONNX path: tests/test_export.py


@pytest.mark.cuda(also_cpu=True)  # --device auto: runs on CUDA when present (bench/gpu_check.py)
def test_verbatim_command_after_download(runs):
    download, image = runs["verbatim-download"], runs["verbatim-image"]
    assert download.returncode == 0, download.stderr
    models = runs["base"] / "verbatim" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["candy.pth", "mosaic.pth", "rain_princess.pth",
                                                         "udnie.pth"]
    assert image.returncode == 0, image.stderr
    assert "2 stylised, 0 failed" in image.stderr
    out = runs["base"] / "verbatim" / "output" / "images_generated"
    assert Image.open(out / "x.jpg").size == (48, 32)
    assert Image.open(out / "nested" / "y.png").size == (36, 28)
