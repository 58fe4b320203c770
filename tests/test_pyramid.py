"""The pyramid the iterative path optimises, and neural-style-pt's balance of the style layers."""

import pytest
import torch

from stylefusion.iterative.gatys import RAW_STYLE_LAYERS, IterativeConfig, stylize
from stylefusion.iterative.memory_plan import GB, plan_memory
from stylefusion.core.losses import RAW_STYLE_PER_CONTENT, parse_layer_weights, raw_layer_weights
from stylefusion.iterative.pyramid import MIN_LEVEL_SIDE, ImagePyramid, level_count

from helpers import scene_and_stripes

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


@pytest.mark.parametrize("size", [(48, 64), (37, 50), (9, 130)])
def test_a_new_pyramid_composes_to_its_image(size):
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    pyramid = ImagePyramid(image, 4)
    assert torch.allclose(pyramid.compose(), image, atol=1e-6)
    assert min(pyramid.levels[-1].shape[-2:]) >= min(MIN_LEVEL_SIDE, min(size))
    assert len(pyramid.levels) == level_count(*size, 4)


def test_level_count_stops_at_the_smallest_side():
    assert level_count(384, 512, 4) == 4
    assert level_count(384, 512, 1) == 1
    assert level_count(72, 96, 4) == 3    # 72 -> 36 -> 18, no further
    assert level_count(32, 512, 4) == 2
    assert level_count(9, 130, 4) == 1


def test_set_grad_is_the_adjoint_of_compose():
    gen = torch.Generator().manual_seed(1)
    pyramid = ImagePyramid(torch.rand(1, 3, 37, 50, generator=gen), 3)
    image_grad = torch.randn(1, 3, 37, 50, generator=gen)
    pyramid.set_grad(image_grad)
    # compose is affine in the levels: <compose(l + d) - compose(l), g> == <d, set_grad(g)> for any direction d.
    base = pyramid.compose().detach()
    directions = [torch.randn(level.shape, generator=gen) for level in pyramid.levels]
    with torch.no_grad():
        for level, d in zip(pyramid.levels, directions):
            level.add_(d)
    moved = (pyramid.compose().detach() - base).mul(image_grad).sum()
    through_levels = sum((level.grad * d).sum() for level, d in zip(pyramid.levels, directions))
    assert torch.allclose(moved, through_levels, rtol=1e-4)
    assert all(level.grad.is_contiguous() for level in pyramid.levels)


@pytest.fixture()
def images(tmp_path):
    return scene_and_stripes(tmp_path, (96, 72), (96, 96))


def config(output_dir, content, style, **kw):
    return IterativeConfig(**{**dict(content_image=content, style_images=[style], output_dir=output_dir, epochs=1,
                                     steps_per_epoch=15, image_size=96, output_format="png", device="cpu",
                                     precision="fp32"), **kw})


def test_the_pyramid_reaches_a_lower_loss_than_the_pixels_in_as_many_steps(tmp_path, images):
    pixels = stylize(config(tmp_path / "p", *images, pyramid_levels=1, steps_per_epoch=30))
    pyramid = stylize(config(tmp_path / "y", *images, pyramid_levels=4, steps_per_epoch=30))  # 3 at 96x72
    assert pyramid.final_loss < 0.8 * pixels.final_loss
    assert pyramid.image.min() >= 0 and pyramid.image.max() <= 1


def test_pyramid_levels_out_of_range_is_one_line_error(tmp_path, images):
    from stylefusion.core.errors import ConfigError
    with pytest.raises(ConfigError, match="pyramid_levels"):
        stylize(config(tmp_path / "z", *images, pyramid_levels=0))


