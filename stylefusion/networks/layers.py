"""A feed-forward network as a flat list of layers: convs, norms, ReLUs and residual skips, in order.

Tiled inference walks this list to find each tile's receptive field and where whole-image statistics are
needed; the compact network counts its multiply-adds from it. Every network that runs in tiles lists its
modules through `layers()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from ..core.errors import ConfigError
from .arbitrary import ScaledSigmoid, StyleNorm
from .cin import ConditionalInstanceNorm2d
from .inference import BlockConv, InstanceNormAsGroupNorm, PhaseUpsampleConv
from .transformer import ConvLayer, ResidualBlock, UpsampleConvLayer


@dataclass
class Conv:
    """A convolution with reflection padding `pad`, optionally after a nearest-neighbour upsample."""
    module: nn.Module
    kernel: int
    stride: int
    pad: int
    upsample: int = 1


@dataclass
class Norm:
    """An instance norm (affine): applied with whole-image statistics gathered over the tiles."""
    module: nn.Module


@dataclass
class ReLU:
    """max(x, 0), pointwise."""


@dataclass
class Sigmoid:
    """sigmoid(x) * scale, pointwise (the arbitrary network's output layer)."""
    scale: float = 1.0


@dataclass
class SkipSave:
    """The start of a residual block: its input is added back at the matching SkipAdd."""


@dataclass
class SkipAdd:
    """The end of a residual block: add the block's input."""


Layer = Conv | Norm | ReLU | Sigmoid | SkipSave | SkipAdd


def _conv_layer(module: nn.Module) -> Conv:
    """A Conv for a ConvLayer, UpsampleConvLayer, inference.BlockConv or inference.PhaseUpsampleConv."""
    if isinstance(module, BlockConv):
        return Conv(module, module.kernel, 1, module.pad)
    if isinstance(module, PhaseUpsampleConv):  # tiles run it as the upsample + 3x3 conv it stands for
        return Conv(module, 3, 1, 1, 2)
    conv = module.conv2d
    upsample = int(getattr(module, "upsample", None) or 1)
    return Conv(module, conv.kernel_size[0], conv.stride[0], conv.kernel_size[0] // 2, upsample)


def network_layers(network: nn.Module) -> list[Layer]:
    """The network's layers in order, residual blocks unrolled between SkipSave and SkipAdd."""
    if not hasattr(network, "layers"):
        raise ConfigError(f"{type(network).__name__} cannot run in tiles (it does not list its layers)")
    layers: list[Layer] = []

    def add(module: nn.Module) -> None:
        if isinstance(module, (ConvLayer, UpsampleConvLayer, BlockConv, PhaseUpsampleConv)):
            layers.append(_conv_layer(module))
        elif isinstance(module, (nn.InstanceNorm2d, InstanceNormAsGroupNorm, ConditionalInstanceNorm2d, StyleNorm)):
            # RunningStats.affine reads module.weight/bias: a conditional norm's chosen or blended style
            layers.append(Norm(module))
        elif isinstance(module, nn.ReLU):
            layers.append(ReLU())
        elif isinstance(module, ScaledSigmoid):
            layers.append(Sigmoid(module.scale))
        elif isinstance(module, ResidualBlock):
            layers.append(SkipSave())
            for child in (module.conv1, module.in1, module.relu, module.conv2, module.in2):
                add(child)
            layers.append(SkipAdd())
        else:
            raise ConfigError(f"cannot run {type(module).__name__} in tiles")

    for module in network.layers():
        add(module)
    return layers


def layer_sizes(layers: Sequence[Layer], height: int, width: int) -> list[tuple[int, int]]:
    """The (H, W) of every layer's input, plus the output's last: sizes[i] is layer i's input."""
    sizes = [(height, width)]
    for layer in layers:
        h, w = sizes[-1]
        if isinstance(layer, Conv):
            h, w = h * layer.upsample, w * layer.upsample
            h = (h + 2 * layer.pad - layer.kernel) // layer.stride + 1
            w = (w + 2 * layer.pad - layer.kernel) // layer.stride + 1
        sizes.append((h, w))
    return sizes


def layer_channels(layers: Sequence[Layer], in_channels: int = 3) -> list[int]:
    """Channels of every layer's input, plus the output's last."""
    channels = [in_channels]
    for layer in layers:
        out = channels[-1]
        if isinstance(layer, Conv):
            out = layer.module.out_channels if hasattr(layer.module, "out_channels") else \
                layer.module.conv2d.out_channels
        channels.append(out)
    return channels
