"""Iterative style transfer with the real bundled VGG-19 at <= 64 px."""

import csv
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from stylefusion.core.color import rgb_to_yuv
from stylefusion.core.errors import ConfigError, MemoryBudgetError, OutputError
from stylefusion.core.images import load_image, resize_to, scaled_size
from stylefusion.iterative import gatys
from stylefusion.iterative.gatys import IterativeConfig, LossScale, epoch_scales, scale_schedule, stylize

from helpers import scene, stripes


@pytest.fixture()
def images(tmp_path):
    content, style, style2 = tmp_path / "content.png", tmp_path / "style.png", tmp_path / "style2.png"
    scene((64, 48)).save(content)
    stripes((64, 64)).save(style)
    stripes((48, 64), seed=7).save(style2)
    return content, style, style2


def config(tmp_path, content, style, **kw):
    base = dict(content_image=content, style_images=[style], output_dir=tmp_path / "out", epochs=1,
                steps_per_epoch=10, image_size=64, multiscale=False, output_format="png", device="cpu")
    base.update(kw)
    return IterativeConfig(**base)


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_style_loss_falls_by_90_percent_within_100_steps(tmp_path, images):
    content, style, _ = images
    progress = []
    result = stylize(config(tmp_path, content, style, epochs=2, steps_per_epoch=50), progress.append)
    rows = read_log(result.loss_log)
    assert len(rows) == 100
    first, last = float(rows[0]["style"]), float(rows[-1]["style"])
    assert last <= 0.1 * first, (first, last)
    # an image per epoch plus the final one, at the requested size
    assert [p.name for p in result.epoch_paths] == ["epoch_001.png", "epoch_002.png"]
    assert result.final_path.exists() and load_image(result.final_path).shape == (3, 48, 64)
    assert [p.step for p in progress if p.saved is None] == list(range(1, 101))
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_adam_also_lowers_the_loss(tmp_path, images):
    content, style, _ = images
    rows = read_log(stylize(config(tmp_path, content, style, optimizer="adam", steps_per_epoch=30)).loss_log)
    assert float(rows[-1]["total"]) < 0.5 * float(rows[0]["total"])


def test_content_init_with_zero_style_weight_keeps_content(tmp_path, images):
    content, style, _ = images
    for init in ("content", "auto"):  # auto: with no style loss there is no palette to start from
        result = stylize(config(tmp_path / init, content, style, style_weight=0.0, steps_per_epoch=5, init=init))
        expected = resize_to(load_image(content), (48, 64))
        assert (result.image - expected).abs().max() <= 1.5 / 255


def test_style_changes_the_image_towards_the_style(tmp_path, images):
    content, style, _ = images
    result = stylize(config(tmp_path, content, style, steps_per_epoch=20))
    expected = resize_to(load_image(content), (48, 64))
    assert (result.image - expected).abs().mean() > 0.02


def test_preserve_color_luminance_keeps_content_chroma(tmp_path, images):
    content, style, _ = images
    c = rgb_to_yuv(resize_to(load_image(content), (48, 64)))[1:]
    plain = rgb_to_yuv(stylize(config(tmp_path, content, style, steps_per_epoch=15)).image)[1:]
    kept = rgb_to_yuv(stylize(config(tmp_path, content, style, steps_per_epoch=15,
                                     preserve_color="luminance")).image)[1:]
    for ch in range(2):
        assert abs(kept[ch].mean() - c[ch].mean()) < 0.01
        assert abs(kept[ch].std() - c[ch].std()) < 0.01
    # without preservation the chroma moves much further (so this test can fail)
    assert (plain - c).abs().mean() > 5 * (kept - c).abs().mean()


def test_preserve_color_histogram_runs_and_differs(tmp_path, images):
    content, style, _ = images
    a = stylize(config(tmp_path, content, style, steps_per_epoch=5, preserve_color="histogram")).image
    b = stylize(config(tmp_path, content, style, steps_per_epoch=5)).image
    assert not torch.allclose(a, b)


def test_blend_weights_one_zero_equal_single_style(tmp_path, images):
    content, style, style2 = images
    single = stylize(config(tmp_path, content, style, init="noise", seed=3))
    blended = stylize(config(tmp_path, content, style, init="noise", seed=3, style_images=[style, style2],
                             style_blend_weights=[1.0, 0.0]))
    assert torch.equal(single.image, blended.image)
    mixed = stylize(config(tmp_path, content, style, init="noise", seed=3, style_images=[style, style2],
                           style_blend_weights=[1.0, 1.0]))
    assert not torch.equal(single.image, mixed.image)


