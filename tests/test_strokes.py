"""Stroke steps (strokes.py): the style of the shallow layers first, before the run's own steps."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from stylefusion.core.errors import ConfigError
from stylefusion.core.losses import PerceptualLoss, style_grams
from stylefusion.core.vgg import load_vgg19
from stylefusion.iterative import gatys
from stylefusion.iterative.gatys import IterativeConfig, LossScale, stylize, validate
from stylefusion.iterative.strokes import stroke_layers, stroke_loss
from tests.helpers import scene_and_stripes


def _log(folder) -> list[dict]:
    with open(folder / "loss_log.csv") as f:
        return list(csv.DictReader(f))


def test_the_stroke_loss_keeps_the_shallow_style_layers_only() -> None:
    vgg = load_vgg19(["relu1_1", "relu3_1", "relu4_2", "relu5_1"], "caffe")
    loss = PerceptualLoss(vgg, {"relu4_2": 1.0}, {"relu1_1": 0.5, "relu3_1": 2.5, "relu5_1": 8.0}, 1.0, 3.0, 0.1)
    strokes = stroke_loss(loss)
    assert strokes.style_layers == {"relu1_1": 0.5, "relu3_1": 2.5} and strokes.content_layers == {}
    assert (strokes.style_weight, strokes.tv_weight) == (3.0, 0.1)
    assert stroke_layers({"relu4_1": 1.0, "relu5_1": 1.0}) == {}
    assert stroke_loss(PerceptualLoss(vgg, {"relu4_2": 1.0}, {"relu5_1": 1.0})) is None  # nothing that shallow
    assert stroke_loss(PerceptualLoss(vgg, {"relu4_2": 1.0}, {"relu1_1": 1.0}, style_weight=0.0)) is None


def test_stroke_steps_close_the_style_before_the_first_step_and_are_reported(tmp_path) -> None:
    content, style = scene_and_stripes(tmp_path)
    first_style = {}
    for strokes in (0, 8):
        seen = []
        out = tmp_path / f"s{strokes}"
        # Style layers the stroke steps all see, so the run's own style loss measures what they did.
        result = stylize(IterativeConfig(content, [style], out, image_size=64, epochs=1, steps_per_epoch=3,
                                         init="content", style_layers="relu1_1,relu2_1,relu3_1:2",
                                         stroke_steps=strokes, output_format="png"), seen.append)
        rows = _log(out)
        assert [int(r["step"]) for r in rows] == [1, 2, 3] and result.steps == 3  # the run's own steps only
        first_style[strokes] = float(rows[0]["style"])  # the loss where the run's first step starts
        reports = [p.strokes for p in seen if p.strokes is not None]
        assert reports == [(i, strokes) for i in range(1, strokes + 1)]
        assert all(p.step == 0 and math.isnan(p.total_loss) for p in seen if p.strokes is not None)
        assert seen.index(next(p for p in seen if p.step == 1)) == strokes  # the strokes come first
    assert first_style[8] < 0.8 * first_style[0], first_style  # 42.0 -> 32.0 when written


def test_stroke_steps_never_leave_a_worse_image_than_they_started_from(tmp_path) -> None:
    # A far too long step (lr 1e4) overshoots: the image kept is the best one evaluated, at worst the start.
    torch.manual_seed(0)
    vgg = load_vgg19(["relu1_1", "relu2_1"], "caffe")
    loss = PerceptualLoss(vgg, {}, {"relu1_1": 1.0, "relu2_1": 1.0}, 0.0, 1.0)
    grams = style_grams(vgg, [torch.rand(1, 3, 48, 48)], None, ["relu1_1", "relu2_1"])
    image = torch.rand(1, 3, 40, 40).requires_grad_(True)
    start = float(loss(image.detach(), {}, grams).total)
    config = IterativeConfig("c", ["s"], "o", stroke_steps=5, pyramid_levels=1, lr=1e4)
    gatys._stroke_steps(config, loss, image, grams, None, LossScale(False), (torch.device("cpu"), "fp32"), 10, None)
    assert float(loss(image.detach(), {}, grams).total) <= start


def test_stroke_steps_are_checked_and_off_by_default() -> None:
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ConfigError, match="stroke_steps must be an integer >= 0"):
            validate(IterativeConfig("c", ["s"], "o", stroke_steps=bad))
    assert IterativeConfig("c", ["s"], "o").stroke_steps == 0  # measured, not adopted (bench/RESULTS.md)


def test_the_content_boost_is_set_by_the_start_not_by_the_stroke_steps(tmp_path, monkeypatch) -> None:
    # The boost answers how far the start's style outweighs its content; stroke steps close much of that style
    # first, and a boost read after them would not be the one measured (bench/RESULTS.md).
    content, style = scene_and_stripes(tmp_path)
    asked = []
    real = gatys.content_boost
    monkeypatch.setattr(gatys, "content_boost", lambda c, s, steps: asked.append((c, s)) or real(c, s, steps))
    for strokes in (0, 6):
        stylize(IterativeConfig(content, [style], tmp_path / f"s{strokes}", image_size=64, epochs=1,
                                steps_per_epoch=2, init="content", style_layers="relu1_1,relu2_1,relu3_1:2",
                                content_boost_steps=2, stroke_steps=strokes))
    assert len(asked) == 2 and asked[1] == pytest.approx(asked[0], rel=1e-4)
    first_step_style = float(_log(tmp_path / "s6")[0]["style"])
    assert first_step_style < 0.9 * asked[0][1]  # what the stroke steps left differs from the start
