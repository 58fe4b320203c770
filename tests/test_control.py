"""Creative control of the fast path (issue #13): --strength, --mask (one model per mask) and, below, several
styles in one network (conditional instance normalisation) picked with --style or blended with --style_weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from stylefusion.run.control import Control, ControlledStylizer, fit_mask
from stylefusion.core.errors import ConfigError
from stylefusion.run.stylizer import Stylizer
from tests.helpers import REPO, assert_one_line_error, scene
from tests.test_transformer import trained_like_network

SCRIPT = str(REPO / "fast_style_transfer.py")


def fast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, "--device", "cpu", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def half_mask(width: int, height: int, left: bool = True) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return mask if left else 255 - mask


# ------------------------------------------------------------------------------------------ strength, masks
@pytest.fixture(scope="module")
def stylizers() -> list[Stylizer]:
    return [Stylizer(trained_like_network(0)), Stylizer(trained_like_network(1))]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.from_numpy(np.array(scene((64, 48)))).permute(2, 0, 1).float().div(255.0)[None]


def test_strength_zero_returns_the_input(stylizers: list[Stylizer], batch: torch.Tensor) -> None:
    out = ControlledStylizer(stylizers[:1], Control(strength=0.0))(batch)
    assert torch.equal(out, batch)


def test_strength_blends_the_output_with_the_input(stylizers: list[Stylizer], batch: torch.Tensor) -> None:
    full = stylizers[0](batch)
    assert (full - batch).abs().mean() > 0.05  # the model does change the image
    half = ControlledStylizer(stylizers[:1], Control(strength=0.5))(batch)
    torch.testing.assert_close(half, batch + 0.5 * (full - batch), atol=1e-6, rtol=0)


def test_mask_keeps_the_unmasked_region_exactly(tmp_path: Path, stylizers: list[Stylizer],
                                                batch: torch.Tensor) -> None:
    Image.fromarray(half_mask(32, 24)).save(tmp_path / "left.png")  # half the size: resized to the image
    out = ControlledStylizer(stylizers[:1], Control(masks=(tmp_path / "left.png",), feather=6))(batch)
    assert torch.equal(out[..., 32:], batch[..., 32:])
    full = stylizers[0](batch)
    torch.testing.assert_close(out[..., :20], full[..., :20], atol=1e-6, rtol=0)  # inside, past the feather
    edge = (out[..., 26:32] - batch[..., 26:32]).abs().mean() / (full[..., 26:32] - batch[..., 26:32]).abs().mean()
    assert 0.05 < edge < 0.95  # the feathered edge is a ramp, inside the region


def test_one_model_per_mask(tmp_path: Path, stylizers: list[Stylizer], batch: torch.Tensor) -> None:
    Image.fromarray(half_mask(64, 48, True)).save(tmp_path / "l.png")
    Image.fromarray(half_mask(64, 48, False)).save(tmp_path / "r.png")
    out = ControlledStylizer(stylizers, Control(masks=(tmp_path / "l.png", tmp_path / "r.png"), feather=0))(batch)
    torch.testing.assert_close(out[..., :32], stylizers[0](batch)[..., :32], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[..., 32:], stylizers[1](batch)[..., 32:], atol=1e-6, rtol=0)


def test_control_with_tiles_and_preserve_color_matches_the_whole_pass(tmp_path: Path, batch: torch.Tensor) -> None:
    Image.fromarray(half_mask(64, 48)).save(tmp_path / "left.png")
    control = Control(strength=0.7, masks=(tmp_path / "left.png",), feather=4)
    network = trained_like_network(0)
    whole = ControlledStylizer([Stylizer(network)], control, "luminance")(batch)
    tiled = ControlledStylizer([Stylizer(network, tile_size=24)], control, "luminance")(batch)
    torch.testing.assert_close(tiled, whole, atol=2e-4, rtol=0)
    assert torch.equal(tiled[..., 32:], batch[..., 32:])


@pytest.mark.parametrize("control, models, needle", [
    (Control(strength=1.5), 1, "--strength"), (Control(strength=-0.1), 1, "--strength"),
    (Control(strength=float("nan")), 1, "--strength"), (Control(feather=-1), 1, "--feather"),
    (Control(masks=("a.png",)), 2, "one per --mask")])
def test_bad_control_values(control: Control, models: int, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        control.validate(models)


def test_mask_of_another_aspect_ratio_is_refused() -> None:
    with pytest.raises(ConfigError, match="aspect ratio"):
        fit_mask(torch.ones(10, 10), 48, 64, 4, "m.png")


# ----------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from stylefusion.networks.model_files import save_model

    folder = tmp_path_factory.mktemp("control_cli")
    save_model(trained_like_network(0), folder / "a.pth")
    save_model(trained_like_network(1), folder / "b.pth")
    scene((64, 48)).save(folder / "in.png")
    Image.fromarray(half_mask(64, 48, True)).save(folder / "l.png")
    Image.fromarray(half_mask(64, 48, False)).save(folder / "r.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "square.png")
    return {"dir": folder, "a": folder / "a.pth", "b": folder / "b.pth", "in": folder / "in.png",
            "l": folder / "l.png", "r": folder / "r.png", "square": folder / "square.png"}


def test_cli_strength_zero_and_mask(cli_files: dict[str, Path]) -> None:
    d = cli_files["dir"]
    src = np.array(Image.open(cli_files["in"]))
    result = fast("--mode", "image", "--input_images_dir", cli_files["in"], "--output_images_dir", d / "s0",
                  "--model_path", cli_files["a"], "--strength", "0")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.array(Image.open(d / "s0" / "in.png")), src)
    result = fast("--mode", "image", "--input_images_dir", cli_files["in"], "--output_images_dir", d / "m",
                  "--model_path", cli_files["a"], cli_files["b"], "--mask", cli_files["l"], cli_files["r"],
                  "--tile_size", "32")
    assert result.returncode == 0, result.stderr
    out = np.array(Image.open(d / "m" / "in.png"))
    assert not np.array_equal(out[:, :32], src[:, :32]) and not np.array_equal(out[:, 32:], src[:, 32:])



def test_a_photo_the_mask_does_not_fit_is_skipped_not_the_rest_of_the_folder(cli_files: dict[str, Path]) -> None:
    d = cli_files["dir"] / "mixed"
    d.mkdir()
    for name, size in (("a_landscape.png", (64, 48)), ("b_portrait.png", (48, 64)), ("c_landscape.png", (64, 48))):
        scene(size).save(d / name)
    out = cli_files["dir"] / "mixed_out"
    result = fast("--mode", "image", "--input_images_dir", d, "--output_images_dir", out,
                  "--model_path", cli_files["a"], "--mask", cli_files["l"])
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_landscape.png", "c_landscape.png"]
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "b_portrait.png" in line]
    assert len(skipped) == 1 and "aspect ratio" in skipped[0], result.stderr
    assert "2 stylised, 1 failed" in result.stdout + result.stderr

@pytest.mark.parametrize("extra, needle", [
    (["--strength", "1.5"], "--strength"),
    (["--mask", "{square}"], "aspect ratio"),
    (["{b}"], "one --model_path"),  # two models without masks
])
def test_cli_bad_control_values(cli_files: dict[str, Path], extra: list[str], needle: str) -> None:
    d = cli_files["dir"]
    args = ["--mode", "image", "--input_images_dir", cli_files["in"], "--output_images_dir", d / "bad",
            "--model_path", cli_files["a"]]
    extra = [e.format(**{k: str(v) for k, v in cli_files.items()}) for e in extra]
    args += extra
    assert_one_line_error(fast(*args), needle, status=("model settings: ",))
    assert not (d / "bad").exists()


# ------------------------------------------------------------------------- several styles in one network (CIN)
@pytest.fixture(scope="module")
def two_styles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-style model trained through the CLI (48 steps at 32 px), its styles, and an image to stylise."""
    from fast_train_data import make_checks, make_dataset, make_style

    root = tmp_path_factory.mktemp("cin")
    dataset = make_dataset(root / "ds")
    stripes, checks = make_style(root / "stripes.png"), make_checks(root / "checks.png")
    result = fast("--mode", "train", "--style_image", stripes, checks, "--content_dataset", dataset,
                  "--model_save_path", root / "two.pth", "--image_size", "32", "--batch_size", "2",
                  "--max_steps", "48", "--epochs", "100", "--lr", "1e-2", "--num_workers", "0",
                  "--preview_interval", "0", "--checkpoint_interval", "0")
    assert result.returncode == 0, result.stderr
    scene((48, 48)).save(root / "in.png")
    return {"dir": root, "model": root / "two.pth", "styles": [stripes, checks], "in": root / "in.png",
            "content": next((dataset / "default_class").glob("img_00.jpg"))}


