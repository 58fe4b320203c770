"""The compact network (issue #16): its cost, training, model files, and every way of running it."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fast_train_data import IMAGE_SIZE, data, one_thread  # noqa: F401 (fixtures)
from stylefusion.networks.compact import COMPACT_CHANNELS, CompactNet, compact_channels, multiply_adds_per_pixel
from stylefusion.core.errors import ConfigError
from stylefusion.networks.export import export_model
from stylefusion.networks.inference import PhaseUpsampleConv, for_inference
from stylefusion.run.folder import ImageConfig, stylize_folder
from stylefusion.run.stylizer import Stylizer
from stylefusion.training.loop import TrainConfig, train
from stylefusion.networks.transformer import MIN_INPUT_SIDE, TransformerNet
from stylefusion.networks.model_files import architecture_of, load_model, save_model
from stylefusion.run.video import VideoConfig, stylize_video
from tests.helpers import assert_one_line_error, run_script
from tests.test_video import make_clip, read_video


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    mse = (a - b).double().pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def random_compact(seed: int = 0) -> CompactNet:
    """A compact network with non-default norm affines, so every norm's statistics matter."""
    torch.manual_seed(seed)
    net = CompactNet().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net


@pytest.fixture(scope="module")
def compact_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compact") / "compact.pth"
    save_model(random_compact(), path)
    return path


def train_config(data: tuple[Path, Path], out: Path, **overrides) -> TrainConfig:
    dataset, style = data
    options = dict(style_image=style, content_dataset=dataset, model_save_path=out / "model.pth", batch_size=2,
                   image_size=IMAGE_SIZE, epochs=100, checkpoint_interval=0, preview_interval=0, device="cpu",
                   arch="compact")
    options.update(overrides)
    return TrainConfig(**options)


# ---------------------------------------------------------------------------------------------- the cost
def test_compact_costs_at_least_8x_fewer_multiply_adds():
    standard, compact = multiply_adds_per_pixel(TransformerNet()), multiply_adds_per_pixel(CompactNet())
    # By hand: 9x9 3->32, 3x3 32->64 /4, 3x3 64->128 /16, 10 x 3x3 128->128 /16, 3x3 128->64 /4, 3x3 64->32,
    # 9x9 32->3 (per input pixel; /4 and /16 for the half- and quarter-resolution maps).
    assert standard == 81 * 3 * 32 + 9 * 32 * 64 / 4 + 9 * 64 * 128 / 16 + 10 * 9 * 128 * 128 / 16 \
        + 9 * 128 * 64 / 4 + 9 * 64 * 32 + 81 * 32 * 3 == 153792
    # 5x5 3->16 /4, 3x3 16->32 /16, 8 x 3x3 32->32 /16, 3x3 32->16 /4, 3x3 16->3.
    assert compact == 25 * 3 * 16 / 4 + 9 * 16 * 32 / 16 + 8 * 9 * 32 * 32 / 16 + 9 * 32 * 16 / 4 + 9 * 16 * 3
    # --compact_width 56, the widest measured: still 8x fewer
    assert standard / multiply_adds_per_pixel(CompactNet(56)) >= 8.0
    assert standard / compact >= 8.0
    assert multiply_adds_per_pixel(CompactNet(), 48, 80) == compact  # per pixel: independent of the size


def test_compact_runs_at_the_smallest_input_side():
    with torch.no_grad():
        assert CompactNet()(torch.rand(1, 3, 8, MIN_INPUT_SIDE)).shape == (1, 3, 8, 8)


# ------------------------------------------------------------------------------------ training and files
def test_compact_trains_and_its_model_file_records_the_architecture(data, tmp_path):
    seen = []
    result = train(train_config(data, tmp_path, max_steps=30), seen.append)
    totals = [p.total for p in seen]
    assert sum(totals[-5:]) / 5 < 0.9 * sum(totals[:5]) / 5, totals
    assert isinstance(result.network, CompactNet)
    net, settings = load_model(result.model_path)
    assert settings["arch"] == "compact" and isinstance(net, CompactNet)
    for name, value in result.network.state_dict().items():
        assert torch.equal(value, net.state_dict()[name])


