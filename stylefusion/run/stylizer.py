"""Feed-forward stylisation (Johnson et al. 2016): a network prepared once to run on batches of any size.

`Stylizer` prepares a loaded network once for one device and precision; calling it maps a (B, 3, H, W)
batch in [0, 1] to the stylised batch in [0, 1] of the same size, whole or in exact tiles within a memory
budget. Image mode (folder.py), video, webcam and the sheet call it; `load_networks` and `controlled` build
what they run from model files and the strength/mask settings.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import as_device, autocast, check_precision, resolve_precision
from ..core.errors import ConfigError, InputImageError, non_finite_output
from ..core.memory import memory_budget
from ..networks.cin import choose_style
from ..networks.inference import for_inference
from ..networks.layers import network_layers
from ..networks.model_files import load_model
from ..networks.transformer import MIN_INPUT_SIDE
from .control import Control, ControlledStylizer
from .tiling import UNTILED_BYTES_PER_PIXEL, TiledRunner, TileProgress, TilePlan, plan_tiling

# Two stride-2 convs then two 2x upsamples: sides that are multiples of 4 come back unchanged.
SIZE_MULTIPLE = 4


class Stylizer:
    """A transformer network prepared once for inference on one device and precision.

    Call it on a float batch (B, 3, H, W) in [0, 1] on any device; it returns the stylised batch in [0, 1],
    same shape, dtype and device. A uint8 batch in [0, 255] gives a uint8 result: a large photo then needs a
    quarter of the memory for itself and its result. The network sees the batch reflect-padded to a multiple of 4
    and cropped back.
    Images that would not fit `max_memory` bytes (default: a safe share of the free memory) in one pass run
    one at a time, in tiles if need be (tiling.py: the same result as one pass); `tile_size` forces tiles.
    Set `on_tile` to a callable to hear of each tile of a tiled image.
    """

    def __init__(self, network: nn.Module, device: torch.device | str | None = None, precision: str = "fp32",
                 channels_last: bool | None = None, max_memory: int | None = None,
                 tile_size: int | None = None) -> None:
        network = getattr(network, "module", network)  # unwrap DistributedDataParallel
        if not isinstance(network, nn.Module):
            raise ConfigError(f"Stylizer needs a network (a torch.nn.Module, e.g. from load_model), got "
                              f"{type(network).__name__}")
        if device is None:
            device = next(network.parameters()).device
        self.device = as_device(device)
        check_precision(precision, self.device)
        precision = self.precision = resolve_precision(precision, self.device)
        # channels_last: faster for the convs on CPU (oneDNN) and CUDA (tensor cores); MPS prefers NCHW.
        self.channels_last = self.device.type in ("cpu", "cuda") if channels_last is None else channels_last
        net = for_inference(network, self.device)  # a copy: the caller's network is left as it is
        # On the CPU, bf16 runs as a bf16 network rather than under autocast: CPU autocast keeps reflection
        # padding and instance norm in fp32, converting every activation twice (measured in bench/fast.py).
        self._pure_low_precision = self.device.type == "cpu" and precision == "bf16"
        self.compute_dtype = torch.bfloat16 if self._pure_low_precision else torch.float32
        net = net.to(device=self.device, dtype=self.compute_dtype)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.network = net
        if max_memory is not None and max_memory <= 0:
            raise ConfigError(f"the memory budget must be positive, got {max_memory} bytes")
        if tile_size is not None and tile_size < 1:
            raise ConfigError(f"--tile_size must be at least 1, got {tile_size}")
        self.max_memory = memory_budget(max_memory, self.device)
        self.tile_size = tile_size
        # Each architecture states its own peak; a bf16 network holds its activations in half the bytes.
        peak = getattr(network, "PEAK_BYTES_PER_PIXEL", UNTILED_BYTES_PER_PIXEL)
        self.bytes_per_pixel = peak * (0.5 if self._pure_low_precision else 1.0)
        self.on_tile: Callable[[TileProgress], Any] | None = None
        self._runner: TiledRunner | None = None

    def batch_limit(self, height: int, width: int) -> int:
        """How many images of this size fit one whole pass in the budget (0: each needs tiles)."""
        if self.tile_size is not None:
            return 0
        padded = (height + -height % SIZE_MULTIPLE) * (width + -width % SIZE_MULTIPLE)
        return int(self.max_memory // (self.bytes_per_pixel * padded))

    def tile_plan(self, height: int, width: int) -> TilePlan:
        """How an image of this size runs in tiles within the budget (ConfigError when it cannot)."""
        runner = self._tiled_runner()
        return plan_tiling(runner.layers, height + -height % SIZE_MULTIPLE, width + -width % SIZE_MULTIPLE,
                           self.max_memory, self.compute_dtype, self.tile_size, self.bytes_per_pixel)

    def _tiled_runner(self) -> TiledRunner:
        if self._runner is None:
            self._runner = TiledRunner(network_layers(self.network), self.compute_dtype, self.channels_last)
        return self._runner

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not (isinstance(batch, torch.Tensor) and batch.dim() == 4 and batch.shape[1] == 3
                and (batch.is_floating_point() or batch.dtype == torch.uint8)):
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ConfigError(f"expected a float or uint8 batch of shape (B, 3, H, W), got {shape}")
        height, width = batch.shape[-2:]
        check_image_size(height, width)
        fits = self.batch_limit(height, width)
        if fits >= batch.shape[0]:
            out = self._whole(batch)
        elif fits >= 1:  # one image at a time fits: smaller batches
            out = joined([self._whole(part) for part in batch.split(fits)])
        else:
            plan = self.tile_plan(height, width)
            out = joined([self._tiled(image[None], plan) for image in batch])
        return out

    def _tiled(self, image: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """One (1, 3, H, W) image through the network in tiles."""
        height, width = image.shape[-2:]
        padded = (height + -height % SIZE_MULTIPLE, width + -width % SIZE_MULTIPLE)
        amp = contextlib.nullcontext() if self._pure_low_precision else autocast(self.device, self.precision)
        output = torch.empty_like(image)  # made outside inference mode: callers may modify it in place
        with torch.inference_mode(), amp:
            return self._tiled_runner().run(image, plan, padded, self.device, self.on_tile, output)

    def _whole(self, batch: torch.Tensor) -> torch.Tensor:
        """The batch through the network in one pass."""
        height, width = batch.shape[-2:]
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True).float()
            pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            if batch.is_floating_point():
                x = x.mul(255.0)  # the network works in the 0-255 range
            x = x.to(self.compute_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            amp = (contextlib.nullcontext() if self._pure_low_precision
                   else autocast(self.device, self.precision))
            with amp:
                y = self.network(x)
        # Outside inference mode, so callers get an ordinary tensor they may modify in place.
        y = y[..., :height, :width]
        if not torch.isfinite(y).all():  # clamp() keeps NaN: a broken model would write black images
            raise non_finite_output()
        if batch.dtype == torch.uint8:
            y = y.float().clamp(0.0, 255.0).round().to(torch.uint8)
        else:
            y = y.to(batch.dtype).div(255.0).clamp(0.0, 1.0)
        return y.to(batch.device).contiguous()


def joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts as one batch (a single part as it is: no copy of a large image)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def stylise(network: nn.Module | Stylizer, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Stylise a (B, 3, H, W) batch in [0, 1] with a network (prepared on the fly) or a ready Stylizer."""
    stylizer = network if isinstance(network, Stylizer) else Stylizer(network, precision=precision)
    return stylizer(batch)


