"""The weights files' int8 arithmetic, reproduced on our modules: to check the port, not to stylise.

Magenta's lite files quantise every activation to int8 (a QuantizeLinear/DequantizeLinear pair after each conv,
ReLU, add, and after every step of each instance norm: mean, squared difference, variance, variance + eps,
rsqrt, the products and the shift). Our networks run in float (arbitrary.py, style_predictor.py). The forwards
here run the same modules' weights but round to the files' int8 grid (their scales and zero points, read by
magenta_weights.py) at the same points, so the port can be compared with onnxruntime on the files value for
value; the float path's distance from them is then what quantisation costs, not a porting error.

Rounding to 8 bits turns any float difference at a rounding tie into a whole step, so the arithmetic follows
onnxruntime's: elementwise steps in float32 as the graph orders them (x / scale, then round half to even;
sqrt, then reciprocal), and sums (convs, means) in float64 rounded to float32. A float32 kernel's own
summation order still settles a few ties the other way (8 of 1.2 M values after the first conv, on
astronaut.jpg), and the int8 norms amplify a flip: a channel mean one step off shifts the whole channel. So
the early layers agree to a few values in a million, the output on 35-100 % of its values, by input.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .arbitrary import RESIDUAL_BLOCKS, ArbitraryNet, StyleNorm
from .magenta_weights import MagentaGraph
from .style_predictor import StylePredictor


class FakeQuant:
    """Round x to a QuantizeLinear point's int8 grid and back (ONNX: saturate(round_half_even(x / s) + z));
    with `record`, keep each point's int8 values there by the QuantizeLinear node's name."""

    def __init__(self, points: Mapping[str, tuple[float, int]], record: dict[str, torch.Tensor] | None = None
                 ) -> None:
        self.points, self.record = points, record

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self.points[name]
        scale_ = torch.tensor(scale, dtype=torch.float32)
        q = torch.clamp(torch.round(x.float() / scale_) + zero, -128, 127)
        if self.record is not None:
            self.record.setdefault(name, q.to(torch.int8))
        return (q - zero) * scale_


def _wide(module: nn.Module) -> nn.Module:
    """A float64 copy of a module, for sums rounded once (see the module docstring)."""
    return copy.deepcopy(module).double()


def _sum(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A float64 module (conv, linear) on float32 x, rounded to float32."""
    return module(x.double()).float()


def _mean(x: torch.Tensor) -> torch.Tensor:
    """GlobalAveragePool, summed in float64 and rounded to float32."""
    return x.double().mean((2, 3), keepdim=True).float()


def _quantised_norm(q: FakeQuant, norm: StyleNorm, x: torch.Tensor, scope: str, vector: torch.Tensor
                    ) -> torch.Tensor:
    """A conditional norm as the graph computes it from the conv's output x (before any activation); `norm`
    in float64."""
    n = f"{scope}/StyleNorm"
    x = q(f"{scope}/Conv2D_quantize", x)
    mean = q(f"{n}/moments/mean_quantize", _mean(x))
    difference = x - mean
    squares = q(f"{n}/moments/SquaredDifference_int8", difference * difference)
    variance = q(f"{n}/moments/variance_quantize", _mean(squares))
    eps = torch.tensor(norm.eps, dtype=torch.float32)
    rsqrt = q(f"{n}/batchnorm/Rsqrt_int8", 1.0 / q(f"{n}/batchnorm/add_quantize", variance + eps).sqrt())
    gamma = q(f"style_params/{n}/Conv_1/BiasAdd_quantize", _sum(norm.gamma_projection, vector)).view(1, -1, 1, 1)
    beta = q(f"style_params/{n}/Conv/BiasAdd_quantize", _sum(norm.beta_projection, vector)).view(1, -1, 1, 1)
    scale = q(f"{n}/batchnorm/mul_quantize", rsqrt * gamma)
    shift = q(f"{n}/batchnorm/sub_quantize", beta - q(f"{n}/batchnorm/mul_2_quantize", mean * scale))
    return q(f"{n}/batchnorm/mul_1_quantize", x * scale) + shift


@torch.no_grad()
def quantised_transform(net: ArbitraryNet, graph: MagentaGraph, content: torch.Tensor, vector: torch.Tensor,
                        record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The transform graph's int8 forward: content (N, 3, H, W) in [0, 1] and a (100,) vector -> [0, 1]
    (float32, as the file's output); `record` collects every point's int8 values (FakeQuant)."""
    q, net = FakeQuant(graph.quant_points, record), _wide(net)
    v = q("mobilenet_conv/Conv/BiasAdd_int8", vector)
    x = q("transformer/contract/MirrorPad_int8", content) * 255.0  # our first conv takes 0-255 (exact in float64)
    for i in (1, 2, 3):
        if i > 1:
            x = q(f"transformer/contract/MirrorPad_{i - 1}_int8", x)
        x = q(f"transformer/contract/conv{i}/Relu_quantize", F.relu(_sum(getattr(net, f"contract{i}"), x)))
    for i in range(1, RESIDUAL_BLOCKS + 1):
        block, base = getattr(net, f"residual{i}"), f"transformer/residual/residual{i}"
        h = _sum(block.conv1, q(f"{base}/MirrorPad_int8", x))
        h = F.relu(_quantised_norm(q, block.in1, h, f"{base}/conv1", v))
        h = _sum(block.conv2, q(f"{base}/MirrorPad_1_int8", q(f"{base}/conv1/Relu_quantize", h)))
        h = q(f"{base}/conv2/StyleNorm/batchnorm/add_1_quantize", _quantised_norm(q, block.in2, h, f"{base}/conv2", v))
        x = q(f"{base}/add_quantize", x + h)
    for i in (1, 2, 3):
        scope = f"transformer/expand/conv{i}/conv"
        h = _sum(getattr(net, f"expand{i}"), q(f"transformer/expand/conv{i}/MirrorPad_int8", x))
        h = _quantised_norm(q, getattr(net, f"expand{i}_norm"), h, scope, v)
        x = q(f"{scope}/Relu_quantize", F.relu(h)) if i < 3 else q(f"{scope}/StyleNorm/batchnorm/add_1_quantize", h)
    return q("transformer/expand/conv3/conv/Sigmoid_int8_quantize", torch.sigmoid(x))


@torch.no_grad()
def quantised_style_vector(predictor: StylePredictor, graph: MagentaGraph, image: torch.Tensor) -> torch.Tensor:
    """The predictor graph's int8 forward: (N, 3, H, W) in [0, 1] -> (N, 100)."""
    q, predictor = FakeQuant(graph.quant_points), _wide(predictor)
    x = q("MobilenetV2/Conv/Relu6_quantize", F.relu6(_sum(predictor.conv, q("style_image_int8", image))))
    for i, block in enumerate(predictor.blocks):
        name = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
        h = x
        if block.expand is not None:
            h = q(f"{name}/expand/Relu6_quantize", F.relu6(_sum(block.expand, h)))
        h = q(f"{name}/depthwise/Relu6_quantize", F.relu6(_sum(block.depthwise, h)))
        h = q(f"{name}/project/BatchNorm/FusedBatchNormV3_quantize", _sum(block.project, h))
        x = q(f"{name}/add_quantize", x + h) if block.residual else h
    x = q("MobilenetV2/Conv_1/Relu6_quantize", F.relu6(_sum(predictor.conv_1, x)))
    x = q("bottleneck/Mean_quantize", _mean(x)[..., 0, 0])
    return q("mobilenet_conv/Conv/BiasAdd_int8_quantize", _sum(predictor.bottleneck, x))
