"""The library's promise to callers: bad arguments raise a StyleFusionError subclass with a one-line message, never
a bare TypeError/ZeroDivisionError/RuntimeError from deep inside (found by a hostile run of the public API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import stylefusion as sf
from stylefusion.core.errors import ConfigError, DeviceError
from stylefusion.networks.transformer import TransformerNet
from stylefusion.run.control import Control
from stylefusion.run.sheet import SheetConfig, make_sheet
from tests.helpers import REPO

UDNIE, CITY = str(REPO / "data" / "udnie.jpg"), str(REPO / "data" / "city.jpg")
MASK = str(REPO / "data" / "mask_left.png")
NO_CUDA = not torch.cuda.is_available()

CASES = {
    "no painting": (lambda: sf.arbitrary_network([]), ConfigError, "no style image given"),
    "None for the paintings": (lambda: sf.arbitrary_network(None), ConfigError, "no style image given"),
    "an unknown device": (lambda: sf.arbitrary_network([UDNIE], device="bogus"), DeviceError, "unknown device"),
    "weights as text": (lambda: sf.arbitrary_network([UDNIE, CITY], weights="0.5,0.5"), ConfigError,
                        "list of numbers, got the text '0.5,0.5'"),
    "a path for a network": (lambda: sf.Stylizer("models/udnie.pth"), ConfigError, "needs a network"),
    "None for a network": (lambda: sf.Stylizer(None), ConfigError, "got NoneType"),
    "a dict for a config": (lambda: sf.stylize({"content_image": CITY}), ConfigError, "takes an IterativeConfig"),
    "no content image": (lambda: sf.stylize(sf.IterativeConfig(content_image=None, style_images=[UDNIE],
                                                               output_dir="unused")), ConfigError,
                         "content_image must be a path"),
    "blend weights as text": (lambda: sf.stylize(sf.IterativeConfig(
        content_image=CITY, style_images=[UDNIE, CITY], style_blend_weights="0.7,0.3", output_dir="unused")),
        ConfigError, "got the text '0.7,0.3'"),
    "strength as text": (lambda: Control(strength="0.5").validate(), ConfigError, "--strength must be a number"),
    # what video, webcam and image modes' paintings go through: an AttributeError ('getbands') before
    "a number for a painting": (lambda: sf.arbitrary_network([5]), ConfigError,
                                "a style image must be a path, a Pillow image or a (3, H, W) tensor, got 5"),
    "a number for the sheet's paintings": (lambda: make_sheet(SheetConfig(photo=CITY, output="no/such/sheet.jpg",
                                                                          style_images=5)),
                                           ConfigError, "the sheet's photo, paintings and models are paths, got 5"),
}
if NO_CUDA:
    CASES["cuda without cuda (paintings)"] = (lambda: sf.arbitrary_network([UDNIE], device="cuda"), DeviceError,
                                              "no CUDA device")
    CASES["cuda without cuda (Stylizer)"] = (lambda: sf.Stylizer(TransformerNet(), device="cuda"), DeviceError,
                                             "no CUDA device")


# Wrong types in an IterativeConfig (found by a tester's run of each through stylize): each was let through to a
# bare TypeError/AttributeError/ValueError/RuntimeError deep inside, or worse, ran: multiscale="off" is a non-empty
# string, so true, and ran multi-scale; steps_per_epoch=True ran as 1 step; a bare mask path's characters were
# counted as masks. Each case: (the fields that differ from a valid tiny run, text the ConfigError must hold).
ITERATIVE_TYPES = {
    "multiscale as the CLI's text": (dict(multiscale="off"), "multiscale must be True or False, got the text 'off'"),
    "a bare mask path, two paintings": (dict(style_images=[UDNIE, CITY], style_masks=MASK),
                                        "2 style image(s) but 1 style mask(s)"),
    "a bare mask Path, two paintings": (dict(style_images=[UDNIE, CITY], style_masks=Path(MASK)),
                                        "2 style image(s) but 1 style mask(s)"),
    "steps_per_epoch 1.5": (dict(steps_per_epoch=1.5), "steps_per_epoch must be an integer >= 1, got 1.5"),
    "steps_per_epoch as text": (dict(steps_per_epoch="1"),
                                "steps_per_epoch must be an integer >= 1, got '1' (text)"),
    "steps_per_epoch True": (dict(steps_per_epoch=True), "steps_per_epoch must be an integer >= 1, got True"),
    "lbfgs_history True": (dict(lbfgs_history=True), "lbfgs_history must be an integer >= 1, got True"),
    "init None": (dict(init=None), "init must be auto, content"),
    "seed True": (dict(seed=True), "seed must be an integer from 0 to 2**63 - 1, got True"),
    "num_scales 1.5": (dict(multiscale=True, num_scales=1.5), "num_scales must be an integer >= 1, got 1.5"),
    "num_scales as text": (dict(multiscale=True, num_scales="2"), "num_scales must be an integer >= 1, got '2'"),
    "scale_steps one number": (dict(scale_steps=3), "scale_steps must be a list of integers >= 1"),
    "scale_steps a numpy array": (dict(scale_steps=np.array([1, 1])), "scale_steps must be a list of integers >= 1"),
    "tol as text": (dict(tol="0.1"), "tol must be a relative loss change between 0 and 1 (e.g. 0.001), got '0.1'"),
    "max_memory as text": (dict(max_memory="1"), "max_memory must be a number of GB > 0, got '1' (text)"),
    "tile_size 16.5": (dict(tile_size=16.5), "tile_size must be an integer >= 16 (px), got 16.5"),
    "tile_size as text": (dict(tile_size="64"), "tile_size must be an integer >= 16 (px), got '64'"),
    "a style image None": (dict(style_images=[None]), "style_images must be paths, got None"),
    "a style image 5": (dict(style_images=[5]), "style_images must be paths, got 5"),
    "content_layers None": (dict(content_layers=None), "content_layers must be text such as 'relu4_2'"),
    "style_layers 5": (dict(style_layers=5), "style_layers must be text such as 'relu4_2'"),
    "vgg_weights None": (dict(vgg_weights=None), "vgg_weights must be caffe, torchvision or a weights file"),
    "device None": (dict(device=None), "device must be a name"),
    "one blend weight bare": (dict(style_blend_weights=1.0),
                              "blend weights must be a list of numbers, one per style image, got 1.0"),
    "style_scale as text": (dict(style_scale="1"), "style_scale must be a finite number >= 0, got '1' (text)"),
}


@pytest.mark.parametrize("case", list(ITERATIVE_TYPES))
def test_wrong_types_in_an_iterative_config_raise_one_line_errors(case, tmp_path, capsys):
    changes, needle = ITERATIVE_TYPES[case]
    fields = {**dict(content_image=CITY, style_images=[UDNIE], output_dir=tmp_path / "out", epochs=1,
                     steps_per_epoch=1, image_size=64, device="cpu"), **changes}
    with pytest.raises(ConfigError) as raised:
        sf.stylize(sf.IterativeConfig(**fields))
    assert needle in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()  # refused before any work
    assert capsys.readouterr() == ("", "")


def test_one_mask_given_as_a_bare_path_is_one_mask(tmp_path):
    """style_masks="mask.png" was counted as 29 masks (its characters) and a Path raised a bare TypeError: one path
    given bare is a list of one, as for style_images."""
    for mask in (MASK, Path(MASK)):
        assert sf.IterativeConfig(content_image=CITY, style_images=UDNIE, output_dir=tmp_path,
                                  style_masks=mask).style_masks == (mask,)
    assert sf.IterativeConfig(content_image=CITY, style_images=UDNIE, output_dir=tmp_path).style_masks is None
    result = sf.stylize(sf.IterativeConfig(content_image=CITY, style_images=UDNIE, style_masks=Path(MASK),
                                           output_dir=tmp_path / "out", epochs=1, steps_per_epoch=1, image_size=64,
                                           device="cpu"))
    assert result.steps == 1 and result.final_path.is_file()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_library_arguments_raise_one_line_errors(case, capsys):
    call, error, needle = CASES[case]
    with pytest.raises(error) as raised:
        call()
    assert needle in str(raised.value) and "\n" not in str(raised.value)
    assert capsys.readouterr() == ("", "")  # the library prints nothing


def test_one_painting_given_as_a_bare_path_is_one_painting(tmp_path):
    """ImageConfig(style_images="x.jpg") was read as the paintings "x", ".", "j"...: "image not found: d"."""
    config = sf.ImageConfig(input=CITY, output=tmp_path / "out", style_images=UDNIE, max_size=64)
    assert config.style_images == (UDNIE,)
    summary = sf.stylize_folder(config)
    assert summary.failed == 0 and (tmp_path / "out" / "city.jpg").is_file()