def test_raw_balance_scales_each_layer_by_its_target_over_the_content():
    content = {"relu4_2": torch.full((1, 4, 2, 2), 2.0)}                # mean square 4
    grams = {"relu1_1": torch.full((1, 3, 3), 1.0), "relu4_1": torch.full((1, 3, 3), 10.0),
             "relu5_1": torch.full((1, 3, 3), 0.01)}                     # mean squares 1, 100, 1e-4
    weights = raw_layer_weights({"relu1_1": 1.0, "relu4_1": 2.0, "relu5_1": 1.0}, content, grams)
    assert weights["relu1_1"] == pytest.approx(RAW_STYLE_PER_CONTENT * 1 / 4, rel=1e-5)
    assert weights["relu4_1"] == pytest.approx(2 * RAW_STYLE_PER_CONTENT * 100 / 4, rel=1e-5)
    assert weights["relu5_1"] == pytest.approx(RAW_STYLE_PER_CONTENT * 1e-4 / 4, rel=1e-5)
    # A layer the user switched off stays off; without a content target the weights are kept as given.
    assert raw_layer_weights({"relu1_1": 0.0, "relu4_1": 1.0}, content, grams)["relu1_1"] == 0
    assert raw_layer_weights({"relu1_1": 0.5}, {}, grams) == {"relu1_1": 0.5}


def test_raw_balance_of_regions_follows_their_weight_and_area():
    content = {"relu4_2": torch.ones(1, 4, 2, 2)}
    grams = {"relu1_1": torch.stack([torch.full((3, 3), 1.0), torch.full((3, 3), 3.0)])}  # squares 1 and 9
    only_first = raw_layer_weights({"relu1_1": 1.0}, content, grams, regions=[(0, 0.5)])
    both = raw_layer_weights({"relu1_1": 1.0}, content, grams, regions=[(0, 0.25), (1, 0.75)])
    assert only_first["relu1_1"] == pytest.approx(RAW_STYLE_PER_CONTENT * 1)
    assert both["relu1_1"] == pytest.approx(RAW_STYLE_PER_CONTENT * (0.25 * 1 + 0.75 * 9))


def test_raw_balance_is_the_relative_loss_with_those_weights(tmp_path, images):
    """--style_balance raw runs exactly as relative with the weights raw_layer_weights gives for the targets."""
    from stylefusion.core.images import load_image, resize_to
    from stylefusion.core.losses import style_grams
    from stylefusion.core.vgg import load_vgg19
    content, style = images
    raw = stylize(config(tmp_path / "r", content, style, steps_per_epoch=5, init="content"))  # RAW_STYLE_LAYERS
    vgg = load_vgg19(LAYERS + ["relu4_2"])
    c = resize_to(load_image(content), (72, 96))[None]
    s = resize_to(load_image(style), (96, 96))[None]
    with torch.no_grad():
        targets = {"relu4_2": vgg(c, ["relu4_2"])["relu4_2"]}
    weights = raw_layer_weights(parse_layer_weights(RAW_STYLE_LAYERS, "style_layers"), targets,
                                style_grams(vgg, [s], None, LAYERS))
    spec = ",".join(f"{n}:{w!r}" for n, w in weights.items())
    relative = stylize(config(tmp_path / "e", content, style, steps_per_epoch=5, style_balance="relative",
                              style_layers=spec, init="content"))
    assert torch.allclose(raw.image, relative.image, atol=1e-5)
    assert raw.final_loss == pytest.approx(relative.final_loss, rel=1e-5)


def test_a_pyramid_plans_more_memory_for_the_same_history():
    plain = plan_memory(384, 512, LAYERS, ["relu4_2"], 512 * 512, 100, 8 * GB)
    pyramid = plan_memory(384, 512, LAYERS, ["relu4_2"], 512 * 512, 100, 8 * GB, pyramid=True)
    assert pyramid.tile is None and plain.tile is None
    # The history's vectors hold 4/3 of the pixels: 100 entries x 2 x 12 B x 196,608 px x 1/3 = 157 MB more.
    assert pyramid.estimate - plain.estimate > 100 * 2 * 12 * 384 * 512 / 3