def test_model_file_records_the_style_names(two_styles: dict) -> None:
    from stylefusion.networks.model_files import load_model

    network, settings = load_model(two_styles["model"])
    assert settings["styles"] == ["stripes.png", "checks.png"]
    assert network.in1.gamma.shape == (2, 32) and "in1.weight" not in network.state_dict()


def test_each_style_is_closer_to_its_own_style_image(two_styles: dict) -> None:
    """Gram error on VGG features: the style-k output is nearer style k's Grams than the other style's."""
    from stylefusion.networks.cin import select_style
    from stylefusion.core.images import load_image
    from stylefusion.core.losses import style_grams
    from stylefusion.networks.model_files import load_model
    from stylefusion.core.vgg import load_vgg19

    layers = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
    vgg = load_vgg19(list(layers), "caffe")
    targets = [style_grams(vgg, [load_image(p, 32)[None]], None, layers) for p in two_styles["styles"]]
    network = load_model(two_styles["model"])[0]
    content = load_image(two_styles["content"], 48)[None]

    def gram_error(grams: dict, target: dict) -> float:
        return sum(float(((grams[k] - target[k]) ** 2).sum() / (target[k] ** 2).sum()) for k in layers)

    errors = []
    for style in (0, 1):
        select_style(network, style)
        with torch.no_grad():
            out = (network(content * 255) / 255).clamp(0, 1)
        grams = style_grams(vgg, [out], None, layers)
        errors.append([gram_error(grams, target) for target in targets])
    assert errors[0][0] < errors[0][1] and errors[1][1] < errors[1][0], errors


