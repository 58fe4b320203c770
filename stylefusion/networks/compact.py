"""A compact transformer network for real-time video on ordinary CPUs (issue #16): ~23x fewer multiply-adds
at the default width.

Same building blocks as Johnson et al.'s network in transformer.py (reflect-padded convs, instance norm,
residual blocks, nearest upsample + conv), so tiling, inference replacements and norm swapping work as they
do there. Chosen by measured forward time on a 2-core AVX2 CPU (bench/compact.py, bench/RESULTS.md; shared
machine): thin convs at full resolution ran at 2-17 GMAC/s in oneDNN against 20-35 for 3x3 convs with 32-64
channels at 1/4 resolution, so the network does almost nothing at full resolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Conv, layer_channels, layer_sizes, network_layers
from .transformer import ConvLayer, LayeredNet, ResidualBlock, UpsampleConvLayer

# The residual stack's width and depth (Johnson et al.: 5 blocks of 128 channels). Other widths train with
# --compact_width; model files tell theirs by their weights (`compact_channels`). Measured (bench/RESULTS.md,
# same training as the standard network, 4 unseen photos): style error 0.75 / 0.73 / 0.69 of the photo's at
# widths 32 / 48 / 56 (standard: 0.61), at 1.0 / 1.8 / 2.4x the time per 1080p frame. 32 keeps a 1080p video
# above 1.5 frames/s on a 2-core AVX2 CPU.
COMPACT_CHANNELS = 32
MAX_COMPACT_CHANNELS = 128  # the standard network's width: wider would not be compact
COMPACT_BLOCKS = 4
# Encoder and decoder stay this narrow at every width: at 1/2 and full resolution a wider map costs more time
# per multiply-add than the residual stack at 1/4 does.
EDGE_CHANNELS = 16
# Fixed gain of the output conv: (9*9*32 inputs) / (3*3*16 inputs) = 18, rounded to 16, so that under Adam (steps of ~lr
# per weight) the output changes per step as fast as the standard network's. Without it, 30 test steps
# lower the loss by 3 % where the standard network's fall by 15 % (with it: 21 %).
OUTPUT_GAIN = 16.0


class GainUpsampleConvLayer(UpsampleConvLayer):
    """Nearest upsample + conv with its output multiplied by a fixed gain (weights and bias scaled before the
    conv: no extra pass over the image). State-dict keys as UpsampleConvLayer's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, upsample: int, gain: float
                 ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, 1, upsample)
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.forward_valid(self.reflection_pad(x))

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """The conv on an already upsampled and padded input (run/tiling.py calls this)."""
        conv = self.conv2d
        return F.conv2d(x, conv.weight * self.gain, conv.bias * self.gain)


class CompactNet(LayeredNet):
    """Johnson et al.'s image transformation network made ~23x cheaper (at the default width). Input and output:
    RGB in 0-255."""

    ARCH = "compact"
    # Peak bytes per pixel of a whole-image pass (fp32, CPU): 108-115 measured at 0.75 and 3 MP
    # (bench/network_peak.py), with margin.
    # Planning with the standard network's 800 would tile images that fit whole.
    PEAK_BYTES_PER_PIXEL = 150
    LAYER_ORDER = ("conv1", "in1", "relu", "conv2", "in2", "relu",
                   *(f"res{i + 1}" for i in range(COMPACT_BLOCKS)),
                   "deconv1", "in3", "relu", "deconv2")

    def __init__(self, channels: int = COMPACT_CHANNELS) -> None:
        super().__init__()
        c, edge = channels, EDGE_CHANNELS
        # Johnson et al.: 9x9 conv at full resolution, then two stride-2 convs. Here the first conv already has
        # stride 2 (5x5, 16 channels): full-resolution layers with few channels are the slowest per MAC on CPU.
        self.conv1 = ConvLayer(3, edge, 5, 2)
        self.in1 = nn.InstanceNorm2d(edge, affine=True)
        self.conv2 = ConvLayer(edge, c, 3, 2)
        self.in2 = nn.InstanceNorm2d(c, affine=True)
        # Johnson et al.: 5 residual blocks of 128 channels. Here 4 blocks of 32 by default (16x fewer MACs each).
        for i in range(COMPACT_BLOCKS):
            setattr(self, f"res{i + 1}", ResidualBlock(c))
        # Johnson et al.: upsample + conv 128 -> 64 channels. Here c -> 16, the encoder's first width.
        self.deconv1 = UpsampleConvLayer(c, edge, 3, 1, upsample=2)
        self.in3 = nn.InstanceNorm2d(edge, affine=True)
        # Johnson et al.: upsample + conv to 32 channels at full resolution, then a 9x9 conv to RGB. Here the
        # second upsample + 3x3 conv gives RGB directly (the 9x9 output conv alone would cost 57 % more MACs),
        # with a fixed output gain (Johnson et al. scaled a tanh output by 150; see OUTPUT_GAIN).
        self.deconv2 = GainUpsampleConvLayer(edge, 3, 3, 2, OUTPUT_GAIN)
        self.relu = nn.ReLU()


def compact_channels(state: Mapping[str, torch.Tensor]) -> int:
    """The residual-stack width of a compact network's state dict (COMPACT_CHANNELS where it holds none)."""
    weight = state.get("res1.conv1.conv2d.weight")
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 4 else COMPACT_CHANNELS


def multiply_adds_per_pixel(network: nn.Module, height: int = 64, width: int = 64) -> float:
    """Exact multiply-adds of one forward per input pixel: k*k*C_in*C_out per output pixel of every conv
    (norms, ReLUs and upsampling not counted), from the network's layer list at a height x width input."""
    layers = network_layers(network)
    sizes, channels = layer_sizes(layers, height, width), layer_channels(layers)
    total = sum(layer.kernel ** 2 * channels[i] * channels[i + 1] * sizes[i + 1][0] * sizes[i + 1][1]
                for i, layer in enumerate(layers) if isinstance(layer, Conv))
    return total / (height * width)
