"""Any painting, now: Magenta's arbitrary-style network (networks/arbitrary.py) run on photos like a trained model.

A painting's style vector is predicted once per run (several paintings: their weighted mean). The network learnt
its strokes on 256 px crops: on a large photo at full resolution they come out small against the picture, and the
scorer finds the result further from the painting than the photo itself (bench/RESULTS.md). So by default it runs
at a working size (WORK_SIDE on the longest side) and a guided filter (run/upsample.py) brings the result to full
size with the photo's edges; `stroke_scale` 1 runs it at full resolution, in exact tiles when large, like every
other network (Stylizer). `--strength` is Magenta's identity interpolation (Ghiasi et al. 2017): the style vector
moves from the painting's towards the photo's own, so each photo needs its own vector at strength < 1; a video
takes its first frame's, kept for the whole clip so the style does not flicker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.losses import check_blend_weights
from ..core.images import resize_to
from ..networks.arbitrary import (STYLE_SIZE, ArbitraryNet, StylePredictor, blend_style_vectors,
                                  load_arbitrary_net, load_style_predictor, style_vector, with_strength)
from ..networks.transformer import MIN_INPUT_SIDE
from .stylizer import Stylizer, joined
from .upsample import guided_upsample


# --stroke_scale auto: the network runs with the longest side at WORK_SIDE, and at most AUTO_MAX_FACTOR times
# smaller than the photo. Measured (bench/RESULTS.md, amber.jpg at 1080 px, six paintings, scored at full size):
# 384-768 px + the guided filter gave 0.80-0.82x the photo's own style error and 0.82-0.88 content error, full
# resolution 1.14x and 1.24; by eye, more than a 2x upsample looks soft at 1:1, so larger photos run at half size.
WORK_SIDE = 512
AUTO_MAX_FACTOR = 2.0
# --stroke_scale never runs the network below this longest side (px): smaller holds no stroke, only a colour.
MIN_WORK_SIDE = 64


def stroke_factor(stroke_scale: float | None, height: int, width: int) -> float:
    """How many times smaller than the photo the network runs: stroke_scale, or for None (auto) the factor that
    brings the longest side to WORK_SIDE, at most AUTO_MAX_FACTOR (1: photos up to WORK_SIDE run as they are).
    Never below MIN_WORK_SIDE on the longest side: --stroke_scale 64 on a 96 px photo ran the network at 5 px and
    gave a flat colour."""
    if stroke_scale is None:
        return min(AUTO_MAX_FACTOR, max(1.0, max(height, width) / WORK_SIDE))
    return max(1.0, min(float(stroke_scale), max(height, width) / MIN_WORK_SIDE))


@dataclass(frozen=True)
class Paintings:
    """The style images of a run, how they combine, and the side they are read at."""

    images: tuple[str | os.PathLike, ...]
    weights: tuple[float, ...] | None = None   # blend the paintings (None: one painting, or one per mask)
    style_size: int = STYLE_SIZE               # the painting's shorter side as the predictor sees it
    strength: float = 1.0                      # 0: the photo's own style vector .. 1: the painting's
    stroke_scale: float | None = None          # the network runs this many times smaller (None: auto)

    def validate(self, masks: int = 0) -> None:
        """One line for a count that fits nothing: several paintings need --style_weights or one --mask each."""
        if not self.images:
            raise ConfigError("no style image given")
        if self.stroke_scale is not None and not (isinstance(self.stroke_scale, (int, float))
                                                  and 1.0 <= self.stroke_scale <= 64.0):
            raise ConfigError(f"--stroke_scale must be auto or a number from 1 to 64, got {self.stroke_scale}")
        if not (isinstance(self.strength, (int, float)) and 0.0 <= self.strength <= 1.0):
            raise ConfigError(f"--strength must be between 0 and 1, got {self.strength}")
        count = len(self.images)
        if masks and self.weights is not None:
            raise ConfigError("give --style_weights (blend the paintings) or --mask (a painting per region), not "
                              "both")
        if masks and count not in (1, masks):
            raise ConfigError(f"{count} style images for {masks} mask(s): give one, or one per --mask (in order)")
        if self.weights is not None and len(self.weights) != count:
            raise ConfigError(f"--style_weights has {len(self.weights)} value(s) for {count} style image(s)")
        if self.weights is not None:  # all zero, NaN, negative: here, before any network loads
            check_blend_weights(list(self.weights), count)


class PaintingStylizer:
    """A Stylizer for a style vector, or at strength < 1 for its blend with each photo's own vector.

    Callable like Stylizer on (B, 3, H, W) batches; answers batch_limit, max_memory, device and on_tile as the
    image and video modes expect. `per_image=False` (video) keeps the first photo's vector for every later one.
    """

    def __init__(self, network: ArbitraryNet, vector: torch.Tensor, strength: float = 1.0,
                 style_size: int = STYLE_SIZE, predictor: StylePredictor | None = None, per_image: bool = True,
                 stroke_scale: float | None = None, **stylizer_options: Any) -> None:
        self.network, self.vector, self.strength, self.stroke_scale = network, vector, strength, stroke_scale
        self.style_size, self.per_image, self.options = style_size, per_image, stylizer_options
        self.predictor = predictor if strength < 1.0 else None
        if strength < 1.0 and self.predictor is None:
            self.predictor = load_style_predictor()
        self._base = Stylizer(network.set_style(vector), **stylizer_options)
        self._fixed: Stylizer | None = self._base if strength >= 1.0 else None

    @property
    def device(self) -> torch.device:
        return self._base.device

    @property
    def max_memory(self) -> int:
        return self._base.max_memory

    @property
    def on_tile(self) -> Any:
        return self._base.on_tile

    @on_tile.setter
    def on_tile(self, callback: Any) -> None:
        self._base.on_tile = callback
        if self._fixed is not None:
            self._fixed.on_tile = callback

    def batch_limit(self, height: int, width: int) -> int:
        return self._base.batch_limit(height, width)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self._fixed is None and not self.per_image:
            self._for_photo(batch[0])  # the first photo's vector, for this batch and every later one
        if self._fixed is not None:
            return self._rendered(self._fixed, batch)
        return joined([self._rendered(self._for_photo(image), image[None]) for image in batch])

    def _rendered(self, stylizer: Stylizer, batch: torch.Tensor) -> torch.Tensor:
        """The batch through the network at the working size, brought back to its own size with its edges."""
        height, width = batch.shape[-2:]
        factor = stroke_factor(self.stroke_scale, height, width)
        if factor <= 1.0:
            return stylizer(batch)
        size = (max(MIN_INPUT_SIDE, round(height / factor)), max(MIN_INPUT_SIDE, round(width / factor)))
        small = torch.stack([_shrunk(image, size) for image in batch])
        stylised = stylizer(small)
        return torch.stack([guided_upsample(out.cpu(), guide.cpu(), photo.cpu())
                            for out, guide, photo in zip(stylised, small, batch)]).to(batch.device)

    def _for_photo(self, photo: torch.Tensor) -> Stylizer:
        """A Stylizer whose vector is strength x painting + (1 - strength) x this photo's own (a few ms to make)."""
        own = style_vector(photo.cpu(), self.style_size, self.predictor)
        stylizer = Stylizer(self.network.set_style(with_strength(self.vector, own, self.strength)),
                            **self.options)
        stylizer.on_tile = self._base.on_tile
        if not self.per_image:
            self._fixed = stylizer
        return stylizer