def test_blend_weights_one_zero_equal_style_zero_exactly(two_styles: dict) -> None:
    d = two_styles["dir"]
    runs = {"s0": ["--style", "0"], "w10": ["--style_weights", "1,0"], "s1": ["--style", "1"],
            "mid": ["--style_weights", "1,1"]}
    for name, extra in runs.items():
        result = fast("--mode", "image", "--input_images_dir", two_styles["in"], "--output_images_dir", d / name,
                      "--model_path", two_styles["model"], *extra)
        assert result.returncode == 0, result.stderr
    out = {name: np.array(Image.open(d / name / "in.png")).astype(int) for name in runs}
    assert np.array_equal(out["s0"], out["w10"])
    assert not np.array_equal(out["s0"], out["s1"])
    # The blend's parameters lie between the styles', and so (roughly) does its output.
    assert np.abs(out["mid"] - out["s0"]).mean() < np.abs(out["s1"] - out["s0"]).mean()
    assert np.abs(out["mid"] - out["s1"]).mean() < np.abs(out["s1"] - out["s0"]).mean()


def test_blended_style_in_tiles_matches_the_whole_pass(two_styles: dict) -> None:
    from stylefusion.networks.cin import choose_style
    from stylefusion.networks.model_files import load_model

    network = load_model(two_styles["model"])[0]
    choose_style(network, None, (0.3, 0.7))
    image = torch.from_numpy(np.array(scene((64, 48)))).permute(2, 0, 1).float().div(255.0)[None]
    whole = Stylizer(network)(image)
    tiled = Stylizer(network, tile_size=24)(image)
    torch.testing.assert_close(tiled, whole, atol=2e-4, rtol=0)
    choose_style(network, 1, None)
    assert (Stylizer(network)(image) - whole).abs().mean() > 1e-3  # the blend is not style 1 alone


def test_export_of_a_two_style_model_bakes_the_chosen_style_and_says_which(two_styles: dict) -> None:
    """--style / --style_weights reach the exported graph (they were ignored: style 0 was always exported)."""
    from stylefusion.networks.cin import choose_style
    from stylefusion.networks.model_files import load_model

    d = two_styles["dir"]
    image = torch.rand(1, 3, 32, 32) * 255
    for extra, said, mix in [([], "style 0 (stripes.png) of 2", 0), (["--style", "1"], "style 1 (checks.png) of 2", 1),
                             (["--style_weights", "1e308,1e308"], "0.5 x style 0 (stripes.png) + 0.5 x style 1",
                              (0.5, 0.5))]:
        path = d / f"export_{len(extra)}_{extra[-1] if extra else 'none'}.pt"
        result = fast("--mode", "export", "--model_path", two_styles["model"], "--export_path", path, *extra)
        assert result.returncode == 0, result.stderr
        assert said in result.stderr and ("choose another" in result.stderr) == (not extra), result.stderr
        network = load_model(two_styles["model"])[0]
        choose_style(network, mix if isinstance(mix, int) else None, None if isinstance(mix, int) else mix)
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.load(str(path))(image), network(image), atol=1e-3, rtol=0)


