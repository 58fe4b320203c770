"""Image mode's plan (stylefusion/run/folder.py): no output may land on a file the run reads, be it a photo, a
painting, a mask or a model file; such a run is refused as a whole before anything is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylefusion.core.errors import OutputError
from stylefusion.run.control import Control
from stylefusion.run.folder import ImageConfig, plan_images, stylize_folder
from stylefusion_cli import fast
from stylefusion_cli.common import run_cli
from tests.helpers import REPO


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (36, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plan_refuses_an_output_that_is_a_protected_file(tmp_path):
    photos = tmp_path / "in"
    for name in ("a.jpg", "b.jpg", "c.png"):
        _image(photos / name)
    painting = _image(tmp_path / "out" / "b.jpg", 1)
    with pytest.raises(OutputError, match=r"refusing to overwrite an input file: .*b\.jpg, the --style_image, "
                                          r"with the result of .*in/b\.jpg \(choose another --output_images_dir\)"):
        plan_images(photos, tmp_path / "out", {"--style_image": [painting]})
    # A protected file elsewhere is no obstacle.
    plan = plan_images(photos, tmp_path / "out", {"--style_image": [tmp_path / "elsewhere.jpg"]})
    assert len(plan.pairs) == 3


@pytest.mark.parametrize("kind", ["style_images", "masks", "model_path"])
def test_stylize_folder_refuses_before_writing(tmp_path, kind):
    photos = tmp_path / "in"
    for name in ("a.png", "b.png", "c.png"):
        _image(photos / name)
    out = tmp_path / "out"
    victim = _image(out / "c.png", 2)  # the last image's output: refused up front, not after a and b
    before = _digest(victim)
    options = {"style_images": (victim,)} if kind == "style_images" else \
        {"model_path": victim} if kind == "model_path" else \
        {"model_path": tmp_path / "m.pth", "control": Control(masks=(victim,))}
    with pytest.raises(OutputError, match="refusing to overwrite an input file"):
        stylize_folder(ImageConfig(input=photos, output=out, device="cpu", **options))
    assert sorted(p.name for p in out.iterdir()) == ["c.png"] and _digest(victim) == before


@pytest.mark.parametrize("option", ["--style_image", "--mask"])
def test_cli_refuses_an_output_onto_a_painting_or_mask(tmp_path, capsys, option):
    photo = _image(tmp_path / "inplace" / "a.png")
    out = tmp_path / "sx"
    victim = _image(out / "a.png", 3)
    before = _digest(victim)
    source = ["--style_image", str(victim)] if option == "--style_image" else \
        ["--model_path", str(REPO / "models" / "udnie.pth"), "--mask", str(victim)]
    argv = ["--mode", "image", "--input_images_dir", str(photo), "--output_images_dir", str(out),
            "--device", "cpu", *source]
    assert run_cli(fast.main, argv) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert lines == [f"error: refusing to overwrite an input file: {victim}, the {option}, with the result of "
                     f"{photo} (choose another --output_images_dir)"]
    assert _digest(victim) == before and [p.name for p in out.iterdir()] == ["a.png"]


def test_a_folder_finds_jfif_and_other_formats_pillow_reads(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    picture = Image.new("RGB", (40, 30), (90, 140, 200))
    picture.save(photos / "download.jfif", format="JPEG")  # what a browser saves a JPEG as on Windows
    picture.save(photos / "frame.tga")
    picture.save(photos / "photo.jpg")
    (photos / "notes.txt").write_text("not an image")
    plan = plan_images(photos, tmp_path / "out")
    assert sorted(source.name for source, _ in plan.pairs) == ["download.jfif", "frame.tga", "photo.jpg"]
    assert plan_images(photos / "download.jfif", tmp_path / "out").single_file  # one such file given alone


def test_an_output_folder_inside_the_input_folder_says_what_it_holds(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (90, 140, 200)).save(photos / "a.jpg")
    Image.new("RGB", (40, 30), (200, 140, 90)).save(photos / "sub" / "a.jpg")  # a photo, not an earlier result
    plan = plan_images(photos, photos / "sub")
    assert [source.name for source, _ in plan.pairs] == ["a.jpg"]  # the output folder is no input
    assert plan.note is not None and "inside the input folder" in plan.note and "replace 1 of them" in plan.note
    assert "a.jpg" in plan.note
    assert plan_images(photos, photos / "new_out").note is None  # nothing there yet: nothing to say
    assert plan_images(photos, tmp_path / "elsewhere").note is None
