"""The guided filter (He et al. 2013, "Guided image filtering"): an image refitted, in every (2r+1)^2 window, as a
linear function of a guide photo's luminance, q = a * I + b. Its colours stay; its edges become the photo's.

Used to bring a rendering made at a working size to full size with the photo's edges (run/upsample.py) and to put
the photo's edges back into the iterative run's start from Magenta's rendering (iterative/gatys.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .color import luminance


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
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


def guided_coefficients(guide: torch.Tensor, image: torch.Tensor, radius: int, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), both (3, h, w), such that image ~ a * luminance(guide) + b locally; `eps` regularises a: larger
    keeps more of the image's own texture, smaller more of the guide's edges. A channel at a time, so a large
    photo needs a few single-channel maps beyond a and b."""
    lum = luminance(guide.float())[:1]
    mean_i = box_mean(lum, radius)
    var_i = box_mean(lum * lum, radius).sub_(mean_i * mean_i).add_(eps)
    a = torch.empty((3, *lum.shape[-2:]), dtype=torch.float32, device=lum.device)
    b = torch.empty_like(a)
    for channel in range(3):
        p = image[channel:channel + 1].float()
        mean_p = box_mean(p, radius)
        slope = box_mean(lum * p, radius).sub_(mean_i * mean_p).div_(var_i)
        a[channel:channel + 1] = box_mean(slope, radius)
        b[channel:channel + 1] = box_mean(mean_p.sub_(slope * mean_i), radius)
    return a, b


def guided_filter(image: torch.Tensor, guide: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """The (3, H, W) image in [0, 1] refitted to the same-size guide photo's luminance (see the module)."""
    a, b = guided_coefficients(guide, image, radius, eps)
    return a.mul_(luminance(guide.float())[:1]).add_(b).clamp_(0, 1)