def test_a_recolored_start_has_the_styles_colours_and_the_photos_layout():
    from stylefusion.iterative.gatys import _initial_image
    gen = torch.Generator().manual_seed(2)
    content = torch.linspace(0, 0.5, 50).expand(3, 40, 50).clone()      # a dark horizontal ramp
    styles = [torch.rand(3, 30, 30, generator=gen) * 0.2 + torch.tensor([0.7, 0.5, 0.2]).view(3, 1, 1),
              torch.rand(3, 20, 40, generator=gen) * 0.2 + torch.tensor([0.7, 0.5, 0.2]).view(3, 1, 1)]
    start = _initial_image(IterativeConfig(content_image="c", style_images=["a", "b"], output_dir="o",
                                           init="recolored"), content, styles, None, gen)
    assert start.shape == content.shape
    assert torch.allclose(start.mean(dim=(1, 2)), torch.tensor([0.8, 0.6, 0.3]), atol=0.02)
    assert bool((start[:, :, 1:] >= start[:, :, :-1] - 1e-6).all())   # still a left-to-right ramp


def _starts(monkeypatch, installed: bool):
    """start(config, styles) -> (init, pyramid_levels, steps_per_epoch) as resolve_start makes them, with Magenta's
    weights installed or not."""
    from stylefusion.core.vgg import load_vgg19
    from stylefusion.iterative.gatys import resolve_start
    from stylefusion.networks import magenta_weights
    monkeypatch.setattr(magenta_weights, "weights_installed", lambda: installed)
    vgg = load_vgg19(["relu1_1"])
    photo = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(3)) * 0.4 + 0.3   # mid-grey, noisy

    def start(cfg, styles):
        resolved = resolve_start(cfg, vgg, photo, styles)
        return resolved.init, resolved.pyramid_levels, resolved.steps_per_epoch
    return start


