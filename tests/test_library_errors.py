"""The library's promise to callers: bad arguments raise a StyleFusionError subclass with a one-line message, never
a bare TypeError/ZeroDivisionError/RuntimeError from deep inside (found by a hostile run of the public API)."""

from __future__ import annotations

import pytest
import torch

import stylefusion as sf
from stylefusion.core.errors import ConfigError, DeviceError
from stylefusion.networks.transformer import TransformerNet
from stylefusion.run.control import Control
from tests.helpers import REPO

UDNIE, CITY = str(REPO / "data" / "udnie.jpg"), str(REPO / "data" / "city.jpg")
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
}
if NO_CUDA:
    CASES["cuda without cuda (paintings)"] = (lambda: sf.arbitrary_network([UDNIE], device="cuda"), DeviceError,
                                              "no CUDA device")
    CASES["cuda without cuda (Stylizer)"] = (lambda: sf.Stylizer(TransformerNet(), device="cuda"), DeviceError,
                                             "no CUDA device")


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
