"""The models StyleFusion ships (models/udnie.pth, models/udnie_compact.pth) and the README gallery script.

The shipped-model tests skip, saying why, until the trained files are in models/; the gallery script runs at
--tiny size with a stand-in model and never skips.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylefusion.core.images import load_image
from stylefusion.run.stylizer import Stylizer
from stylefusion.core.weights import load_weights
from stylefusion.networks.transformer import MODEL_FORMAT
from stylefusion.networks.model_files import build_network, load_model, save_model

REPO = Path(__file__).resolve().parents[1]
# The style in both architectures (issue #16): the standard network (the design's commands) and the compact one.
SHIPPED = {"udnie.pth": "standard", "udnie_compact.pth": "compact"}
MIN_CHANGE = 0.05  # mean |output - input| in [0, 1]: a stylised image, not a copy of the input
MIN_STD = 0.03     # pixel standard deviation of the output: not a flat colour


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_stylises(name):
    path = REPO / "models" / name
    if not path.exists():
        pytest.skip(f"models/{name} is not in this checkout yet (the trained model ships with issue #15)")
    data = load_weights(path)  # torch.load(..., weights_only=True)
    assert isinstance(data, dict) and data.get("format") == MODEL_FORMAT, "not a model file written by StyleFusion"
    network, settings = load_model(path)
    assert settings.get("arch") in ((SHIPPED[name],) if SHIPPED[name] else ("standard", "compact"))
    assert all(p.dtype == torch.float32 for p in network.parameters())  # fp16 files load as fp32
    image = load_image(REPO / "data" / "city.jpg", 90)  # 90 x 68: a width the network must pad and crop back
    with torch.inference_mode():
        out = Stylizer(network, "cpu", "fp32")(image[None])[0]
    assert out.shape == image.shape
    assert bool(torch.isfinite(out).all())
    change = float((out - image).abs().mean())
    assert change > MIN_CHANGE, f"output too close to the input (mean abs diff {change:.3f}): not stylised"
    std = float(out.std())
    assert std > MIN_STD, f"output nearly constant (std {std:.3f})"


def load_gallery_script():
    spec = importlib.util.spec_from_file_location("make_gallery", REPO / "docs" / "make_gallery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_gallery"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gallery():
    return load_gallery_script()


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory) -> Path:
    """A stand-in for models/udnie.pth: an untrained network in our file format."""
    path = tmp_path_factory.mktemp("model") / "stub.pth"
    torch.manual_seed(0)
    save_model(build_network("standard"), path)
    return path


def test_gallery_script_tiny(gallery, stub_model, tmp_path, capsys):
    out = tmp_path / "gallery"
    assert gallery.main(["--tiny", "--output_dir", str(out), "--model_path", str(stub_model)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(gallery.GALLERY_FILES)  # no temporary files left
    sizes = {}
    for name in gallery.GALLERY_FILES:
        with Image.open(out / name) as img:
            assert img.format == "JPEG"
            sizes[name] = img.size
    # 64 px longest side: city 512x384, udnie and astronaut 512x512; the video (320x240) at 64x48
    assert sizes["content.jpg"] == sizes["iterative.jpg"] == sizes["fast_city.jpg"] == (64, 48)
    assert sizes["style.jpg"] == sizes["fast_astronaut.jpg"] == (64, 64)
    gap = gallery.STRIP_GAP
    assert sizes["video_frames.jpg"] == (3 * 64 + 2 * gap, 2 * 48 + gap)  # 3 frames: input above stylised
    with Image.open(out / "video_frames.jpg") as strip, Image.open(out / "content.jpg") as content:
        top, bottom = strip.crop((0, 0, 64, 48)), strip.crop((0, 48 + gap, 64, 96 + gap))
        assert top.tobytes() != bottom.tobytes()  # the stylised row is not the input again
        assert content.tobytes() != Image.open(out / "iterative.jpg").tobytes()
    total = sum((out / name).stat().st_size for name in gallery.GALLERY_FILES)
    assert f"total: {total / 1024:.0f} KB in 6 files" in capsys.readouterr().out


def test_gallery_script_without_a_model_writes_nothing(gallery, tmp_path, capsys):
    out = tmp_path / "gallery"
    assert gallery.main(["--tiny", "--output_dir", str(out), "--model_path", str(tmp_path / "none.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("make_gallery.py: ") and "none.pth" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_readme_gallery_shows_the_scripts_pictures(gallery, readme):
    text = (REPO / readme).read_text(encoding="utf-8")
    shown = re.findall(r"docs/gallery/([\w.-]+\.jpg)", text)
    assert sorted(set(shown)) == sorted(gallery.GALLERY_FILES)
    assert "python docs/make_gallery.py" in text