def test_same_seed_same_output_on_cpu(tmp_path, images):
    content, style, _ = images
    a = stylize(config(tmp_path, content, style, init="noise", seed=5, steps_per_epoch=5)).image
    b = stylize(config(tmp_path, content, style, init="noise", seed=5, steps_per_epoch=5)).image
    c = stylize(config(tmp_path, content, style, init="noise", seed=6, steps_per_epoch=5)).image
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_lbfgs_history_is_used(tmp_path, images):
    # With a history of 1, L-BFGS forgets curvature after each step, so 8 steps end elsewhere than with 100.
    content, style, _ = images
    short = stylize(config(tmp_path / "a", content, style, lbfgs_history=1, steps_per_epoch=8))
    long = stylize(config(tmp_path / "b", content, style, lbfgs_history=100, steps_per_epoch=8))
    assert not torch.allclose(short.image, long.image, atol=1e-3)
    with pytest.raises(ConfigError, match="lbfgs_history"):
        stylize(config(tmp_path / "c", content, style, lbfgs_history=0))


def test_init_from_style_and_from_path(tmp_path, images):
    content, style, style2 = images
    # one tiny Adam step: the result is the start image
    a = stylize(config(tmp_path, content, style, init="style", optimizer="adam", lr=1e-6, steps_per_epoch=1)).image
    assert (a - resize_to(load_image(style), (48, 64))).abs().max() <= 1.5 / 255
    start = tmp_path / "start.png"  # the photo's shape at twice its size (an earlier result, say)
    stripes((128, 96), seed=7).save(start)
    b = stylize(config(tmp_path, content, style, init=str(start), optimizer="adam", lr=1e-6,
                       steps_per_epoch=1)).image
    assert (b - resize_to(load_image(start), (48, 64))).abs().max() <= 1.5 / 255
    with pytest.raises(ConfigError, match="not the shape"):  # a portrait start for a landscape photo
        stylize(config(tmp_path, content, style, init=str(style2), optimizer="adam", steps_per_epoch=1))


def test_multiscale_runs_coarse_then_fine(tmp_path, images):
    content, style, _ = images
    progress = []
    stylize(config(tmp_path, content, style, image_size=128, multiscale=True, num_scales=2, epochs=2,
                   steps_per_epoch=3),
            progress.append)
    sizes = [p.size for p in progress if p.saved is not None]
    assert sizes == [(48, 64), (96, 128)]


def test_schedules():
    assert scale_schedule(512, True, None) == [128, 256, 512]
    assert scale_schedule(512, False, None) == [512]
    assert scale_schedule(600, True, 2) == [300, 600]
    assert epoch_scales(4, [128, 256, 512]) == [128, 256, 512, 512]
    assert epoch_scales(1, [128, 256, 512]) == [512]
    plan = epoch_scales(20, [128, 256, 512])
    assert plan.count(512) == 10 and plan == sorted(plan)


def test_tiny_image_is_upscaled_for_the_network(tmp_path):
    from PIL import Image
    tiny, style = tmp_path / "tiny.png", tmp_path / "s.png"
    scene((16, 16)).save(tiny)  # the smallest side read (MIN_IMAGE_SIDE); the network needs 32
    stripes((16, 16)).save(style)
    result = stylize(config(tmp_path, tiny, style, image_size=32, steps_per_epoch=2))
    assert Image.open(result.final_path).size == (32, 32)
    assert scaled_size(8, 200, 64)[0] >= 1


def test_loss_scale_rescues_fp16_gradients_that_underflow():
    # dL/dy = 2e-10 is below fp16's smallest subnormal (6e-8): unscaled, the image gradient is exactly zero.
    def loss(x):
        y = x.half() * 1e-4
        return (y * y).float().sum() * 1e-6

    x = torch.ones(4, requires_grad=True)
    assert LossScale(enabled=True, scale=1.0).backward(loss(x), x) and torch.equal(x.grad, torch.zeros(4))
    x.grad = None
    scaler = LossScale(enabled=True)
    assert scaler.backward(loss(x), x)
    assert torch.allclose(x.grad, torch.full((4,), 2e-14), rtol=1e-2)
    x.grad = None
    overflowing = LossScale(enabled=True, scale=1e38)
    assert not overflowing.backward(loss(x) * 1e6, x) and overflowing.scale == 5e37 and x.grad is None
    # A NaN loss is not retried 128 times: it goes back to the caller, whose NaN check reports it.
    assert scaler.backward((x * float("nan")).sum(), x) and scaler.scale == 2.0 ** 24


