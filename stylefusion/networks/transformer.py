"""Johnson et al. 2016 transformer network, as in pytorch/examples fast_neural_style (model files: model_files.py).

Deviations from the paper, as in pytorch/examples: instance norm instead of batch norm (Ulyanov et al.),
reflection padding, and nearest-neighbour upsampling + conv instead of transposed conv (Odena et al.).
State-dict keys match pytorch/examples' released models (candy, mosaic, rain_princess, udnie).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn


# Format of the files this project writes: {"format": MODEL_FORMAT, "state_dict": ..., "settings": {...}}.
MODEL_FORMAT = "stylefusion-transformer-v1"
# The smallest side the network takes: the first 9x9 conv reflect-pads by 4, which needs a side > 4.
MIN_INPUT_SIDE = 5


class ConvLayer(nn.Module):
    """Reflection-padded convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and a skip connection (He et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, 1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3, 1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsample then conv: avoids the checkerboard artefacts of transposed conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 upsample: int | None = None) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class LayeredNet(nn.Module):
    """A network that runs its children in the order its LAYER_ORDER names them (layers.py reads the order)."""

    LAYER_ORDER: tuple[str, ...] = ()

    def layers(self) -> list[nn.Module]:
        """The children in the order forward() runs them (looked up now: inference swaps some of them)."""
        return [getattr(self, name) for name in self.LAYER_ORDER]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers():
            x = layer(x)
        return x


class TransformerNet(LayeredNet):
    """Image transformation network. Input and output: RGB in the 0-255 range, as in pytorch/examples."""

    ARCH = "standard"  # recorded in model files (settings["arch"]); compact.CompactNet is the other one
    # Peak bytes per pixel of a whole-image pass (fp32, CPU, channels_last), measured at 1-4 MP
    # (bench/tiled.py): 723-887. A low-precision network needs about half. The budget planner reads it.
    PEAK_BYTES_PER_PIXEL = 800
    # The order forward() runs its children in; layers.py reads it, so the network can run in tiles.
    LAYER_ORDER = ("conv1", "in1", "relu", "conv2", "in2", "relu", "conv3", "in3", "relu",
                   "res1", "res2", "res3", "res4", "res5",
                   "deconv1", "in4", "relu", "deconv2", "in5", "relu", "deconv3")

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, 32, 9, 1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, 3, 2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, 3, 2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, 3, 1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, 3, 1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()


_STALE_KEY = re.compile(r"in\d+\.running_(mean|var)$|\.num_batches_tracked$")


def clean_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop the stale InstanceNorm running stats that pytorch/examples' released models carry."""
    return {k: v for k, v in state.items() if not _STALE_KEY.search(k)}