def test_auto_start_is_the_arbitrary_rendering_for_a_plain_run_with_its_own_step_budget(monkeypatch):
    from dataclasses import replace
    from stylefusion.iterative.gatys import (ARBITRARY_PYRAMID_LEVELS, ARBITRARY_STEPS, AUTO_PYRAMID_LEVELS,
                                             DEFAULT_STEPS)
    start = _starts(monkeypatch, installed=True)
    far = torch.rand(3, 30, 30) * 0.2 + torch.tensor([0.8, 0.4, 0.1]).view(3, 1, 1)   # orange
    base = IterativeConfig(content_image="c", style_images=["s"], output_dir="o")
    assert base.epochs == 10
    assert start(base, [far]) == ("arbitrary", ARBITRARY_PYRAMID_LEVELS, ARBITRARY_STEPS // 10)
    # The budget is split over the epochs the user asks for; steps_per_epoch given is exact, whatever the start.
    assert start(replace(base, epochs=20), [far])[2] * 20 == ARBITRARY_STEPS
    assert start(replace(base, epochs=3), [far])[2] * 3 >= ARBITRARY_STEPS
    assert start(replace(base, steps_per_epoch=7), [far])[2] == 7
    assert start(replace(base, init="recolored"), [far]) == ("recolored", AUTO_PYRAMID_LEVELS, DEFAULT_STEPS // 10)
    assert start(replace(base, init="content", steps_per_epoch=2), [far]) == ("content", 1, 2)
    # Not measured from the rendering, or not a rendering of the whole style: the rule of the earlier design.
    assert start(replace(base, optimizer="adam"), [far]) == ("recolored", 1, DEFAULT_STEPS // 10)
    assert start(replace(base, preserve_color="luminance"), [far])[0] == "content"
    assert start(replace(base, style_masks=["m"]), [far])[0] == "content"
    assert start(replace(base, style_weight=0), [far])[0] == "content"


def test_without_magentas_weights_auto_recolours_on_a_pyramid_only_where_the_colours_are_far(monkeypatch):
    from dataclasses import replace
    from stylefusion.iterative.gatys import AUTO_PYRAMID_LEVELS
    start = _starts(monkeypatch, installed=False)
    gen = torch.Generator().manual_seed(4)
    near = torch.rand(3, 30, 30, generator=gen) * 0.4 + 0.3                       # the photo's colours
    far = torch.rand(3, 30, 30, generator=gen) * 0.2 + torch.tensor([0.8, 0.4, 0.1]).view(3, 1, 1)   # orange
    base = IterativeConfig(content_image="c", style_images=["s"], output_dir="o")
    assert start(base, [far])[:2] == ("recolored", AUTO_PYRAMID_LEVELS)
    assert start(base, [near])[:2] == ("content", 1)
    red = torch.rand(3, 20, 40, generator=gen) * 0.2 + torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)
    assert start(base, [far, red])[:2] == ("recolored", AUTO_PYRAMID_LEVELS)       # the styles' pixels together
    # What the user chose stays; Adam has no pyramid; masks and colour preservation keep the photo's palette.
    assert start(replace(base, pyramid_levels=2), [far])[:2] == ("recolored", 2)
    assert start(replace(base, init="noise"), [far])[:2] == ("noise", 1)
    assert start(replace(base, init="recolored"), [near])[:2] == ("recolored", AUTO_PYRAMID_LEVELS)
    assert start(replace(base, optimizer="adam"), [far])[:2] == ("recolored", 1)
    assert start(replace(base, preserve_color="luminance"), [far])[:2] == ("content", 1)
    assert start(replace(base, style_masks=["m"]), [far])[:2] == ("content", 1)
    assert start(replace(base, style_weight=0), [far])[:2] == ("content", 1)


def test_the_measured_pairs_fall_on_either_side_of_the_auto_threshold():
    """tubingen x Starry Night starts from the photo on pixels; golden_gate x The Scream and hoovertowernight x
    Shipwreck recoloured on a pyramid (bench/RESULTS.md)."""
    from pathlib import Path
    from stylefusion.core.images import load_image
    from stylefusion.iterative.gatys import AUTO_PYRAMID_DISTANCE, first_layer_distance
    from stylefusion.core.vgg import load_vgg19
    root = Path(__file__).resolve().parents[2] / "shared" / "images"
    pairs = [("tubingen", "starry_night"), ("golden_gate", "the_scream"), ("hoovertowernight", "shipwreck")]
    paths = [(root / "content" / f"{c}.jpg", root / "style" / f"{s}.jpg") for c, s in pairs]
    if not all(p.is_file() for pair in paths for p in pair):
        pytest.skip("the shared photos and paintings are not here")
    base = IterativeConfig(content_image="c", style_images=["s"], output_dir="o")
    vgg = load_vgg19(["relu1_1"])
    near, *far = (first_layer_distance(vgg, load_image(c), [load_image(s)], base) for c, s in paths)
    assert near < AUTO_PYRAMID_DISTANCE < min(far)


def test_each_style_balance_has_its_own_default_style_layers():
    from dataclasses import replace
    from stylefusion.iterative.gatys import RELATIVE_STYLE_LAYERS, style_layer_spec
    base = IterativeConfig(content_image="c", style_images=["s"], output_dir="o")
    assert parse_layer_weights(style_layer_spec(base), "s") == {"relu1_1": 1, "relu2_1": 1, "relu3_1": 2,
                                                                "relu4_1": 1, "relu5_1": 10}
    assert style_layer_spec(replace(base, style_balance="relative")) == RELATIVE_STYLE_LAYERS
    assert style_layer_spec(replace(base, style_layers="relu2_1")) == "relu2_1"
    assert style_layer_spec(replace(base, style_balance="relative", style_layers="relu2_1:3")) == "relu2_1:3"
    # From Magenta's rendering (L-BFGS) the raw default counts the content 1.2x more, relu1_1 half, relu3_1 3x
    arbitrary = parse_layer_weights(style_layer_spec(replace(base, init="arbitrary")), "s")
    assert arbitrary == pytest.approx({"relu1_1": 0.5 / 1.2, "relu2_1": 1 / 1.2, "relu3_1": 3 / 1.2,
                                       "relu4_1": 1 / 1.2, "relu5_1": 10 / 1.2}, rel=1e-3)
    assert style_layer_spec(replace(base, init="arbitrary", optimizer="adam")) == style_layer_spec(base)
    assert style_layer_spec(replace(base, init="arbitrary", style_layers="relu2_1")) == "relu2_1"
