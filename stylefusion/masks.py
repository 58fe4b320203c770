"""Region masks for spatial control of the iterative transfer (Gatys et al. 2017): one greyscale image per style.

A mask may have any size but must have the content image's aspect ratio (within MASK_RATIO_TOLERANCE); it is
stretched to the working size. Values come from the 0..255 grey levels as [0, 1]: white = that style, black =
none, grey = partly (soft edges).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError
from .images import load_pil

MASK_RATIO_TOLERANCE = 0.01  # relative difference of width/height allowed between a mask and the content


def check_mask_count(masks: Sequence[str | os.PathLike] | None, styles: int) -> None:
    """One mask per style image, or none at all."""
    if masks is not None and len(masks) != styles:
        raise ConfigError(f"{styles} style image(s) but {len(masks)} style mask(s): give one mask per style image")


def load_mask(path: str | os.PathLike, content_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """One mask as (1, h, w) in [0, 1] at `size`, refused when its aspect ratio is not the content's."""
    img = load_pil(path)  # InputImageError for missing, empty or unreadable files
    width, height = img.size
    ratio, content_ratio = width / height, content_hw[1] / content_hw[0]
    if abs(ratio / content_ratio - 1) > MASK_RATIO_TOLERANCE:
        raise ConfigError(f"style mask {path} is {width}x{height} (aspect {ratio:.3f}) but the content image is "
                          f"{content_hw[1]}x{content_hw[0]} ({content_ratio:.3f}): a mask must have the content's "
                          f"aspect ratio within {MASK_RATIO_TOLERANCE:.0%}")
    grey = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None, None]
    if tuple(grey.shape[-2:]) != tuple(size):
        grey = F.interpolate(grey, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return grey[0].clamp(0, 1)


def load_masks(paths: Sequence[str | os.PathLike], content_hw: tuple[int, int],
               size: tuple[int, int]) -> torch.Tensor:
    """All masks as (R, 1, h, w) in [0, 1] at `size` (the working size), one per style."""
    return torch.stack([load_mask(p, content_hw, size) for p in paths])
