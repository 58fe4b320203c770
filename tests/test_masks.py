"""Spatial control (Gatys et al. 2017): one style per region through guided Gram matrices, at <= 64 px."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from stylefusion.core.errors import ConfigError, InputImageError
from stylefusion.core.images import load_image
from stylefusion.iterative.gatys import IterativeConfig, stylize
from stylefusion.core.losses import (GuidedPerceptualLoss, PerceptualLoss, gram_loss, gram_matrix, guided_gram_matrix,
                                     layer_guides)
from stylefusion.core.vgg import load_vgg19

from helpers import assert_one_line_error, run_script, scene

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]


def save(array, path):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def checker(size=64):
    """Style A: a fine red/green checkerboard (high frequency, warm)."""
    y, x = np.mgrid[0:size, 0:size]
    cells = ((x // 3 + y // 3) % 2)[..., None]
    return np.where(cells, [230, 40, 30], [40, 200, 40])


def bands(size=64):
    """Style B: broad soft blue/white horizontal bands (low frequency, cold)."""
    y = np.mgrid[0:size, 0:size][0]
    t = (0.5 + 0.5 * np.sin(y / 5.0))[..., None]
    return t * np.array([30, 60, 220]) + (1 - t) * np.array([235, 235, 250])


def halves(width=64, height=48):
    left = np.zeros((height, width), np.uint8)
    left[:, :width // 2] = 255
    return left, 255 - left


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    grey = np.full((48, 64, 3), 128) + np.random.default_rng(0).integers(-20, 21, (48, 64, 1))
    left, right = halves()
    scene((64, 48)).save(d / "scene.png")
    return {"grey": save(grey, d / "grey.png"), "scene": d / "scene.png",
            "a": save(checker(), d / "a.png"), "b": save(bands(), d / "b.png"),
            "left": save(left, d / "left.png"), "right": save(right, d / "right.png"),
            "white": save(np.full((96, 128), 255), d / "white.png"), "black": save(np.zeros((24, 32)), d / "black.png")}


def config(tmp_path, content, styles, masks, **kw):
    base = dict(content_image=content, style_images=styles, style_masks=masks, output_dir=tmp_path / "out",
                epochs=1, steps_per_epoch=5, image_size=64, output_format="png", device="cpu", precision="fp32")
    base.update(kw)
    return IterativeConfig(**base)


def test_guided_gram_is_the_gram_of_the_region():
    f = torch.randn(1, 8, 6, 10)
    assert torch.allclose(guided_gram_matrix(f, torch.ones(1, 1, 6, 10)), gram_matrix(f), atol=1e-6)
    guide = torch.zeros(1, 1, 6, 10)
    guide[..., :4] = 1  # normalised by the region's area: equals the Gram of the cropped features
    assert torch.allclose(guided_gram_matrix(f, guide), gram_matrix(f[..., :4]), atol=1e-6)
    assert torch.equal(guided_gram_matrix(f, torch.zeros(1, 1, 6, 10)), torch.zeros(1, 8, 8))
    assert layer_guides(torch.ones(2, 1, 48, 64), (12, 16)).shape == (2, 1, 12, 16)


def test_white_mask_loss_equals_the_unguided_loss_and_black_mask_has_none():
    vgg = load_vgg19(LAYERS)
    image, style = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 32)
    layers = dict.fromkeys(LAYERS, 1.0)
    plain = PerceptualLoss(vgg, {}, layers, style_weight=3.0)
    targets = {n: gram_matrix(f) for n, f in vgg(style, LAYERS).items()}
    white = GuidedPerceptualLoss(vgg, {}, layers, style_weight=3.0, masks=torch.ones(1, 1, 32, 48),
                                 region_weights=[1.0])
    assert torch.allclose(white(image, {}, targets).style, plain(image, {}, targets).style, rtol=1e-5)
    black = GuidedPerceptualLoss(vgg, {}, layers, style_weight=3.0, masks=torch.zeros(1, 1, 32, 48),
                                 region_weights=[1.0])
    assert float(black(image, {}, targets).style) == 0.0


@torch.no_grad()
def half_gram_errors(image, styles, vgg):
    """Summed relative Gram error of the output's left/right half features against each style's Gram."""
    feats = vgg(image.unsqueeze(0), LAYERS)
    targets = [vgg(s.unsqueeze(0), LAYERS) for s in styles]
    errors = {}
    for side in ("left", "right"):
        for k, t in enumerate(targets):
            total = 0.0
            for n in LAYERS:
                w = feats[n].shape[-1]
                f = feats[n][..., :w // 2] if side == "left" else feats[n][..., w - w // 2:]
                total += float(gram_loss(gram_matrix(f), gram_matrix(t[n])))
            errors[side, k] = total
    return errors


def test_two_styles_in_two_halves_each_half_matches_its_own_style(tmp_path, files):
    result = stylize(config(tmp_path, files["grey"], [files["a"], files["b"]], [files["left"], files["right"]],
                            steps_per_epoch=40, style_weight=10.0))
    vgg = load_vgg19(LAYERS)
    errors = half_gram_errors(result.image, [load_image(files["a"]), load_image(files["b"])], vgg)
    assert errors["left", 0] < 0.8 * errors["left", 1], errors
    assert errors["right", 1] < 0.8 * errors["right", 0], errors
    # swapping the masks swaps the halves' styles: the regions, not the style order, decide
    swapped = stylize(config(tmp_path / "s", files["grey"], [files["a"], files["b"]], [files["right"], files["left"]],
                             steps_per_epoch=40, style_weight=10.0))
    errors = half_gram_errors(swapped.image, [load_image(files["a"]), load_image(files["b"])], vgg)
    assert errors["left", 1] < errors["left", 0] and errors["right", 0] < errors["right", 1], errors


def test_black_mask_keeps_the_content_and_has_no_style_loss(tmp_path, files):
    result = stylize(config(tmp_path, files["scene"], [files["a"]], [files["black"]], steps_per_epoch=5))
    content = load_image(files["scene"])
    assert (result.image - content).abs().max() <= 1e-5
    assert (load_image(result.final_path) - content).abs().max() <= 1 / 255 + 1e-6
    with open(result.loss_log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(float(r["style"]) == 0.0 for r in rows)


def test_white_mask_runs_like_no_mask(tmp_path, files):
    # The same start for both: without masks, init auto would recolour the photo to this style's palette.
    masked = stylize(config(tmp_path / "m", files["scene"], [files["a"]], [files["white"]], steps_per_epoch=3,
                            init="content"))
    plain = stylize(config(tmp_path / "p", files["scene"], [files["a"]], None, steps_per_epoch=3, init="content"))
    assert torch.allclose(masked.image, plain.image, atol=1e-4)
    assert masked.final_loss == pytest.approx(plain.final_loss, rel=1e-4)


def test_zero_blend_weight_drops_that_region(tmp_path, files):
    two = stylize(config(tmp_path / "t", files["scene"], [files["a"], files["b"]], [files["left"], files["right"]],
                         style_blend_weights=[1.0, 0.0], steps_per_epoch=3))
    one = stylize(config(tmp_path / "o", files["scene"], [files["a"]], [files["left"]], steps_per_epoch=3))
    assert torch.allclose(two.image, one.image, atol=1e-5)


def test_masks_with_scale_steps_and_preserve_color(tmp_path, files):
    progress = []
    result = stylize(config(tmp_path, files["scene"], [files["a"], files["b"]], [files["left"], files["right"]],
                            scale_steps=[2, 2], preserve_color="luminance"), progress.append)
    assert [p.size for p in progress if p.saved is not None] == [(32, 43), (48, 64)]  # 32 px: the network's minimum
    assert [p.name for p in result.epoch_paths] == ["epoch_001.png", "epoch_002.png"]
    assert load_image(result.final_path).shape == (3, 48, 64)


def test_bad_masks_fail_before_any_output(tmp_path, files):
    styles = [files["a"], files["b"]]
    with pytest.raises(ConfigError, match="one mask per style"):
        stylize(config(tmp_path, files["scene"], styles, [files["left"]]))
    tall = save(np.zeros((64, 64)), tmp_path / "square.png")
    with pytest.raises(ConfigError, match="aspect ratio"):
        stylize(config(tmp_path, files["scene"], styles, [files["left"], tall]))
    with pytest.raises(InputImageError, match="not found"):
        stylize(config(tmp_path, files["scene"], styles, [files["left"], tmp_path / "nope.png"]))
    assert not (tmp_path / "out").exists()


def test_tiled_masked_run_matches_the_whole_image_run(tmp_path, files):
    # Exact guided Grams on tiles: soft, overlapping masks give the same steps as one whole-image pass.
    x = np.linspace(0, 1, 64)[None, :].repeat(48, 0)
    soft = [save(255 * np.clip(1.5 - 2 * x, 0, 1), tmp_path / "l.png"), save(255 * np.clip(2 * x - 0.3, 0, 1),
                                                                            tmp_path / "r.png")]
    styles = [files["a"], files["b"]]
    whole = stylize(config(tmp_path / "w", files["scene"], styles, soft, steps_per_epoch=3))
    progress = []
    tiled = stylize(config(tmp_path / "t", files["scene"], styles, soft, steps_per_epoch=3, tile_size=16),
                    progress.append)
    assert any(p.tile is not None for p in progress)
    assert torch.allclose(whole.image, tiled.image, atol=1e-4)  # measured: 1.2e-7 apart (masks move it by 0.07)
    assert abs(whole.final_loss - tiled.final_loss) <= 1e-5 * whole.final_loss


def test_memory_plan_counts_the_regions():
    from stylefusion.iterative.memory_plan import GB, plan_memory
    plain = plan_memory(384, 512, LAYERS, ["relu4_2"], 512 * 512, 100, 8 * GB)
    masked = plan_memory(384, 512, LAYERS, ["relu4_2"], 512 * 512, 100, 8 * GB, regions=2)
    assert masked.tile is None and masked.estimate - plain.estimate == pytest.approx(2 * 650 * 384 * 512)
    budget = plain.estimate + 0.5 * (masked.estimate - plain.estimate)  # fits without masks, not with them
    assert plan_memory(384, 512, LAYERS, ["relu4_2"], 512 * 512, 100, budget).tile is None
    assert plan_memory(384, 512, LAYERS, ["relu4_2"], 512 * 512, 100, budget, regions=2).tile is not None


@pytest.mark.parametrize("height", [193, 195])  # 256x193 / 256x195 for a 64x48 content: 0.5 % / 1.5 % off
def test_mask_within_two_percent_of_the_ratio_is_stretched(tmp_path, files, height):
    """The same 2 % as the fast path's masks (the iterative path refused 1.5 %)."""
    near = save(np.full((height, 256), 255), tmp_path / "near.png")
    result = stylize(config(tmp_path, files["scene"], [files["a"]], [near], steps_per_epoch=1))
    assert result.final_path.exists()


