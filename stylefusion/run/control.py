"""Creative control of the fast path: a strength dial and masked regions, applied to a stylised result.

Strength blends the stylised output with the input pixel by pixel (out = input + S * (stylised - input)): the
transformer network has no content-only point in its feature space to interpolate towards. A mask (greyscale,
white = stylise) limits the style to a region; its edge is feathered *inside* the region, so pixels outside every
mask stay the input exactly. With several masks each may have its own model; later masks are laid over earlier
ones where they overlap. Blending runs in bands of rows, in place on the stylised tensor: a huge tiled image
gets no second full-size float copy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.color import preserve_color
from ..core.errors import ConfigError
from ..core.masks import check_mask_ratio, read_mask
from ..core.memory import format_bytes

# Feather width (px, at the image's resolution) when none is given.
DEFAULT_FEATHER = 16
# Rows blended at once: bounds the temporaries of a blend to a band, whatever the image size.
BAND_ROWS = 256
# Feathers up to this Gaussian sigma (px) are blurred exactly; wider ones on a proportionally smaller map.
EXACT_SIGMA = 8.0
# Float maps alive while masks are fitted to an image: each fitted mask, plus three temporaries of the newest.
MASK_TEMPORARIES = 3


@dataclass(frozen=True)
class Control:
    """Strength (0 = the input, 1 = full style), masks (image files) and the feather width of their edges."""

    strength: float = 1.0
    masks: tuple[str | os.PathLike, ...] = ()
    feather: float = DEFAULT_FEATHER
    style: int | None = None                     # a multi-style model's style (networks/cin.py); None: its first
    style_weights: tuple[float, ...] | None = None  # or a blend of its styles (normalised to sum 1)

    def validate(self, models: int = 1) -> None:
        """Raise ConfigError for a strength outside [0, 1], a negative feather or a model count that fits no mask."""
        for name, value in (("strength", self.strength), ("feather", self.feather)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"--{name} must be a number, got {value!r}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise ConfigError(f"--strength must be between 0 and 1, got {self.strength}")
        if not (math.isfinite(self.feather) and self.feather >= 0):
            raise ConfigError(f"--feather must be a number of pixels >= 0, got {self.feather}")
        if self.style is not None and self.style_weights is not None:
            raise ConfigError("give --style or --style_weights, not both")
        if models > 1 and models != len(self.masks):
            raise ConfigError(f"{models} models given for {len(self.masks)} mask(s): give one --model_path, or "
                              "one per --mask (in the same order)")

    @property
    def active(self) -> bool:
        """Whether the result needs blending (full strength and no mask is the plain stylised output)."""
        return self.strength != 1.0 or bool(self.masks)


def _gaussian_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (H, W) map: exact up to EXACT_SIGMA, else on a map shrunk so that its sigma is about
    EXACT_SIGMA (a feather's ramp needs no more detail), so time and memory stay bounded whatever the width."""
    height, width = mask.shape
    sigma = min(sigma, float(max(height, width)))  # wider than the image: a blur of the image's own width
    step = int(sigma // EXACT_SIGMA)
    if step <= 1:
        return _exact_blur(mask, sigma)
    small = F.interpolate(mask[None, None], size=(-(-height // step), -(-width // step)), mode="area")[0, 0]
    blurred = _exact_blur(small, sigma / step)
    return F.interpolate(blurred[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def _exact_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (H, W) map, reflect-padded, kernel radius 2 sigma."""
    radius = max(1, int(math.ceil(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    m = mask[None, None]
    h, w = mask.shape
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate" if h <= radius else "reflect"),
                 kernel.view(1, 1, -1, 1))
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate" if w <= radius else "reflect"),
                 kernel.view(1, 1, 1, -1))
    return m[0, 0]


def fit_mask(mask: torch.Tensor, height: int, width: int, feather: float, name: str = "mask") -> torch.Tensor:
    """The mask resized to (height, width) and feathered inside its region; refuses another aspect ratio."""
    mh, mw = mask.shape
    check_mask_ratio(name, (mh, mw), (height, width), "image")
    if (mh, mw) != (height, width):
        nearest = F.interpolate(mask[None, None], size=(height, width), mode="nearest-exact")[0, 0]
        smooth = F.interpolate(mask[None, None], size=(height, width), mode="bilinear", align_corners=False,
                               antialias=mh > height)[0, 0].clamp_(0.0, 1.0)
        # A pixel whose nearest mask pixel is black stays black: interpolation must not leak style outside.
        mask = smooth.masked_fill_(nearest == 0, 0.0)
    if feather > 0:
        # The blur spreads the region outwards too; the minimum keeps only its inner ramp, so pixels outside the
        # mask stay exactly 0 (the input), which a plain Gaussian feather would not.
        mask = torch.minimum(mask, _gaussian_blur(mask, feather / 2))
    return mask


def blend_into(stylised: torch.Tensor, content: torch.Tensor, weight: torch.Tensor | float,
               first: bool) -> torch.Tensor:
    """Lay `stylised` (3, H, W) over the result with `weight` (H, W map or scalar), in bands of rows, in place.

    first=True: the result is `stylised` itself, blended with `content` (written into `stylised`); otherwise the
    result is `content` (the earlier layers), blended towards `stylised` (written into `content`). torch.lerp
    is exact at weights 0 and 1, so weight 0 leaves the input bit for bit.
    """
    target = stylised if first else content
    height = target.shape[-2]
    for top in range(0, height, BAND_ROWS):
        rows = slice(top, min(height, top + BAND_ROWS))
        w = weight[rows] if isinstance(weight, torch.Tensor) else weight
        if first:  # stylised + (1 - w) (content - stylised)
            stylised[..., rows, :].lerp_(content[..., rows, :].to(stylised), 1.0 - w)
        else:
            content[..., rows, :].lerp_(stylised[..., rows, :].to(content), w)
    return target


class ControlledStylizer:
    """Stylizers (one, or one per mask) with preserve_color, strength and masks applied to their results.

    Callable like stylize.Stylizer on a (B, 3, H, W) batch in [0, 1] (uint8 in [0, 255] is converted: the result
    is float); also answers `batch_limit`,
    `max_memory`, `device` and `on_tile` as the image and video modes expect of a Stylizer.
    """

    def __init__(self, stylizers: Sequence[Callable[[torch.Tensor], torch.Tensor]], control: Control,
                 preserve: str = "none") -> None:
        control.validate(len(stylizers))
        self.stylizers = list(stylizers)
        self.control, self.preserve = control, preserve
        self.masks = [(str(path), read_mask(path)) for path in control.masks]
        self._fitted: dict[tuple[int, int], list[torch.Tensor]] = {}

    @property
    def device(self) -> Any:
        return getattr(self.stylizers[0], "device", None)

    @property
    def max_memory(self) -> int:
        return getattr(self.stylizers[0], "max_memory", 4 << 30)

    @property
    def on_tile(self) -> Any:
        return getattr(self.stylizers[0], "on_tile", None)

    @on_tile.setter
    def on_tile(self, callback: Any) -> None:
        for stylizer in self.stylizers:
            stylizer.on_tile = callback

    def batch_limit(self, height: int, width: int) -> int:
        """How many images of this size go through at once (the smallest of the stylizers' limits)."""
        return min(getattr(s, "batch_limit", lambda h, w: 1 << 30)(height, width) for s in self.stylizers)

    def refusal(self, height: int, width: int) -> str | None:
        """Why an image of this size cannot take the masks (another aspect ratio, or their fitted copies over the
        memory budget), or None: image mode skips such a photo of a folder instead of ending the run there."""
        need = (len(self.masks) + MASK_TEMPORARIES) * height * width * 4
        if self.masks and need > self.max_memory:
            return (f"{len(self.masks)} mask(s) fitted to a {width}x{height} image need {format_bytes(need)}, more "
                    f"than the memory budget of {format_bytes(self.max_memory)}: raise --max_memory or lower "
                    f"--max_size")
        for name, mask in self.masks:
            try:
                check_mask_ratio(name, tuple(mask.shape), (height, width), "image")
            except ConfigError as exc:
                return str(exc)
        return None

    def weights(self, height: int, width: int) -> list[torch.Tensor | float]:
        """Per layer: the strength times its fitted mask (kept for the last image size), or the strength alone."""
        strength = self.control.strength
        if not self.masks:
            return [strength]
        if (height, width) not in self._fitted:
            refused = self.refusal(height, width)
            if refused:
                raise ConfigError(refused)
            # mul, not mul_: fit_mask may return the loaded mask itself (same size, no feather)
            self._fitted = {(height, width): [fit_mask(mask, height, width, self.control.feather, name).mul(strength)
                                              for name, mask in self.masks]}
        return list(self._fitted[(height, width)])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype == torch.uint8:  # image mode hands photos over as uint8: blending works in float [0, 1]
            batch = batch.float().div_(255.0)
        weights = self.weights(*batch.shape[-2:])
        if self.control.strength == 0.0:
            return batch.clone()  # nothing of the style shows: skip the network
        result: torch.Tensor | None = None
        for n, weight in enumerate(weights):
            stylised = self.stylizers[n if len(self.stylizers) > 1 else 0](batch)
            if isinstance(weight, torch.Tensor):
                weight = weight.to(stylised.device)
            for i in range(batch.shape[0]):
                styled = stylised[i]
                if self.preserve != "none":
                    styled = preserve_color(styled, batch[i], self.preserve)
                if result is None:  # the first layer becomes the result, blended with the input in place
                    blend_into(styled, batch[i], weight, first=True)
                    if self.preserve != "none":
                        stylised[i] = styled
                else:
                    blend_into(styled, result[i], weight, first=False)
            result = stylised if result is None else result
        assert result is not None
        return result
