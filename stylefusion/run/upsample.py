"""Bring a stylised image rendered at a working size to the photo's full size, with the photo's edges kept.

The fast guided filter (He et al. 2013, "Guided image filtering"; Wu et al. 2018 for the low-resolution fit):
at the working size, each output channel is fitted locally as a linear function of the photo's luminance,
q = a * I + b over (2r+1)^2 windows; a and b are smooth, so they are upsampled and applied to the full-size
luminance, which puts back the photo's sharp edges and keeps the stylised colours and strokes. Applied in bands
of rows, so a large photo needs no full-size float copy beyond its result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.color import luminance

RADIUS = 2            # window radius at the working size, px
EPS = 1e-3            # regularisation: larger keeps more of the stylised image's own texture, smaller more edges
BAND_ROWS = 512       # full-size rows produced at once


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows, edges replicated: (C, h, w) -> (C, h, w). Separable sums of shifted slices,
    ten times faster on a CPU than avg_pool2d (whose stride-1 kernel does not vectorise); a channel at a time, so
    the temporaries stay one channel large however many are stacked."""
    height, width = x.shape[-2:]
    size = 2 * radius + 1
    out = torch.empty_like(x)
    for channel in range(x.shape[0]):
        padded = F.pad(x[None, channel:channel + 1], (radius,) * 4, mode="replicate")[0, 0]
        rows = padded[:, :width].clone()
        for shift in range(1, size):
            rows += padded[:, shift:shift + width]
        total = out[channel].copy_(rows[:height])
        for shift in range(1, size):
            total += rows[shift:shift + height]
    return out.div_(size * size)


def guided_coefficients(guide_small: torch.Tensor, stylised_small: torch.Tensor, radius: int = RADIUS,
                        eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) at the working size such that stylised ~ a * luminance(guide) + b locally, both (3, h, w)."""
    guide = luminance(guide_small.float())[:1]
    target = stylised_small.float()
    # the four local means in one pass: I, p (3), I*p (3), I*I
    means = _box(torch.cat([guide, target, guide * target, guide * guide]), radius)
    mean_i, mean_p, mean_ip, mean_ii = means[:1], means[1:4], means[4:7], means[7:]
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    smooth = _box(torch.cat([a, b]), radius)
    return smooth[:3], smooth[3:]


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