def test_tiled_run_lowers_the_loss_and_reports_tiles(tmp_path, images):
    content, style, _ = images
    progress = []
    result = stylize(config(tmp_path, content, style, tile_size=32, steps_per_epoch=8), progress.append)
    rows = read_log(result.loss_log)
    assert float(rows[-1]["total"]) < 0.7 * float(rows[0]["total"])
    tiles = [p.tile for p in progress if p.tile is not None]
    assert tiles and tiles[-1][0] == tiles[-1][1] == 2 * 4 - 1  # 64x48: 2x2 cores, 2 passes, last tile kept
    assert [p.step for p in progress if p.saved is None and p.tile is None] == list(range(1, 9))


@pytest.mark.parametrize("start", [dict(init="content", pyramid_levels=1), dict(init="recolored", pyramid_levels=3)])
def test_tiled_run_matches_the_whole_image_run(tmp_path, images, start):
    # Exact gradients: a few L-BFGS steps on tiles land where the whole-image steps land, on pixels or a pyramid.
    content, style, _ = images
    whole = stylize(config(tmp_path / "a", content, style, steps_per_epoch=3, precision="fp32", **start))
    tiled = stylize(config(tmp_path / "b", content, style, steps_per_epoch=3, precision="fp32", tile_size=16,
                           **start))
    assert torch.allclose(whole.image, tiled.image, atol=2e-3)
    assert abs(whole.final_loss - tiled.final_loss) <= 1e-3 * whole.final_loss


def test_scale_steps_runs_each_scale_with_its_steps(tmp_path, images):
    content, style, _ = images
    progress = []
    result = stylize(config(tmp_path, content, style, image_size=128, scale_steps=[4, 2]), progress.append)
    assert [p.size for p in progress if p.saved is not None] == [(48, 64), (96, 128)]
    rows = read_log(result.loss_log)
    assert [int(r["height"]) for r in rows] == [48] * 4 + [96] * 2
    with pytest.raises(ConfigError, match="scale_steps"):
        stylize(config(tmp_path, content, style, image_size=64, scale_steps=[1, 1, 1]))


def test_too_large_fails_before_any_output(tmp_path, images):
    from stylefusion.core.errors import MemoryBudgetError
    content, style, _ = images
    with pytest.raises(MemoryBudgetError, match="max_memory"):
        stylize(config(tmp_path, content, style, image_size=100000))
    assert not (tmp_path / "out").exists()


def test_memory_plan_tiles_and_shortens_history_to_fit():
    from stylefusion.iterative.memory_plan import GB, plan_memory
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
    small = plan_memory(384, 512, layers, ["relu4_2"], 512 * 512, 100, 8 * GB)
    assert small.tile is None and small.history == 100
    big = plan_memory(3072, 4096, layers, ["relu4_2"], 4096 * 4096, 30, 12 * GB)
    assert big.tile is not None and 1 <= big.history < 30 and big.estimate <= 12 * GB
    forced = plan_memory(384, 512, layers, ["relu4_2"], 512 * 512, 100, 8 * GB, tile=64)
    assert forced.tile == 64


def test_a_style_far_larger_than_the_content_is_planned_in_tiles():
    from stylefusion.iterative.memory_plan import GB, plan_memory
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
    # --style_scale 40 at --image_size 96: the style's forward pass (~2.6 GB) would not fit a 2 GB budget.
    plan = plan_memory(72, 96, layers, ["relu4_2"], 3840 * 2880, 2, 2 * GB)
    assert plan.tile is not None and plan.estimate <= 2 * GB
    with pytest.raises(MemoryBudgetError, match="--style_scale"):
        plan_memory(72, 96, layers, ["relu4_2"], 3840 * 2880, 2, 1.2 * GB)


def test_a_large_style_scale_runs_within_max_memory(tmp_path, images):
    """--style_scale 30 on a 64 px run: a 1920 px style whose untiled Gram pass peaked ~3.6 GB; within 2 GiB now."""
    content, style, _ = images
    code = (f"import resource; from stylefusion.iterative.gatys import IterativeConfig, stylize; "
            f"stylize(IterativeConfig(content_image={str(content)!r}, style_images=[{str(style)!r}], "
            f"output_dir={str(tmp_path / 'out')!r}, epochs=1, steps_per_epoch=2, image_size=64, style_scale=30, "
            f"max_memory=2, device='cpu')); "
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) <= 2 * 2 ** 30
    assert (tmp_path / "out" / "final.jpg").is_file()


