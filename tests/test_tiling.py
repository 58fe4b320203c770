"""Tiled inference (stylefusion/run/tiling.py): the same result as one whole-image pass, within a memory budget.

Random weights amplify any inexactness (a wrong halo, a per-tile norm statistic, a misaligned stride), so
these tests compare against the whole-image pass on random networks at odd sizes and tiny tiles.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from stylefusion.core.errors import ConfigError
from stylefusion.networks.inference import for_inference
from stylefusion.run.stylizer import Stylizer
from stylefusion.networks.layers import layer_channels, layer_sizes, network_layers
from stylefusion.run.tiling import (POLICIES, Box, RunningStats, TiledRunner, TilePlan, back_project, peak_map_values,
                                    plan_stages, plan_tiling, tiles)
from stylefusion.networks.transformer import TransformerNet
from tests.helpers import REPO


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).double().pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def network() -> TransformerNet:
    torch.manual_seed(0)
    net = TransformerNet()
    with torch.no_grad():  # random affine norms: every norm's statistics matter for the result
        for module in net.modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("size, tile", [((21, 27), 3), ((90, 61), 24), ((64, 128), 40)])
def test_tiled_output_equals_whole_image_pass(network: TransformerNet, size: tuple[int, int], tile: int) -> None:
    # Tile 3 is smaller than every halo (the 9x9 convs alone reach 4 pixels); odd sizes exercise the pad to 4.
    x = torch.rand(2 if tile == 40 else 1, 3, *size, generator=torch.Generator().manual_seed(1))
    whole = Stylizer(network, "cpu", "fp32")(x)
    seen: list[int] = []
    tiled = Stylizer(network, "cpu", "fp32", tile_size=tile)
    tiled.on_tile = lambda progress: seen.append(progress.total)
    out = tiled(x)
    assert out.shape == x.shape
    assert seen and seen[0] > len(tiled.tile_plan(*size).stages)  # several tiles per pass
    assert psnr(out, whole) >= 40.0
    assert (out - whole).abs().max().item() < 1e-3


@pytest.mark.parametrize("policy", POLICIES[:2], ids=["store-16", "store-8"])
def test_every_storage_policy_is_exact(network: TransformerNet, policy) -> None:
    net = for_inference(network, torch.device("cpu"))
    layers = network_layers(net)
    height, width = 52, 44
    sizes = layer_sizes(layers, height, width)
    vpp = [c * h * w / (height * width) for c, (h, w) in zip(layer_channels(layers), sizes)]
    stages = plan_stages(layers, vpp, policy)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        whole = net(x * 255).div(255).clamp(0, 1)
        out = TiledRunner(layers, torch.float32, True).run(x, TilePlan(tuple(stages), 20, torch.float32, 0, 0),
                                                            (height, width), torch.device("cpu"))
    assert psnr(out, whole) >= 40.0


def test_stored_maps_shrink_with_the_policy(network: TransformerNet) -> None:
    layers = network_layers(for_inference(network, torch.device("cpu")))
    sizes = layer_sizes(layers, 64, 64)
    vpp = [c * h * w / 64 ** 2 for c, (h, w) in zip(layer_channels(layers), sizes)]
    peaks = [peak_map_values(plan_stages(layers, vpp, policy), vpp) for policy in POLICIES]
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] == 0
    assert peaks[0] <= 24  # never a full-resolution 32-channel map


def test_receptive_field_of_the_first_conv(network: TransformerNet) -> None:
    layers = network_layers(for_inference(network, torch.device("cpu")))
    sizes = layer_sizes(layers, 40, 40)
    # The 9x9 conv reaches 4 pixels each way, clipped at the border (reflection comes from inside the tile).
    assert back_project(layers[:1], sizes[:2], Box(10, 12, 0, 5)) == Box(6, 16, 0, 9)


def test_running_stats_merge_like_one_pass() -> None:
    x = torch.randn(1, 5, 30, 41, dtype=torch.float64) * 3 + 7
    stats = RunningStats()
    for box in tiles(30, 41, 7):
        stats.add(x[..., box.y0:box.y1, box.x0:box.x1])
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    assert torch.allclose(stats.mean, mean, atol=1e-5)
    assert torch.allclose(stats.m2 / stats.count, var, rtol=1e-5)


def test_tiles_switch_on_when_the_image_would_not_fit(network: TransformerNet) -> None:
    x = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(3))
    roomy = Stylizer(network, "cpu", "fp32", max_memory=1 << 30)
    tight = Stylizer(network, "cpu", "fp32", max_memory=5 << 20)  # less than one pass of 96x80 (~6 MB)
    calls: list[int] = []
    roomy.on_tile = tight.on_tile = lambda progress: calls.append(progress.done)
    whole = roomy(x)
    assert calls == []
    out = tight(x)
    assert calls and psnr(out, whole) >= 40.0


def test_batches_split_to_fit_the_budget(network: TransformerNet) -> None:
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    one_at_a_time = Stylizer(network, "cpu", "fp32", max_memory=int(1.5 * 800 * 40 * 40))
    assert one_at_a_time.batch_limit(40, 40) == 1
    assert psnr(one_at_a_time(x), Stylizer(network, "cpu", "fp32")(x)) >= 40.0


def test_a_budget_below_one_tile_is_refused_in_one_line(network: TransformerNet) -> None:
    stylizer = Stylizer(network, "cpu", "fp32", max_memory=1 << 20)
    with pytest.raises(ConfigError, match="does not fit in the memory budget") as info:
        stylizer(torch.rand(1, 3, 200, 300))
    assert "\n" not in str(info.value)


def test_plan_prefers_fewer_passes_when_memory_allows(network: TransformerNet) -> None:
    layers = network_layers(for_inference(network, torch.device("cpu")))
    roomy = plan_tiling(layers, 4000, 3000, 8 << 30, torch.float32)
    tight = plan_tiling(layers, 8000, 6000, int(2.5 * 2**30), torch.float32)
    assert roomy.store_dtype == torch.float32 and roomy.map_bytes + roomy.work_bytes <= 8 << 30
    assert tight.map_bytes + tight.work_bytes <= int(2.5 * 2**30)
    assert tight.map_bytes < roomy.map_bytes * 4  # the 4x larger image keeps less per pixel


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch
    sys.path.insert(0, {repo!r})
    from stylefusion.run.stylizer import Stylizer
    from stylefusion.networks.transformer import TransformerNet
    torch.set_num_threads(1)
    side, budget = {side}, {budget}
    stylizer = Stylizer(TransformerNet(), "cpu", "fp32", max_memory=budget)
    stylizer(torch.rand(1, 3, 64, 64))  # load the kernels before measuring
    x = torch.rand(1, 3, side, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stylizer(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"grew": after - before}}))
""")


