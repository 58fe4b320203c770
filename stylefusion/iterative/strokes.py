"""Strokes first: optimiser steps on the style of the shallow layers alone, before the full objective.

Not in Gatys et al. From Magenta's rendering the layout and palette are already there; what lags is the painting's
fine strokes: on Starry Night the start's relu2_1 and relu3_1 Gram errors are 4-8x neural-style-pt's final ones,
and with the content counted too the full steps close them slowly (bench/RESULTS.md "Time to quality"). A step whose
loss stops at relu3_1 skips relu3_2 ... relu5_1 and the content layer, about 70 % of a full step's convolutions
(measured: 0.36 s against 0.88 s at 384 px fp32, 0.41 of a step, the rest is the pyramid and L-BFGS's own work), so
a few of them buy the strokes cheaply; the full steps that follow win back the content those steps moved.
"""

from __future__ import annotations

from dataclasses import replace

from ..core.losses import PerceptualLoss
from ..core.vgg import LAYER_INDEX

# The deepest layer a stroke step looks at: relu3_1 ends VGG-19's first ~30 % of convolution work.
STROKE_DEPTH = "relu3_1"


def stroke_layers(style_layers: dict[str, float]) -> dict[str, float]:
    """The style layers (with their weights) no deeper than STROKE_DEPTH."""
    return {n: w for n, w in style_layers.items() if LAYER_INDEX[n] <= LAYER_INDEX[STROKE_DEPTH]}


def stroke_loss(loss_fn: PerceptualLoss) -> PerceptualLoss | None:
    """The run's loss restricted to its shallow style layers, without the content term (the TV term kept);
    None when it has no style layer that shallow or no style weight."""
    layers = stroke_layers(loss_fn.style_layers)
    if not layers or loss_fn.style_weight == 0:
        return None
    return replace(loss_fn, content_layers={}, style_layers=layers)
