"""The image as a Laplacian pyramid: what L-BFGS optimises instead of the pixels.

Our addition, not in Gatys et al.: a change of variables that preconditions the optimiser. A coarse level's
gradient sums its fine pixels' gradients, so the image's large-scale layout and colours move in few steps,
which pixel-space L-BFGS (history 100) learns only slowly. The image is the same function of the variables
(the sum of the upsampled levels), so the loss and its optimum are unchanged; only the path to it is shorter.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# The coarsest level keeps at least this many pixels on its short side: on 96x72 test images a 12x9 level
# (4 levels) made L-BFGS overshoot more in its first steps than 3 levels or the pixels did.
MIN_LEVEL_SIDE = 16
# Extra fp32 values per image pixel the levels hold: 1/4 + 1/16 + ... below the full-size one (< 1/3).
EXTRA_PX_FACTOR = 1 / 3


def _down(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="area")


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def level_count(height: int, width: int, wanted: int) -> int:
    """At most `wanted` levels, fewer where the coarsest would drop below MIN_LEVEL_SIDE."""
    count, side = 1, min(height, width)
    while count < wanted and (side + 1) // 2 >= MIN_LEVEL_SIDE:
        count, side = count + 1, (side + 1) // 2
    return count


class ImagePyramid:
    """Leaf tensors (fine to coarse) whose composition is a (1, 3, H, W) image; built to compose to `image`."""

    def __init__(self, image: torch.Tensor, levels: int) -> None:
        image = image.detach().float()
        parts, current = [], image
        for _ in range(level_count(*image.shape[-2:], levels) - 1):
            coarser = _down(current)
            parts.append(current - _up(coarser, current.shape[-2:]))  # the detail the coarser level lacks
            current = coarser
        parts.append(current)
        self.levels = [p.contiguous().requires_grad_(True) for p in parts]

    def compose(self) -> torch.Tensor:
        """The image: the coarsest level upsampled and each finer level's detail added (differentiable)."""
        image = self.levels[-1]
        for detail in reversed(self.levels[:-1]):
            image = _up(image, detail.shape[-2:]) + detail
        return image

    def set_grad(self, image_grad: torch.Tensor) -> None:
        """Set every level's gradient from the image's (the composition is linear: its adjoint, by autograd)."""
        for level in self.levels:
            level.grad = None
        with torch.enable_grad():
            torch.autograd.backward(self.compose(), image_grad.float().contiguous())
        for level in self.levels:  # L-BFGS flattens the gradients with view(), which needs contiguous ones
            level.grad = level.grad.contiguous()

    def wrap(self, closure: Callable[[], torch.Tensor], image: torch.Tensor) -> Callable[[], torch.Tensor]:
        """An optimiser closure over the levels from one that sets `image.grad` (image = compose())."""
        def levels_closure() -> torch.Tensor:
            loss = closure()
            self.set_grad(image.grad)
            return loss
        return levels_closure

    @torch.no_grad()
    def write_to(self, image: torch.Tensor) -> None:
        """Copy the composed image into `image` (after an optimiser step has moved the levels)."""
        image.copy_(self.compose())