def test_loss_log_keeps_its_name_columns_and_formats(tmp_path, images):
    content, style, _ = images
    result = stylize(config(tmp_path, content, style, steps_per_epoch=2))
    assert result.loss_log == tmp_path / "out" / "loss_log.csv"
    with open(result.loss_log, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "epoch", "height", "width", "content", "style", "tv", "total", "seconds"]
    assert [r[:4] for r in rows[1:]] == [["1", "1", "48", "64"], ["2", "1", "48", "64"]]
    assert all(len(r[8].split(".")[1]) == 3 for r in rows[1:])  # seconds with 3 decimals, as before
    assert float(rows[2][7]) == pytest.approx(float(rows[2][4]) + float(rows[2][5]) + float(rows[2][6]), rel=1e-4)


@pytest.mark.parametrize("kw, message", [
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(lr=-1.0), "lr must be a finite number >= 0"),
    (dict(lr=float("nan")), "lr must be a finite number"),
    (dict(lr=1e39), "lr must be at most 1e"),  # a traceback from torch.optim before
    (dict(style_blend_weights=[1.0, 2.0]), "1 style images but 2 blend weights"),
    (dict(style_blend_weights=[0.0]), "must not all be zero"),
    (dict(style_blend_weights=[float("inf")]), "style blend weight must be a finite number"),
])
def test_lr_and_blend_weights_use_the_shared_checks(tmp_path, images, kw, message):
    content, style, _ = images
    with pytest.raises(ConfigError, match=message):
        stylize(config(tmp_path, content, style, **kw))
    assert not (tmp_path / "out").exists()


def test_a_run_never_ends_on_an_image_worse_than_one_it_evaluated(tmp_path, images):
    """A far too long L-BFGS step (lr 1e4) blows the image up; the run ends on the best image it evaluated (here
    the start, step 1's), and the last epoch image is that image too. Without the guard its loss is ~1000x."""
    content, style, _ = images
    result = stylize(config(tmp_path, content, style, init="content", pyramid_levels=1, lr=1e4, steps_per_epoch=2))
    rows = read_log(result.loss_log)
    assert float(rows[1]["total"]) > 10 * float(rows[0]["total"])  # the overshoot the guard is for
    assert result.final_loss == pytest.approx(float(rows[0]["total"]), rel=1e-4)
    start = resize_to(load_image(content), (48, 64))
    final = load_image(result.final_path)
    assert (final - start).abs().mean() < 2 / 255  # the start (png rounding)
    assert torch.equal(load_image(result.epoch_paths[-1]), final)


def test_a_coarse_scale_hands_on_its_best_image_clamped(tmp_path, images, monkeypatch):
    """--scale_steps 2,2: a diverged last step at the coarse scale (values -3.7 .. 5.6 on tubingen x Starry Night)
    was upsampled into the next one, which started 480x above the coarse loss. It starts from the best image the
    coarse steps evaluated, clamped to [0, 1], now."""
    content, style, _ = images
    seen = []
    original = gatys._enter_scale

    def spy(s, image, *args):
        if image is not None:
            seen.append((image.min().item(), image.max().item()))
        return original(s, image, *args)

    monkeypatch.setattr(gatys, "_enter_scale", spy)
    result = stylize(config(tmp_path, content, style, init="content", pyramid_levels=1, lr=1e4, scale_steps=[2, 2]))
    rows = read_log(result.loss_log)
    assert float(rows[1]["total"]) > 10 * float(rows[0]["total"])  # the coarse scale's overshoot
    assert float(rows[2]["total"]) < 3 * float(rows[0]["total"])  # the fine scale starts from the good image
    assert len(seen) == 1 and 0 <= seen[0][0] and seen[0][1] <= 1


def test_a_good_last_step_is_kept_and_its_loss_reported(tmp_path, images):
    content, style, _ = images
    result = stylize(config(tmp_path, content, style, steps_per_epoch=15))
    rows = read_log(result.loss_log)
    # The final image is the one after the last step: its loss is below the last logged one (the image before it).
    assert result.final_loss < float(rows[-1]["total"])


def test_multiscale_that_runs_at_one_size_says_why(tmp_path, images):
    from stylefusion.iterative.gatys import multiscale_unused

    content, style, _ = images
    assert "1 epoch" in multiscale_unused(config(tmp_path, content, style, multiscale=True, image_size=512))
    assert "no coarser scale" in multiscale_unused(config(tmp_path, content, style, multiscale=True, epochs=4))
    assert multiscale_unused(config(tmp_path, content, style, multiscale=True, epochs=4, image_size=256)) is None
    assert multiscale_unused(config(tmp_path, content, style, multiscale=True, epochs=4, num_scales=2)) is None
    assert multiscale_unused(config(tmp_path, content, style)) is None  # not asked for