@pytest.mark.parametrize("extra, needle", [
    (["--style", "3"], "out of range"), (["--style_weights", "1,0,0"], "3 value"),
    (["--strength", "1.5"], "--strength"),
])
def test_bad_style_choices_on_a_two_style_model(two_styles: dict, extra: list[str], needle: str) -> None:
    d = two_styles["dir"]
    result = fast("--mode", "image", "--input_images_dir", two_styles["in"], "--output_images_dir", d / "bad",
                  "--model_path", two_styles["model"], *extra)
    assert_one_line_error(result, needle, status=("model settings: ",))
    assert not (d / "bad").exists()


@pytest.mark.parametrize("style, weights, needle", [
    (-1, None, "out of range"), (2, None, "out of range"), (None, (1.0,), "1 value"), (None, (-1.0, 2.0), ">= 0"),
    (None, (0.0, 0.0), "positive sum"), (None, (1.0, float("nan")), ">= 0"), (0, (1.0, 0.0), "not both"),
])
def test_bad_style_choices(style: int | None, weights: tuple | None, needle: str) -> None:
    from stylefusion.networks.cin import choose_style, make_conditional

    network = make_conditional(trained_like_network(0), 2)
    with pytest.raises(ConfigError, match=needle):
        choose_style(network, style, weights)


@pytest.mark.parametrize("words", [["0.3,0.7,0"], ["0.3", "0.7", "0"], ["0.3,", "0.7", ",0"]])
def test_style_weights_either_way(words: list[str]) -> None:
    """Comma- or space-separated (the iterative CLI's --style_blend_weights took spaces, this one commas): the same."""
    from stylefusion_cli.fast import build_parser

    assert build_parser().parse_args(["--mode", "image", "--style_weights", *words]).style_weights == [0.3, 0.7, 0.0]


def test_repeated_paintings_masks_and_models_add_up() -> None:
    from stylefusion_cli.fast import build_parser

    a = build_parser().parse_args(["--mode", "image", "--style_image", "a.jpg", "--style_image", "b.jpg",
                                   "--mask", "l.png", "--mask", "r.png", "--model_path", "x.pth", "--model_path",
                                   "y.pth"])
    assert (a.style_image, a.mask, a.model_path) == (["a.jpg", "b.jpg"], ["l.png", "r.png"], ["x.pth", "y.pth"])


def test_style_weights_not_numbers_is_one_line(cli_files: dict[str, Path]) -> None:
    result = fast("--mode", "image", "--input_images_dir", cli_files["in"], "--output_images_dir",
                  cli_files["dir"] / "bad_w", "--model_path", cli_files["a"], "--style_weights", "0.5,b")
    assert_one_line_error(result, "--style_weights", "'b' is not a number")
    assert result.returncode == 2


def test_style_on_a_single_style_model_is_one_line(cli_files: dict[str, Path]) -> None:
    result = fast("--mode", "image", "--input_images_dir", cli_files["in"], "--output_images_dir",
                  cli_files["dir"] / "bad1", "--model_path", cli_files["a"], "--style", "0")
    assert_one_line_error(result, "multi-style model", "one style", status=("model settings: ",))


def test_conditional_swap_is_generic_over_instance_norm_children() -> None:
    """Norm layers under any names (another architecture) are swapped; a single-style network is unchanged."""
    from torch import nn

    from stylefusion.networks.cin import ConditionalInstanceNorm2d, make_conditional, select_style, style_count

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True))
            self.norm_out = nn.InstanceNorm2d(8, affine=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm_out(self.body(x))

    torch.manual_seed(0)
    net = Other()
    with torch.no_grad():
        net.norm_out.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 16, 16)
    before = net(x)
    make_conditional(net, 3)
    assert style_count(net) == 3 and isinstance(net.body[1], ConditionalInstanceNorm2d)
    for style in range(3):  # every style starts from the original parameters
        select_style(net, style)
        torch.testing.assert_close(net(x), before)
    with torch.no_grad():
        net.norm_out.gamma[2].mul_(2)
    select_style(net, 2)
    assert not torch.allclose(net(x), before)