def test_files_without_settings_are_recognised_by_their_keys(tmp_path):
    compact, standard = random_compact(1), TransformerNet()
    torch.save(compact.state_dict(), tmp_path / "plain_compact.pth")
    torch.save(standard.state_dict(), tmp_path / "plain_standard.pth")
    assert architecture_of(compact.state_dict()) == "compact"
    assert architecture_of({"conv.weight": torch.zeros(1)}) is None
    # Recognised by the conv weights alone, so a network whose norms were swapped is still recognised.
    assert architecture_of({k: v for k, v in standard.state_dict().items() if ".in" not in k
                            and not k.startswith("in")}) == "standard"
    assert isinstance(load_model(tmp_path / "plain_compact.pth")[0], CompactNet)
    assert type(load_model(tmp_path / "plain_standard.pth")[0]) is TransformerNet
    save_model(standard, tmp_path / "ours.pth", {"style_image": "x.jpg"})
    assert load_model(tmp_path / "ours.pth")[1] == {"style_image": "x.jpg", "arch": "standard"}


def test_compact_width_is_trained_and_kept_by_fine_tuning_and_resuming(data, tmp_path):
    # --compact_width trains a network of that width; its file loads, fine-tunes and resumes at that width
    # without being told (read from the weights), and asking for another width is one line.
    config = train_config(data, tmp_path / "narrow", max_steps=1, compact_width=8)
    narrow = train(config)
    net, _ = load_model(narrow.model_path)
    assert compact_channels(net.state_dict()) == 8 and COMPACT_CHANNELS != 8
    x = torch.rand(1, 3, 24, 40) * 255
    with torch.no_grad():
        assert torch.equal(net(x), narrow.network.eval()(x))
    tuned = train_config(data, tmp_path / "tuned", max_steps=1, checkpoint_interval=1,
                         pretrained_model_path=narrow.model_path)
    assert compact_channels(train(tuned).network.state_dict()) == 8
    resumed = train(replace(tuned, max_steps=2, pretrained_model_path=None, resume=True))
    assert resumed.step == 2 and resumed.resumed_from is not None
    assert compact_channels(resumed.network.state_dict()) == 8
    with pytest.raises(ConfigError, match="8 wide.*--compact_width 16") as error:
        train(replace(tuned, max_steps=3, pretrained_model_path=None, resume=True, compact_width=16))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="8 wide.*--compact_width 16"):
        train(replace(tuned, model_save_path=tmp_path / "other" / "m.pth", compact_width=16))


@pytest.mark.parametrize("overrides, message", [(dict(compact_width=7), "even number"),
                                                (dict(compact_width=130), "up to|from 2 to 128"),
                                                (dict(arch="standard", compact_width=16), "applies to --arch compact")])
