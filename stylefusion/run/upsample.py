"""Bring a stylised image rendered at a working size to the photo's full size, with the photo's edges kept.

The fast guided filter (core/guided_filter.py; Wu et al. 2018 for the low-resolution fit): at the working
size, each output channel is fitted locally as a linear function of the photo's luminance, q = a * I + b over
(2r+1)^2 windows; a and b are smooth, so they are upsampled and applied to the full-size luminance, which puts
back the photo's sharp edges and keeps the stylised colours and strokes. Applied in bands of rows, so a large
photo needs no full-size float copy beyond its result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.color import luminance
from ..core.guided_filter import guided_coefficients

RADIUS = 2            # window radius at the working size, px
EPS = 1e-3            # regularisation: larger keeps more of the stylised image's own texture, smaller more edges
BAND_ROWS = 512       # full-size rows produced at once


def _rows_of(coefficients: torch.Tensor, top: int, bottom: int, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of (C, h, w) to full-size rows [top, bottom) of (height, width)."""
    h, w = coefficients.shape[-2:]
    ys = ((torch.arange(top, bottom, dtype=torch.float32) + 0.5) * h / height - 0.5) / max(h - 1, 1) * 2 - 1
    xs = ((torch.arange(width, dtype=torch.float32) + 0.5) * w / width - 0.5) / max(w - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]
    return F.grid_sample(coefficients[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def guided_upsample(stylised_small: torch.Tensor, guide_small: torch.Tensor, photo: torch.Tensor,
                    radius: int = RADIUS, eps: float = EPS) -> torch.Tensor:
    """The stylised (3, h, w) image at the photo's (3, H, W) size: float [0, 1], or uint8 for a uint8 photo (a
    large photo then needs no full-size float map). `guide_small` is the photo as the network saw it."""
    coefficients = torch.cat(guided_coefficients(guide_small, stylised_small, radius, eps))  # one resampling
    height, width = photo.shape[-2:]
    as_bytes = photo.dtype == torch.uint8
    out = torch.empty((3, height, width), dtype=torch.uint8 if as_bytes else torch.float32)
    for top in range(0, height, BAND_ROWS):
        bottom = min(height, top + BAND_ROWS)
        band = photo[:, top:bottom].float()
        lum = luminance(band.div_(255.0) if as_bytes else band)[:1]
        a_rows, b_rows = _rows_of(coefficients, top, bottom, height, width).split(3)
        rows = (a_rows * lum + b_rows).clamp_(0, 1)
        out[:, top:bottom] = rows.mul_(255.0).round_() if as_bytes else rows
    return out