CLI_BAD = {
    "count": (["left"], "one mask per style"),
    "ratio": (["left", "square"], "aspect ratio"),
    "unreadable": (["left", "text"], "not an image"),
}


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_cli_bad_masks_one_line_error_and_no_output(tmp_path, files, case):
    save(np.zeros((64, 64)), tmp_path / "square.png")
    (tmp_path / "text.png").write_text("not a mask\n")
    names, needle = CLI_BAD[case]
    paths = [files[n] if n in files else tmp_path / f"{n}.png" for n in names]
    out = tmp_path / "out"
    r = run_script("stylefusion.py", "--content_image", files["scene"], "--style_image", files["a"], files["b"],
                   "--style_masks", *paths, "--output_dir", out, "--image_size", "48", "--epochs", "1",
                   "--steps_per_epoch", "1", "--quiet", "--device", "cpu", timeout=120)
    assert_one_line_error(r, needle)
    assert not out.exists()


def test_cli_masks_run_and_help(tmp_path, files):
    out = tmp_path / "out"
    r = run_script("stylefusion.py", "--content_image", files["scene"], "--style_image", files["a"], files["b"],
                   "--style_masks", files["left"], files["right"], "--style_blend_weights", "1", "0.5",
                   "--output_dir", out, "--image_size", "48", "--epochs", "1", "--steps_per_epoch", "2", "--quiet",
                   "--device", "cpu", "--output_format", "png")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["epoch_001.png", "final.png", "loss_log.csv"]
    assert "--style_masks" in run_script("stylefusion.py", "--help").stdout


def test_a_mask_painted_in_colour_is_named_and_a_grey_or_transparent_one_is_not(tmp_path):
    from stylefusion.core.masks import mask_flags

    red = Image.new("RGB", (40, 30))
    red.paste((255, 0, 0), (0, 0, 20, 30))
    grey = Image.new("L", (40, 30), 128)
    # White where the style goes, transparent elsewhere: the transparent pixels' own colour is never seen.
    cut_out = Image.new("RGBA", (40, 30), (0, 255, 0, 0))
    cut_out.paste((255, 255, 255, 255), (0, 0, 20, 30))
    for name, image in (("red.png", red), ("grey.png", grey), ("cut_out.png", cut_out)):
        image.save(tmp_path / name)
    assert [mask_flags(tmp_path / n) for n in ("red.png", "grey.png", "cut_out.png")] == [(False, True),
                                                                                         (False, False),
                                                                                         (False, False)]