def _shrunk(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (3, H, W) photo at the working size, float [0, 1]: uint8 photos shrink in Pillow (antialiased bicubic)
    before they become float, so a large one never has a full-size float copy."""
    if image.dtype != torch.uint8:
        return resize_to(image.float(), size)
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).cpu().contiguous().numpy())
    small = pil.resize((size[1], size[0]), Image.BICUBIC, reducing_gap=3.0)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1).to(image.device)


def painting_stylizers(paintings: Paintings, masks: int = 0, per_image: bool = True,
                       **stylizer_options: Any) -> list[PaintingStylizer]:
    """One stylizer (the paintings blended by their weights), or with masks one per mask (painting i, or the one
    painting, in region i). `stylizer_options` go to each Stylizer (device, precision, max_memory, ...)."""
    paintings.validate(masks)
    device = torch.device(stylizer_options.get("device") or "cpu")
    predictor = load_style_predictor(device)
    vectors = [style_vector(image, paintings.style_size, predictor) for image in paintings.images]
    if masks:
        chosen = vectors if len(vectors) == masks else vectors * masks
    else:
        chosen = [blend_style_vectors(vectors, paintings.weights)]
    network = load_arbitrary_net(device)
    return [PaintingStylizer(network, vector, paintings.strength, paintings.style_size, predictor, per_image,
                             paintings.stroke_scale, **stylizer_options) for vector in chosen]


def each_painting(paintings: Paintings, **stylizer_options: Any) -> list[PaintingStylizer]:
    """One stylizer per painting, its own style vector each (the webcam's keys switch between them)."""
    paintings.validate()
    device = torch.device(stylizer_options.get("device") or "cpu")
    predictor = load_style_predictor(device)
    network = load_arbitrary_net(device)
    return [PaintingStylizer(network, style_vector(image, paintings.style_size, predictor), paintings.strength,
                             paintings.style_size, predictor, True, paintings.stroke_scale, **stylizer_options)
            for image in paintings.images]


def painting_network(paintings: Paintings, device: torch.device | str = "cpu") -> nn.Module:
    """The arbitrary network with the paintings' blended vector baked in (export, the iterative start)."""
    paintings.validate()
    if paintings.strength < 1.0:
        raise ConfigError("--strength needs a photo (its own style vector): it has no meaning here")
    predictor = load_style_predictor(device)
    vectors = [style_vector(image, paintings.style_size, predictor) for image in paintings.images]
    return load_arbitrary_net(device).set_style(blend_style_vectors(vectors, paintings.weights))


def painting_names(paintings: Paintings) -> str:
    """The paintings as a status line says them: names, with their weights when blended."""
    names = [os.path.basename(os.fspath(p)) for p in paintings.images]
    if paintings.weights is not None:
        names = [f"{name} x {weight:g}" for name, weight in zip(names, paintings.weights)]
    return ", ".join(names)


__all__ = ["PaintingStylizer", "Paintings", "each_painting", "painting_names", "painting_network",
           "painting_stylizers"]