def check_image_size(height: int, width: int, name: str = "image") -> None:
    """Raise InputImageError when an image is smaller than the network can take."""
    if min(height, width) < MIN_INPUT_SIDE:
        raise InputImageError(f"{name} is too small ({width}x{height}): the network needs at least "
                              f"{MIN_INPUT_SIDE} pixels on each side")


def model_paths(model_path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """One model path or several (one per mask) as a list."""
    return [model_path] if isinstance(model_path, (str, os.PathLike)) else list(model_path)


def load_networks(model_path: str | os.PathLike | Sequence[str | os.PathLike], control: Control,
                  map_location: str = "cpu") -> tuple[list[nn.Module], dict[str, Any]]:
    """The model(s) for a run, checked against `control` before any is loaded; the first model's settings."""
    paths = model_paths(model_path)
    control.validate(len(paths))
    loaded = [load_model(path, map_location) for path in paths]
    for path, (network, settings) in zip(paths, loaded):  # --style/--style_weights: every multi-style model
        choose_style(network, control.style, control.style_weights, settings.get("styles"), str(path))
    return [network for network, _ in loaded], loaded[0][1]


def controlled(stylizers: list[Stylizer], control: Control, preserve: str) -> Stylizer | ControlledStylizer:
    """The stylizer itself, or with strength and masks applied (then preserve_color is applied inside it)."""
    if len(stylizers) == 1 and not control.active:
        return stylizers[0]
    return ControlledStylizer(stylizers, control, preserve)