def test_style_scale_enlarging_a_style_far_past_its_own_size_is_named(tmp_path):
    """--style_scale 100 on a 96 px painting worked minutes on a 6400 px one without a word: the CLI warns first."""
    from PIL import Image

    from stylefusion.iterative.gatys import IterativeConfig, style_upscale

    content, style = tmp_path / "c.png", tmp_path / "s.png"
    Image.new("RGB", (80, 60)).save(content)
    Image.new("RGB", (96, 96)).save(style)
    config = IterativeConfig(content_image=content, style_images=[style], output_dir=tmp_path / "o", image_size=64)
    line = style_upscale(replace(config, style_scale=100))
    assert line is not None and "enlarges s.png (96x96) to 6400 px" in line and "67x its own size" in line
    assert style_upscale(replace(config, style_scale=2)) is None  # 128 px: under 4x its own size
    assert style_upscale(replace(config, image_size=1024)) is None  # scale 1: the painting must meet the result


def test_library_config_of_the_wrong_type_is_a_one_line_error(tmp_path):
    """A single path for style_images was read as a list of its characters ("/ is a directory"): it is one style
    image now, as in the fast modes' configs; a string image_size raised a bare TypeError: a ConfigError."""
    from stylefusion.core.errors import ConfigError
    from stylefusion.iterative.gatys import IterativeConfig, stylize

    assert IterativeConfig(content_image="c.png", style_images="s.png", output_dir=tmp_path / "o").style_images == (
        "s.png",)
    with pytest.raises(ConfigError, match="image_size must be an integer, got '64'"):
        stylize(IterativeConfig(content_image="c.png", style_images=["s.png"], output_dir=tmp_path / "o",
                                image_size="64"))
    assert not (tmp_path / "o").exists()


def test_an_init_image_from_an_earlier_run_is_never_overwritten(tmp_path, images):
    """--init out/epoch_002.png with --scale_steps making 3 epochs: refused before any work (it was replaced)."""
    content, style, _ = images
    stylize(config(tmp_path, content, style, epochs=2, steps_per_epoch=1, image_size=128))
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputError, match="refusing to overwrite an input file: .*epoch_002.png"):
        stylize(config(tmp_path, content, style, init=out / "epoch_002.png", scale_steps=(1, 1, 1), image_size=128))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not even epoch_001 was written


def test_a_style_image_named_like_a_later_epoch_is_refused_before_any_work(tmp_path, images):
    content, style, _ = images
    out = tmp_path / "out"
    out.mkdir()
    (out / "epoch_002.png").write_bytes(style.read_bytes())
    with pytest.raises(OutputError, match="refusing to overwrite an input file"):
        stylize(config(tmp_path, content, out / "epoch_002.png", scale_steps=(1, 1)))
    assert sorted(p.name for p in out.iterdir()) == ["epoch_002.png"]


def test_a_run_stopped_before_its_first_image_leaves_the_earlier_log_as_it_was(tmp_path, images):
    content, style, _ = images
    stylize(config(tmp_path, content, style, steps_per_epoch=2))
    log = tmp_path / "out" / "loss_log.csv"
    before = log.read_bytes()
    assert b"\r" not in before and len(before.splitlines()) == 3  # header + 2 steps, Unix line ends

    def stop(progress):
        if progress.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stylize(config(tmp_path, content, style, steps_per_epoch=5), stop)
    assert log.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["epoch_001.png", "final.png", "loss_log.csv"]


def test_after_step_reports_each_step_once_with_its_losses(tmp_path, images):
    """README's callback prints the reports with after_step: in a tiled run, tiles and epoch images report too."""
    content, style, _ = images
    reports = []
    stylize(config(tmp_path, content, style, epochs=2, steps_per_epoch=2, tile_size=32), reports.append)
    assert any(p.tile is not None for p in reports) and any(p.saved is not None for p in reports)
    steps = [p for p in reports if p.after_step]
    assert [p.step for p in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(p.total_loss) for p in steps)


def test_a_folder_named_like_the_final_image_is_refused_before_any_work(tmp_path, images):
    content, style, _ = images
    (tmp_path / "out" / "final.png").mkdir(parents=True)
    with pytest.raises(OutputError, match="final.png is a folder, where the run writes its final image"):
        stylize(config(tmp_path, content, style, steps_per_epoch=1))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["final.png"]


def test_a_style_image_given_as_a_number_is_a_config_error(tmp_path, images):
    content, style, _ = images
    with pytest.raises(ConfigError, match="style_images must be paths, got 5"):
        stylize(config(tmp_path, content, style, style_images=5))  # a bare number: not a list of paths
