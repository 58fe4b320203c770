"""Region masks for spatial control of the iterative transfer (Gatys et al. 2017): one greyscale image per style.

A mask may have any size but must have the content image's aspect ratio (within MASK_RATIO_TOLERANCE); it is
stretched to the working size. Values come from the 0..255 grey levels as [0, 1]: white = that style, black =
none, grey = partly (soft edges); a transparent pixel counts as black (grey level times alpha).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError
from .images import load_pil

# Relative difference of width/height allowed between a mask and the image it is stretched to: one value for
# the iterative and the fast paths (a video frame resized by --max_size rounds its sides, hence 2 %, not 1 %).
MASK_RATIO_TOLERANCE = 0.02


def check_mask_count(masks: Sequence[str | os.PathLike] | None, styles: int) -> None:
    """One mask per style image, or none at all."""
    if masks is not None and len(masks) != styles:
        raise ConfigError(f"{styles} style image(s) but {len(masks)} style mask(s): give one mask per style image")


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask file as (H, W) float in [0, 1]: its grey level (white = 1) times its alpha, so transparent pixels
    count as black (not stylised). InputImageError when unreadable."""
    img = load_pil(path, keep_alpha=True)
    grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if img.mode == "RGBA":
        grey = grey * (np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0)
    return torch.from_numpy(grey)


def mask_flags(path: str | os.PathLike) -> tuple[bool, bool]:
    """(black everywhere, painted in colour) of one mask file, from one decode. Black: every pixel's grey level times
    its alpha is 0 (as read_mask reads it), nothing would be styled in its region. In colour: over 1 % of its opaque
    pixels more than 16 levels from grey; read as their grey level, a region painted pure red takes 30 % of the
    style, not all of it."""
    img = load_pil(path, keep_alpha=True)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.int16)
    opaque = rgba[..., 3] > 0  # a transparent pixel counts as black, and its colour is not seen
    blank = not bool(((np.asarray(img.convert("L")) > 0) & opaque).any())
    rgb = rgba[..., :3]
    return blank, bool((((rgb.max(axis=2) - rgb.min(axis=2)) > 16) & opaque).mean() > 0.01)


def check_mask_ratio(name: str, mask_hw: tuple[int, int], image_hw: tuple[int, int], what: str,
                     tolerance: float = MASK_RATIO_TOLERANCE) -> None:
    """ConfigError when a mask's width/height ratio differs from the image's by more than `tolerance`."""
    ratio, image_ratio = mask_hw[1] / mask_hw[0], image_hw[1] / image_hw[0]
    if abs(ratio / image_ratio - 1) > tolerance:
        raise ConfigError(f"{name} is {mask_hw[1]}x{mask_hw[0]} (aspect {ratio:.3f}) but the {what} is "
                          f"{image_hw[1]}x{image_hw[0]} ({image_ratio:.3f}): a mask must have the {what}'s aspect "
                          f"ratio within {tolerance:.0%} (it is resized to it)")


def load_mask(path: str | os.PathLike, content_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """One mask as (1, h, w) in [0, 1] at `size`, refused when its aspect ratio is not the content's."""
    grey = read_mask(path)
    check_mask_ratio(f"style mask {path}", tuple(grey.shape), content_hw, "content image")
    grey = grey[None, None]
    if tuple(grey.shape[-2:]) != tuple(size):
        grey = F.interpolate(grey, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return grey[0].clamp(0, 1)


def load_masks(paths: Sequence[str | os.PathLike], content_hw: tuple[int, int],
               size: tuple[int, int]) -> torch.Tensor:
    """All masks as (R, 1, h, w) in [0, 1] at `size` (the working size), one per style."""
    return torch.stack([load_mask(p, content_hw, size) for p in paths])