def test_video_mask_keeps_the_unmasked_region(tmp_path: Path) -> None:
    """Video mode with a mask and two per-mask models: outside the mask the frames are those of strength 0."""
    from stylefusion.networks.model_files import save_model
    from stylefusion.run.video import VideoConfig, stylize_video
    from test_video import make_clip, read_video

    clip = make_clip(tmp_path / "clip.mp4", frames=4, audio=None)
    save_model(trained_like_network(0), tmp_path / "a.pth")
    Image.fromarray(half_mask(32, 24)).save(tmp_path / "left.png")
    runs = {"plain": Control(strength=0.0), "masked": Control(masks=(tmp_path / "left.png",), feather=2)}
    frames = {}
    for name, control in runs.items():
        stylize_video(VideoConfig(video_input=clip, video_output=tmp_path / f"{name}.mp4",
                                  model_path=tmp_path / "a.pth",
                                  device="cpu", crf=0, control=control, measure_flicker=False))
        frames[name] = read_video(tmp_path / f"{name}.mp4")["frames"]
    assert len(frames["masked"]) == 4
    for plain, masked in zip(frames["plain"], frames["masked"]):
        assert np.array_equal(plain[:, 34:], masked[:, 34:])  # lossless 4:2:0: whole chroma blocks past the edge
        assert np.abs(plain[:, :24].astype(int) - masked[:, :24]).mean() > 5


def test_mask_weights_do_not_compound_across_image_sizes(tmp_path: Path, stylizers: list[Stylizer]) -> None:
    """A folder of two sizes: the mask of the first size is not scaled by the strength again on its return."""
    Image.fromarray(half_mask(64, 48)).save(tmp_path / "left.png")
    controlled = ControlledStylizer(stylizers[:1], Control(strength=0.5, masks=(tmp_path / "left.png",), feather=0))
    first = controlled.weights(48, 64)[0].clone()
    controlled.weights(24, 32)
    assert torch.equal(controlled.weights(48, 64)[0], first) and float(first.max()) == 0.5


def test_a_feather_wider_than_the_image_is_bounded_and_keeps_outside_at_zero() -> None:
    """--feather 1e308 was an OverflowError, 1e9 an 8 GB kernel: the blur is capped by the image."""
    from stylefusion.run.control import fit_mask

    mask = torch.zeros(48, 64)
    mask[:, :32] = 1.0
    for feather in (40.0, 1e9, 1e308):
        fitted = fit_mask(mask, 48, 64, feather)
        assert torch.isfinite(fitted).all() and fitted[:, 32:].eq(0).all() and 0 < fitted[:, :32].max() <= 1
    exact, shrunk = fit_mask(mask, 48, 64, 16.0), fit_mask(mask, 48, 64, 18.0)  # either side of EXACT_SIGMA
    assert (exact - shrunk).abs().max() < 0.1  # the shrunk blur continues the exact one


def test_masks_count_in_the_memory_budget(tmp_path: Path) -> None:
    from stylefusion.run.control import ControlledStylizer

    Image.new("L", (64, 48), 255).save(tmp_path / "white.png")
    small = SimpleNamespace(max_memory=1000, batch_limit=lambda h, w: 1)
    stylizer = ControlledStylizer([small], Control(masks=(tmp_path / "white.png",)))
    with pytest.raises(ConfigError, match="more than the memory budget"):
        stylizer.weights(48, 64)


def test_transparent_mask_pixels_count_as_black(tmp_path: Path) -> None:
    from stylefusion.core.masks import mask_flags, read_mask

    rgba = Image.new("RGBA", (8, 4), (255, 255, 255, 0))  # white, but fully transparent
    rgba.paste((255, 255, 255, 255), (0, 0, 4, 4))        # the left half opaque white
    rgba.save(tmp_path / "alpha.png")
    mask = read_mask(tmp_path / "alpha.png")
    assert mask[:, :4].eq(1).all() and mask[:, 4:].eq(0).all()
    Image.new("RGBA", (8, 4), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    assert [mask_flags(tmp_path / n)[0] for n in ("alpha.png", "clear.png")] == [False, True]  # black: clear.png