def peak_growth(side: int, budget: int) -> int:
    script = PEAK_SCRIPT.format(repo=str(REPO), side=side, budget=budget)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])["grew"]


def test_peak_memory_stays_within_the_budget_as_the_image_grows() -> None:
    # One whole pass at 1024^2 needs ~800 MB; with a 160 MB budget the tiled run must stay near it.
    budget = 160 << 20
    small, large = peak_growth(512, budget), peak_growth(1024, budget)
    assert large <= budget + (40 << 20), (small, large)
    assert large < 400 << 20


# ------------------------------------------------------------------------------------------ through the CLIs
@pytest.fixture(scope="module")
def cli_case(tmp_path_factory: pytest.TempPathFactory, network: TransformerNet) -> dict:
    from stylefusion.networks.model_files import save_model
    from tests.helpers import scene

    base = tmp_path_factory.mktemp("tiled-cli")
    save_model(network, base / "model.pth")
    scene((70, 53), 3).save(base / "photo.png")
    return {"base": base, "model": base / "model.pth", "photo": base / "photo.png"}


def run_image_mode(case: dict, out: str, *extra: str):
    from tests.helpers import run_script

    return run_script("fast_style_transfer.py", "--mode", "image", "--input_images_dir", case["photo"],
                      "--output_images_dir", case["base"] / out, "--model_path", case["model"],
                      "--precision", "fp32", *extra)


def test_image_mode_in_tiles_writes_the_untiled_result(cli_case: dict) -> None:
    from PIL import Image

    whole = run_image_mode(cli_case, "whole")
    tiled = run_image_mode(cli_case, "tiled", "--tile_size", "24")
    assert whole.returncode == 0 and tiled.returncode == 0, whole.stderr + tiled.stderr
    a = Image.open(cli_case["base"] / "whole" / "photo.png")
    b = Image.open(cli_case["base"] / "tiled" / "photo.png")
    assert a.size == b.size == (70, 53)
    import numpy as np
    diff = np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)
    assert np.abs(diff).max() <= 1  # PNG rounding of a float difference far below 1/255


def test_image_mode_budget_below_one_tile_is_one_line(cli_case: dict) -> None:
    from tests.helpers import assert_one_line_error

    result = run_image_mode(cli_case, "none", "--max_memory", "0.0001")
    assert_one_line_error(result, "does not fit in the memory budget", "--max_memory", status=("model settings: ",))
    assert not (cli_case["base"] / "none").exists()


def test_image_above_the_pixel_limit_names_the_option(cli_case: dict) -> None:
    from tests.helpers import assert_one_line_error

    # 70x53 = 3710 pixels, above a 0.001 MP limit: Pillow's decompression-bomb guard refuses it.
    assert_one_line_error(run_image_mode(cli_case, "bomb", "--max_pixels", "0.001"), "--max_pixels",
                          "too large to open safely (0.00371 MP)", status=("model settings: ",))


def test_video_frames_run_in_tiles(tmp_path) -> None:
    from stylefusion.run.video import VideoConfig, stylize_video
    from tests.test_video import make_clip, read_video

    torch.manual_seed(0)
    clip = make_clip(tmp_path / "clip.mp4", frames=6)
    from stylefusion.networks.model_files import save_model
    save_model(TransformerNet(), tmp_path / "m.pth")
    outs = {}
    for name, tile in (("whole", None), ("tiled", 20)):
        outs[name] = tmp_path / f"{name}.mp4"
        result = stylize_video(VideoConfig(clip, outs[name], tmp_path / "m.pth", device="cpu", precision="fp32",
                                           batch_size=2, tile_size=tile, measure_flicker=False))
        assert result.frames == 6
    whole, tiled = read_video(outs["whole"]), read_video(outs["tiled"])
    assert len(tiled["frames"]) == 6 and tiled["size"] == (64, 48)
    for a, b in zip(whole["frames"], tiled["frames"]):  # the same frames before lossy encoding: same video
        assert abs(a.astype(float) - b.astype(float)).max() <= 2


def test_maps_in_their_own_memory_mappings_give_the_same_result(network: TransformerNet, monkeypatch) -> None:
    import stylefusion.run.tiling

    monkeypatch.setattr(stylefusion.run.tiling, "MAPPED_MAP_BYTES", 0)  # every stored map mmap-backed, as at 48 MP
    x = torch.rand(1, 3, 52, 60, generator=torch.Generator().manual_seed(5))
    whole = Stylizer(network, "cpu", "fp32")(x)
    assert psnr(Stylizer(network, "cpu", "fp32", tile_size=24)(x), whole) >= 40.0
