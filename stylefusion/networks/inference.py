"""TransformerNet's inference form: the same maths with faster kernels, and the CPU allocator tuned for it.

Measured on a 2-core AVX512-BF16 CPU (bench/fast.py), 1080² bf16, one thread:
- the last 9x9 conv (32 -> 3 channels) runs about 2.8x faster as a block conv (`BlockConv`): 422 -> 149 ms;
- instance norm runs as group norm with one channel per group (identical maths): CPU group_norm reads
  channels_last tensors in place, where instance_norm first copies them to NCHW (about 5x faster);
- every 2x upsample + 3x3 conv runs faster at the input's resolution as `PhaseUpsampleConv`: the compact
  network's last layer (16 -> 3 channels) 1.8x (2-core AVX2, 640x360, one thread: 14.7 -> 8.1 ms); at 1080p,
  fp32, 2-core AVX512-BF16: the standard network's 128 -> 64 and 64 -> 32 layers 1.6x (402 -> 249 and
  578 -> 369 ms), the compact network's 48 -> 16 layer 4.5x (82 -> 18 ms);
- glibc returns every large freed tensor to the OS and page-faults it back on the next allocation:
  260,000 page faults and 0.45 s of system time per forward; `retain_freed_memory` keeps it (2.35 -> 1.87 s).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import sys

import torch
import torch.nn.functional as F
from torch import nn

from .arbitrary import StyleNorm
from .cin import ConditionalInstanceNorm2d
from .transformer import ConvLayer, UpsampleConvLayer

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


class BlockConv(nn.Module):
    """A stride-1 reflect-padded k x k conv with few outputs (the last 9x9 layer, 32 -> 3 channels) run as a
    (k+3) x (k+3) conv of stride 4 with 16x the outputs, one per output channel and pixel of a 4x4 block,
    then pixel-shuffled into place: the same sums with 1.8x the multiply-adds, which oneDNN still runs
    about 2.8x faster than a conv whose 3 outputs leave its vector units mostly idle."""

    BLOCK = 4

    def __init__(self, layer: ConvLayer) -> None:
        super().__init__()
        weight, s = layer.conv2d.weight.detach(), self.BLOCK
        out_ch, in_ch, k, _ = weight.shape
        self.pad, self.kernel, self.out_channels = k // 2, k, out_ch
        big = weight.new_zeros(out_ch, s, s, in_ch, s - 1 + k, s - 1 + k)
        for ry in range(s):  # block pixel (ry, rx) sees the input window shifted by (ry, rx)
            for rx in range(s):
                big[:, ry, rx, :, ry:ry + k, rx:rx + k] = weight
        self.register_buffer("weight", big.reshape(out_ch * s * s, in_ch, s - 1 + k, s - 1 + k))
        self.register_buffer("bias", layer.conv2d.bias.detach().repeat_interleave(s * s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_valid(F.pad(x, (self.pad,) * 4, mode="reflect"))

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """The conv on an already padded input: (H + k - 1, W + k - 1) in, (H, W) out."""
        s = self.BLOCK
        height, width = x.shape[-2] - self.kernel + 1, x.shape[-1] - self.kernel + 1
        extra_h, extra_w = -height % s, -width % s  # zero rows so whole blocks cover the image, cropped below
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h))
        y = F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, stride=s), s)
        return y[..., :height, :width]


# Nearest 2x upsampling then a 3-tap filter, per output phase: output row 2i uses taps (w0, w1 + w2, 0) on
# input rows (i-1, i, i+1), row 2i+1 uses (0, w0 + w1, w2). _PHASE_TAPS[phase][tap][k] maps w_k to the taps.
_PHASE_TAPS = (((1, 0, 0), (0, 1, 1), (0, 0, 0)),
               ((0, 0, 0), (1, 1, 0), (0, 0, 1)))


class PhaseUpsampleConv(nn.Module):
    """A nearest 2x upsample + reflect-padded 3x3 conv run at the input's resolution: each of the 4 output
    phases is a conv of the un-upsampled input, replicate-padded (reflecting the upsampled map by one pixel
    repeats its edge), all as one 3x3 conv with 4x the outputs, then pixel-shuffled into place. Same sums,
    same multiply-adds, no upsampled map."""

    def __init__(self, layer: UpsampleConvLayer) -> None:
        super().__init__()
        gain = getattr(layer, "gain", 1.0)
        weight, bias = layer.conv2d.weight.detach() * gain, layer.conv2d.bias.detach() * gain
        taps = torch.tensor(_PHASE_TAPS, dtype=weight.dtype, device=weight.device)
        phases = torch.einsum("ytk,xsl,ockl->oyxcts", taps, taps, weight)  # (out, 2, 2, in, 3, 3)
        self.out_channels = weight.shape[0]
        self.register_buffer("weight", phases.reshape(self.out_channels * 4, *weight.shape[1:]))
        self.register_buffer("bias", bias.repeat_interleave(4))
        self.register_buffer("valid_weight", weight)  # the plain conv, for run/tiling.py's windows
        self.register_buffer("valid_bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias), 2)

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """The conv on an already upsampled and padded input (what run/tiling.py hands a conv)."""
        return F.conv2d(x, self.valid_weight, self.valid_bias)


def is_upsample_conv3(layer: nn.Module) -> bool:
    """A 2x upsample + 3x3 stride-1 conv: faster as PhaseUpsampleConv on the CPU (no upsampled map is made)."""
    if not isinstance(layer, UpsampleConvLayer):
        return False
    conv = layer.conv2d
    return (layer.upsample == 2 and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1) and conv.groups == 1 and conv.padding == (0, 0))


class InstanceNormAsGroupNorm(nn.Module):
    """InstanceNorm2d(affine=True) as a group norm with one channel per group: the same maths, computed
    without the NCHW copy that instance_norm makes of a channels_last tensor on the CPU."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.eps = norm.eps
        if isinstance(norm.weight, nn.Parameter):
            self.weight, self.bias = norm.weight, norm.bias
        else:  # a conditional norm's chosen (or blended) style: fixed for inference, moved with the network
            self.register_buffer("weight", norm.weight.detach().clone())
            self.register_buffer("bias", norm.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


def is_thin_conv(layer: nn.Module) -> bool:
    """A ConvLayer with a large kernel, stride 1 and at most 4 outputs: slow as a plain conv on the CPU."""
    if not isinstance(layer, ConvLayer):
        return False
    conv = layer.conv2d
    return conv.out_channels <= 4 and conv.kernel_size[0] >= 5 and conv.stride == (1, 1) and conv.groups == 1


def for_inference(network: nn.Module, device: torch.device) -> nn.Module:
    """A copy of the network, in eval mode and frozen, with the replacements above (the CPU ones on the CPU)."""
    net = copy.deepcopy(network).eval().requires_grad_(False)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if (isinstance(child, nn.InstanceNorm2d) and child.affine and not child.track_running_stats) \
                    or isinstance(child, (ConditionalInstanceNorm2d, StyleNorm)):
                setattr(module, name, InstanceNormAsGroupNorm(child))
            elif device.type == "cpu" and is_thin_conv(child):
                setattr(module, name, BlockConv(child))
            elif device.type == "cpu" and is_upsample_conv3(child):
                setattr(module, name, PhaseUpsampleConv(child))
    return net


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of unmapping it (a process-wide setting, for CLIs).

    Every activation of the network is a large tensor; by default glibc maps each one fresh and unmaps it
    when freed, so every forward pays page faults again. Returns False where this is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # Some glibc versions cap the mmap threshold at 32 MB: then only larger tensors are still mapped afresh.
    mapped = any(mallopt(_M_MMAP_THRESHOLD, limit) for limit in (1 << 30, 32 << 20))
    return bool(mapped and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
