"""The CUDA paths (issue #28): tiling with budgets read from GPU memory, both fast networks, region masks, several
styles per network, the precision rules (fp16/bf16 autocast, loss and grad scaling), training, the iterative
optimiser, image, video and webcam modes, and NCCL under torchrun.

Every test here is marked `cuda`: skipped without a CUDA device (tests/conftest.py), run by bench/gpu_check.py
with `pytest -m cuda`. The CPU tests prove the same code on the CPU; these prove the device handling.

Random networks put nearly every output pixel at 0 (their 0-255 output has a standard deviation below 1), where
any comparison passes, so these compare networks whose output is spread over 0-255 (`spread`). Tests that claim
exactness turn TF32 off (`exact`): with it, cuDNN rounds conv inputs to 10 mantissa bits. Calibrated on the CPU
with these networks at 90x61: bf16 vs fp32 45-49 dB, fp16 (autocast) 64-68 dB, TF32-rounded weights and input
66-70 dB, tiled vs whole 110-126 dB.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fast_train_data import IMAGE_SIZE, make_checks, make_dataset, make_style
from helpers import REPO, scene, scene_and_stripes, stripes
from test_transformer import trained_like_network
from test_video import make_clip
from stylefusion.core.device import check_precision, needs_grad_scaler, resolve_precision
from stylefusion.core.errors import DeviceError
from stylefusion.core.memory import available_memory, default_budget
from stylefusion.iterative.gatys import IterativeConfig, stylize
from stylefusion.networks.cin import make_conditional, select_style
from stylefusion.networks.compact import CompactNet
from stylefusion.networks.model_files import load_model, save_model
from stylefusion.run.control import Control, ControlledStylizer
from stylefusion.run.folder import ImageConfig, stylize_folder
from stylefusion.run.stylizer import Stylizer
from stylefusion.run.video import VideoConfig, stylize_video
from stylefusion.training.checkpoint import find_latest_checkpoint, load_checkpoint
from stylefusion.training.loop import TrainConfig, train, train_paths

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
LOW_PRECISION_PSNR = {"fp16": 40.0, "bf16": 30.0}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float().cpu() - b.float().cpu()).double().pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def spread(net: torch.nn.Module, last: str) -> torch.nn.Module:
    """Scale the last conv so the 0-255 output has a standard deviation of about 50 around 128."""
    probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 255
    with torch.no_grad():
        layer = net.get_submodule(last)
        std = net(probe).std()
        layer.conv2d.weight.mul_(50 / std)
        layer.conv2d.bias.fill_(128 / getattr(layer, "gain", 1.0))
    return net.eval()


def random_norms(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Affine norm parameters away from the defaults, like a trained network's (every statistic matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
    return net


def make_network(arch: str) -> torch.nn.Module:
    if arch == "standard":
        return spread(trained_like_network(), "deconv3")
    torch.manual_seed(0)
    return spread(random_norms(CompactNet()), "deconv2")


@pytest.fixture(scope="module", params=["standard", "compact"])
def network(request: pytest.FixtureRequest) -> torch.nn.Module:
    return make_network(request.param)


@pytest.fixture
def exact():
    """fp32 convolutions and matmuls in full fp32 (no TF32) for the duration of a test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def image(height: int = 90, width: int = 61, batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def low_precision(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")


# ------------------------------------------------------------------------------------------- budgets and tiles
def test_the_memory_budget_is_read_from_the_gpu(network):
    total = torch.cuda.get_device_properties(CUDA).total_memory
    free = available_memory(CUDA)
    assert free is not None and 0 < free <= total
    assert 0 < default_budget(CUDA) <= total // 2 + 1
    stylizer = Stylizer(network, CUDA)
    assert 0 < stylizer.max_memory <= total // 2 + 1
    # An image whose whole pass would not fit the budget runs in tiles that do.
    side = math.isqrt(int(2 * stylizer.max_memory / stylizer.bytes_per_pixel)) // 4 * 4
    assert stylizer.batch_limit(side, side) == 0
    plan = stylizer.tile_plan(side, side)
    assert plan.map_bytes + plan.work_bytes <= stylizer.max_memory


@pytest.mark.parametrize("on", ["cpu", "cuda"])
def test_tiled_output_equals_the_whole_pass(network, exact, on):
    x = image(batch=2).to(on)
    whole = Stylizer(network, CUDA, "fp32")(x)
    tiled = Stylizer(network, CUDA, "fp32", tile_size=24)
    seen: list[int] = []
    tiled.on_tile = lambda progress: seen.append(progress.total)
    out = tiled(x)
    assert out.device == x.device and out.shape == x.shape and out.dtype == x.dtype
    assert seen and seen[0] > len(tiled.tile_plan(90, 61).stages)  # several tiles per pass
    assert psnr(out, whole) >= 60.0
    assert (out - whole).abs().max().item() < 1e-3
    x8 = (x * 255).round().to(torch.uint8)
    whole8, tiled8 = Stylizer(network, CUDA, "fp32")(x8), tiled(x8)
    assert whole8.dtype == tiled8.dtype == torch.uint8 and whole8.device == x8.device
    assert (whole8.int() - tiled8.int()).abs().max().item() <= 1


def test_tiles_switch_on_when_the_budget_is_small(network, exact):
    x = image(96, 80, seed=3).to(CUDA)
    roomy = Stylizer(network, CUDA, max_memory=1 << 30)
    tight = Stylizer(network, CUDA, max_memory=int(0.75 * roomy.bytes_per_pixel * 96 * 80))  # under one pass
    calls: list[int] = []
    roomy.on_tile = tight.on_tile = lambda progress: calls.append(progress.done)
    whole = roomy(x)
    assert calls == []
    out = tight(x)
    assert calls and psnr(out, whole) >= 60.0


@pytest.mark.parametrize("precision, threshold", [("fp32", 45.0), ("fp16", 40.0), ("bf16", 30.0)])
def test_tiled_equals_whole_under_the_default_precision_rules(network, precision, threshold):
    """TF32 on (PyTorch's default for convolutions) and autocast: tiles still agree with the whole pass."""
    low_precision(precision)
    x = image().to(CUDA)
    whole = Stylizer(network, CUDA, precision)(x)
    tiled = Stylizer(network, CUDA, precision, tile_size=32)(x)
    assert torch.isfinite(tiled).all() and psnr(tiled, whole) >= threshold


def test_cuda_output_matches_the_cpu(network, exact):
    """The CPU runs the inference replacements (block conv, phase upsample conv); CUDA the plain layers."""
    x = image(batch=2)
    assert psnr(Stylizer(network, CUDA, "fp32")(x), Stylizer(network, "cpu", "fp32")(x)) >= 60.0


def test_peak_memory_of_a_whole_pass_is_within_the_planners_figure(network):
    """The budget planner's bytes per pixel (measured on the CPU) must hold on the GPU, or batches it admits OOM."""
    stylizer = Stylizer(network, CUDA, "fp32")
    x = torch.rand(1, 3, 1024, 2048, device=CUDA)
    stylizer(x)  # warm-up: cuDNN's algorithm choice
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    stylizer(x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak <= stylizer.bytes_per_pixel * x.shape[-2] * x.shape[-1], peak / (x.shape[-2] * x.shape[-1])


# ------------------------------------------------------------------------------------------- precision rules
def test_precision_rules_on_cuda(network):
    bf16 = torch.cuda.is_bf16_supported()
    assert resolve_precision("auto", CUDA) == ("bf16" if bf16 else "fp32")
    check_precision("fp16", CUDA)
    if bf16:
        check_precision("bf16", CUDA)
    else:
        with pytest.raises(DeviceError, match="bf16"):
            check_precision("bf16", CUDA)
    assert needs_grad_scaler(CUDA, "fp16") and not needs_grad_scaler(CUDA, "bf16")
    assert not needs_grad_scaler(CUDA, "fp32")
    stylizer = Stylizer(network, CUDA, "fp16")  # on CUDA: an fp32 network under autocast
    assert stylizer.compute_dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in stylizer.network.parameters())


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_is_close_to_fp32(network, exact, precision):
    low_precision(precision)
    x = image(batch=2).to(CUDA)
    reference = Stylizer(network, CUDA, "fp32")(x)
    out = Stylizer(network, CUDA, precision)(x)
    assert out.dtype == torch.float32 and out.device.type == "cuda" and torch.isfinite(out).all()
    assert psnr(out, reference) >= LOW_PRECISION_PSNR[precision]
    out8 = Stylizer(network, CUDA, precision)((x * 255).round().to(torch.uint8))
    assert out8.dtype == torch.uint8 and out8.device.type == "cuda"


# ------------------------------------------------------------------------------------------- control
def _half_mask(path: Path, width: int, height: int) -> Path:
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    Image.fromarray(mask).save(path)
    return path


@pytest.mark.parametrize("on", ["cpu", "cuda"])
def test_a_mask_keeps_the_unmasked_region_exactly(tmp_path, on):
    network = make_network("standard")
    x = image(48, 64, batch=2, seed=5).to(on)
    mask = _half_mask(tmp_path / "left.png", 64, 48)
    stylizer = Stylizer(network, CUDA)
    stylised = stylizer(x)
    out = ControlledStylizer([stylizer], Control(masks=(mask,), feather=4))(x)
    assert out.device == x.device and out.shape == x.shape
    assert torch.equal(out[..., 32:], x[..., 32:])  # outside the mask: the input, bit for bit
    assert torch.allclose(out[..., :20], stylised[..., :20], atol=1e-5)  # well inside: the stylised image
    half = ControlledStylizer([stylizer], Control(strength=0.5))(x)
    assert torch.allclose(half, x + 0.5 * (stylised - x), atol=1e-5)


@pytest.mark.parametrize("preserve", ["luminance", "histogram"])
def test_preserve_color_on_a_cuda_batch(exact, preserve):
    """Stylizer takes batches on any device; ControlledStylizer is callable like it."""
    stylizer = Stylizer(make_network("standard"), CUDA)
    x = image(48, 64, seed=6)
    controlled = ControlledStylizer([stylizer], Control(strength=0.5), preserve)
    on_gpu, on_cpu = controlled(x.to(CUDA)), controlled(x)
    assert on_gpu.device.type == "cuda" and torch.isfinite(on_gpu).all()
    assert psnr(on_gpu, on_cpu) >= 50.0


def test_several_styles_per_network(exact):
    torch.manual_seed(0)
    net = make_conditional(trained_like_network(), 3)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in net.modules():
            if hasattr(module, "gamma"):
                module.gamma.copy_(torch.rand(module.gamma.shape, generator=generator) + 0.5)
                module.beta.copy_(torch.rand(module.beta.shape, generator=generator) - 0.5)
    select_style(net, 0)
    net = spread(net, "deconv3")
    x = image(batch=2, seed=7)
    outputs = []
    for style in range(3):
        select_style(net, style)
        out = Stylizer(net, CUDA)(x)
        assert psnr(out, Stylizer(net, "cpu")(x)) >= 60.0
        outputs.append(out)
    assert max(psnr(outputs[i], outputs[j]) for i, j in ((0, 1), (0, 2), (1, 2))) < 40.0  # they differ
    select_style(net, (0.2, 0.3, 0.5))
    whole = Stylizer(net, CUDA)(x.to(CUDA))
    assert psnr(Stylizer(net, CUDA, tile_size=24)(x.to(CUDA)), whole) >= 60.0


# ------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cuda_train")
    return {"dataset": make_dataset(root / "dataset", corrupt=False), "style": make_style(root / "stripes.png"),
            "checks": make_checks(root / "checks.png")}


def _train_config(data: dict[str, Path], out: Path, **overrides) -> TrainConfig:
    options = dict(style_image=str(data["style"]), content_dataset=str(data["dataset"]),
                   model_save_path=str(out / "m.pth"), batch_size=2, image_size=IMAGE_SIZE, max_steps=2,
                   checkpoint_interval=1, preview_interval=1, device="cuda", num_workers=0)
    options.update(overrides)
    return TrainConfig(**options)


def _logged_totals(config: TrainConfig) -> list[float]:
    with open(train_paths(config).loss_log, newline="") as f:
        return [float(row["total"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_steps_checkpoints_and_resumes_on_cuda(data, tmp_path, precision):
    """fp16 trains with a GradScaler, whose state the checkpoint keeps; fp32 adds the stability term."""
    low_precision(precision)
    config = _train_config(data, tmp_path / "out", precision=precision,
                           stability_weight=1.0 if precision == "fp32" else 0.0)
    result = train(config)
    assert result.step == 2 and result.model_path is not None and result.model_path.exists()
    assert all(p.device.type == "cuda" for p in result.network.parameters())
    checkpoint = load_checkpoint(find_latest_checkpoint(train_paths(config).checkpoint_dir))
    assert bool(checkpoint["scaler"]) == (precision == "fp16")
    assert "cuda" in checkpoint["rng"]
    resumed = train(replace(config, max_steps=3, resume=True))  # restores the scaler and the CUDA RNG
    assert resumed.step == 3
    totals = _logged_totals(config)
    assert len(totals) == 3 and all(math.isfinite(t) for t in totals)
    assert load_model(result.model_path)[1]["precision"] == precision


def test_several_styles_train_on_cuda(data, tmp_path):
    config = _train_config(data, tmp_path / "out", style_image=[str(data["style"]), str(data["checks"])],
                           max_steps=4, checkpoint_interval=0, preview_interval=0)
    train(config)
    network, settings = load_model(config.model_save_path)
    assert settings["styles"] == ["stripes.png", "checks.png"]
    assert not torch.equal(network.in1.gamma[0], network.in1.gamma[1])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_torchrun_trains_on_two_gpus_with_nccl(data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "fast_style_transfer.py", "--mode", "train", "--style_image", str(data["style"]), "--content_dataset",
         str(data["dataset"]), "--model_save_path", str(out / "m.pth"), "--image_size", str(IMAGE_SIZE),
         "--batch_size", "2", "--max_steps", "2", "--device", "cuda", "--precision", "fp16", "--num_workers", "0",
         "--preview_interval", "0"],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings = load_model(out / "m.pth")[1]
    assert settings["world_size"] == 2 and settings["steps"] == 2


# ------------------------------------------------------------------------------------------- iterative
def _iterative(folder: Path, out: Path, **overrides) -> IterativeConfig:
    content, style = scene_and_stripes(folder)
    options = dict(content_image=content, style_images=[style], output_dir=out, epochs=1, steps_per_epoch=5,
                   image_size=64, device="cuda", output_format="png")
    options.update(overrides)
    return IterativeConfig(**options)


def _loss_log(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(row["total"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_iterative_optimiser_on_cuda(tmp_path, precision):
    """fp16 runs with the iterative optimiser's own loss scaling (LossScale)."""
    low_precision(precision)
    result = stylize(_iterative(tmp_path, tmp_path / "out", precision=precision))
    totals = _loss_log(result.loss_log)
    assert result.steps == 5 and len(totals) == 5 and all(math.isfinite(t) for t in totals)
    assert totals[-1] < totals[0]
    assert result.image.device.type == "cpu" and result.image.shape == (3, 48, 64)
    assert result.final_path.exists()


def test_iterative_tiles_give_the_whole_image_loss_on_cuda(tmp_path, exact):
    common = dict(image_size=96, steps_per_epoch=2, init="content", pyramid_levels=1, precision="fp32")
    whole = _loss_log(stylize(_iterative(tmp_path, tmp_path / "whole", **common)).loss_log)
    tiled = _loss_log(stylize(_iterative(tmp_path, tmp_path / "tiled", tile_size=32, **common)).loss_log)
    assert abs(tiled[0] - whole[0]) <= 1e-4 * abs(whole[0])  # the same start image: the same loss
    assert abs(tiled[1] - whole[1]) <= 1e-3 * abs(whole[1])  # after one step along the tiled gradient


def test_iterative_region_masks_on_cuda(tmp_path):
    content, style = scene_and_stripes(tmp_path)
    stripes((64, 64), seed=3).save(tmp_path / "style2.png")
    left = _half_mask(tmp_path / "left.png", 64, 48)
    right = np.asarray(Image.open(left)) == 0
    Image.fromarray((right * 255).astype(np.uint8)).save(tmp_path / "right.png")
    config = _iterative(tmp_path, tmp_path / "out", style_images=[style, tmp_path / "style2.png"],
                        style_masks=[left, tmp_path / "right.png"], steps_per_epoch=3)
    result = stylize(config)
    totals = _loss_log(result.loss_log)
    assert len(totals) == 3 and all(math.isfinite(t) for t in totals)


# ------------------------------------------------------------------------------------------- modes
@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cuda_model") / "model.pth"
    save_model(make_network("standard"), path)
    return path


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_image_mode_on_cuda(tmp_path, model_file, precision):
    source = tmp_path / "in"
    source.mkdir()
    scene((48, 32), 0).save(source / "a.jpg")
    scene((48, 32), 1).save(source / "b.png")
    summary = stylize_folder(ImageConfig(source, tmp_path / "out", model_file, device="cuda", precision=precision))
    assert summary.stylised == 2 and summary.failed == 0
    assert Image.open(tmp_path / "out" / "a.jpg").size == (48, 32)


def test_video_mode_on_cuda(tmp_path, model_file):
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=6, audio=None)
    result = stylize_video(VideoConfig(video_input=clip, video_output=tmp_path / "out.mp4", model_path=model_file,
                                       device="cuda", precision="fp16", batch_size=4))
    assert result.frames == 6 and (result.width, result.height) == (64, 48)
    assert result.flicker is not None and math.isfinite(result.flicker)


def test_webcam_mode_on_cuda(tmp_path, model_file):
    from stylefusion.run.webcam import WebcamConfig, run_webcam

    clip = make_clip(tmp_path / "camera.mp4", width=64, height=48, frames=30, fps=30, audio=None)
    result = run_webcam(WebcamConfig(camera=str(clip), model_paths=[model_file], max_size=32,
                                     video_output=tmp_path / "rec.mp4", max_frames=3, device="cuda"))
    assert result.frames == 3 and (result.width, result.height) == (32, 24)