def test_bad_compact_width_is_one_line(data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        train(train_config(data, tmp_path, **overrides))
    assert "\n" not in str(error.value)


def test_pretrained_model_of_another_architecture_is_one_line(data, tmp_path):
    save_model(TransformerNet(), tmp_path / "standard.pth")
    with pytest.raises(ConfigError, match="is a standard network.*--arch compact") as error:
        train(train_config(data, tmp_path / "out", pretrained_model_path=tmp_path / "standard.pth"))
    assert "\n" not in str(error.value)


def test_resume_with_another_architecture_is_one_line(data, tmp_path):
    config = train_config(data, tmp_path, max_steps=1, checkpoint_interval=1, num_workers=0)
    train(config)
    dataset, style = data
    result = run_script("fast_style_transfer.py", "--mode", "train", "--style_image", style, "--content_dataset",
                        dataset, "--model_save_path", config.model_save_path, "--image_size", IMAGE_SIZE,
                        "--batch_size", 2, "--max_steps", 2, "--device", "cpu", "--num_workers", 0,
                        "--preview_interval", 0, "--resume", "--arch", "standard")
    assert_one_line_error(result, "cannot resume", "compact network", "--arch compact")


# ------------------------------------------------------------------------------------- running the network
@pytest.mark.parametrize("arch", ["compact", "standard"])
def test_inference_form_runs_upsample_convs_at_the_input_resolution_with_the_same_result(arch):
    net = random_compact(5) if arch == "compact" else TransformerNet().eval()
    fast = for_inference(net, torch.device("cpu"))
    for name in ("deconv1", "deconv2"):  # every 2x upsample + 3x3 conv, whatever its width
        assert isinstance(getattr(fast, name), PhaseUpsampleConv)
    for shape in [(1, 3, 36, 52), (2, 3, 8, 12)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(6)) * 255
        with torch.no_grad():
            want = net(x)
            assert psnr(fast(x), want, 255.0) >= 80.0
            last = fast.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
            assert psnr(last, want, 255.0) >= 80.0


@pytest.mark.parametrize("size, tile", [((21, 27), 3), ((90, 61), 24), ((64, 128), 40)])
def test_tiled_compact_equals_whole_pass(size, tile):
    net = random_compact(2)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    whole = Stylizer(net, "cpu", "fp32")(x)
    seen: list[int] = []
    tiled = Stylizer(net, "cpu", "fp32", tile_size=tile)
    tiled.on_tile = lambda progress: seen.append(progress.total)
    out = tiled(x)
    assert out.shape == x.shape
    assert seen and seen[0] > len(tiled.tile_plan(*size).stages)  # several tiles per pass
    assert psnr(out, whole) >= 40.0


def test_onnx_export_of_compact_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = random_compact(3)
    session = ort.InferenceSession(str(export_model(net, tmp_path / "compact.onnx")),
                                   providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 36, 52), (1, 3, 64, 64), (1, 3, 97, 161)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(4)) * 255
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            want = net(x)[:, :, :shape[2], :shape[3]]
        assert got.shape == shape  # cropped to the input's size in the graph
        assert psnr(torch.from_numpy(got).clamp(0, 255), want.clamp(0, 255), 255.0) >= 45.0


def test_image_mode_with_a_compact_model(compact_model, make_image, tmp_path):
    source = make_image("in/photo.png", size=(45, 31))
    stylize_folder(ImageConfig(source.parent, tmp_path / "out", compact_model, device="cpu"))
    with Image.open(tmp_path / "out" / "photo.png") as out:
        assert out.size == (45, 31)
        assert np.asarray(out).std() > 0  # not a blank image


def test_video_mode_with_a_compact_model(compact_model, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=6, audio=None)
    result = stylize_video(VideoConfig(video_input=clip, video_output=tmp_path / "out.mp4",
                                       model_path=compact_model, device="cpu", batch_size=2))
    got = read_video(tmp_path / "out.mp4")
    assert result.frames == 6 and len(got["frames"]) == 6 and got["size"] == (64, 48)


PEAK_SCRIPT = """
import json, resource, sys, torch
from stylefusion.networks.compact import CompactNet
from stylefusion.run.stylizer import Stylizer
torch.set_num_threads(1)
stylizer = Stylizer(CompactNet(), "cpu", "fp32", max_memory=8 << 30)
stylizer(torch.rand(1, 3, 64, 64))  # load the kernels before measuring
x = torch.rand(1, 3, 768, 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
stylizer(x)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"grew": after - before}))
"""


def test_compact_plans_memory_with_its_own_smaller_peak():
    import json
    import subprocess
    import sys

    px = 768 * 1024
    # its whole-image pass really peaks within its stated bytes per pixel (a too-low figure would OOM budgets)
    r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    grew = json.loads(r.stdout.splitlines()[-1])["grew"]
    assert grew <= CompactNet.PEAK_BYTES_PER_PIXEL * px, grew / px
    # so a budget that holds a compact pass but not a standard one runs the compact network whole
    budget = 2 * CompactNet.PEAK_BYTES_PER_PIXEL * px
    assert Stylizer(CompactNet(), "cpu", "fp32", max_memory=budget).batch_limit(768, 1024) >= 1
    assert Stylizer(TransformerNet(), "cpu", "fp32", max_memory=budget).batch_limit(768, 1024) == 0
