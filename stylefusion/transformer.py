"""Johnson et al. 2016 transformer network, as in pytorch/examples fast_neural_style, and its model files.

Deviations from the paper, as in pytorch/examples: instance norm instead of batch norm (Ulyanov et al.),
reflection padding, and nearest-neighbour upsampling + conv instead of transposed conv (Odena et al.).
State-dict keys match pytorch/examples' released models (candy, mosaic, rain_princess, udnie).
Model files record their architecture: "standard" (this network) or "compact" (compact.py, issue #16).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cin import make_conditional, state_style_count
from .errors import ConfigError, ModelError, require_file

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
    """A network that runs its children in the order its LAYER_ORDER names them (tiling.py reads the order)."""

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
    # The order forward() runs its children in; tiling.py reads it to run the network in tiles.
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


ARCHITECTURES = ("standard", "compact")


def build_network(arch: str = "standard") -> nn.Module:
    """A new network of the named architecture (one of ARCHITECTURES); ConfigError for another name."""
    if arch == "compact":
        from .compact import CompactNet  # local import: compact.py builds on this module's layers
        return CompactNet()
    if arch == "standard":
        return TransformerNet()
    raise ConfigError(f"unknown network architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")


def architecture_of(state: dict[str, Any]) -> str | None:
    """The architecture a state dict belongs to, for files without settings["arch"] (released models, plain
    state dicts): the one with exactly its conv weights (norms left out: other code may swap them); else None."""
    def convs(keys: Any) -> set[str]:
        return {k for k in keys if isinstance(k, str) and k.endswith("conv2d.weight")}

    found = convs(state)
    return next((arch for arch in ARCHITECTURES if convs(build_network(arch).state_dict()) == found), None)


_STALE_KEY = re.compile(r"in\d+\.running_(mean|var)$|\.num_batches_tracked$")


def clean_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop the stale InstanceNorm running stats that pytorch/examples' released models carry."""
    return {k: v for k, v in state.items() if not _STALE_KEY.search(k)}


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True and torch's own warnings (pickle protocol ...) kept off stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)


def _check_finite(network: nn.Module, path: Path) -> None:
    """Refuse weights with NaN/inf, and weights whose output on a small probe image is not finite."""
    bad = [name for name, value in network.state_dict().items()
           if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelError(f"{path} holds NaN or infinite weights (in {bad[0]}{more}): its training diverged or "
                         "the file is damaged; retrain it or use another model")
    ramp = torch.linspace(0.0, 255.0, 32)
    probe = torch.stack([ramp.expand(32, 32), ramp.expand(32, 32).T, torch.full((32, 32), 128.0)])[None]
    with torch.inference_mode():
        out = network(probe)
    if not bool(torch.isfinite(out).all()):
        raise ModelError(f"{path} produces NaN or infinite pixels (its weights overflow): retrain it or use "
                         "another model")


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file (ours, or a pytorch/examples released model) as (network in eval mode, settings).

    The network is built in the file's architecture: settings["arch"], or recognised by its keys.

    Weights with NaN/inf, or that turn a small probe image into NaN/inf, raise ModelError.
    """
    path = require_file(path, "model", ModelError)
    try:
        data = load_weights(path, map_location)
    except Exception as exc:  # truncated zip, bad pickle, globals refused by weights_only ...
        if any(s in str(exc) for s in ("Unsupported global", "GLOBAL", "Unsupported operand")):
            # a pickle of code objects, or a plain Python pickle: not a PyTorch weights file
            raise ModelError(f"{path} is not a plain weights file (refused by weights_only loading)") from None
        # torch's own text ("101", "failed finding central directory ...") does not help a user: leave it out.
        raise ModelError(f"cannot read model file {path} (corrupt or truncated, or not a PyTorch weights file)"
                         ) from None
    settings: dict[str, Any] = {}
    if isinstance(data, dict) and data.get("format") == MODEL_FORMAT:
        state, settings = data.get("state_dict"), dict(data.get("settings") or {})
    else:
        state = data
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a transformer-network state dict")
    arch = settings.get("arch") or architecture_of(state) or "standard"  # "standard" then refuses it
    if arch not in ARCHITECTURES:
        raise ModelError(f"{path} holds a network of unknown architecture {arch!r} (this version knows "
                         f"{', '.join(ARCHITECTURES)}): update StyleFusion or retrain it")
    network = build_network(arch)
    styles = state_style_count(state)
    if styles > 1:  # several styles (Dumoulin et al. 2017): one (scale, shift) table per norm layer
        make_conditional(network, styles)
    try:
        network.load_state_dict(clean_state_dict(state))
    except RuntimeError:
        raise ModelError(f"{path} is a model of another architecture, not a fast style transfer network") from None
    network = network.eval().requires_grad_(False)
    _check_finite(network, path)
    return network, settings


def save_model(network: nn.Module, path: str | os.PathLike, settings: dict[str, Any] | None = None) -> None:
    """Write weights plus the settings they were trained with (and the network's architecture, "arch"),
    atomically (temporary name, then rename)."""
    from .images import atomic_path  # local import: images pulls in Pillow, not needed to run the network

    module = getattr(network, "module", network)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        settings = {**dict(settings or {}), "arch": getattr(module, "ARCH", "standard")}
        torch.save({"format": MODEL_FORMAT, "state_dict": state, "settings": settings}, tmp)
