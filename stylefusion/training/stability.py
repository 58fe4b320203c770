"""Training-time temporal stability: the compound regularisation of Wang et al., AAAI 2020
("Consistent Video Style Transfer via Compound Regularization").

A network F is temporally stable when a small motion W of the input (plus sensor noise D) moves the output the
same way: F(W(x) + D) ~ W(F(x)). The loss penalises the difference on single images, so it needs neither video
data nor optical flow. W is a random smooth warp: global shift + small rotation/zoom + a smooth local motion
field (the authors' "motion" and "shift" terms); D is Gaussian noise with a per-image standard deviation.

For DistributedDataParallel, run both inputs through the network in one call: `perturb` the batch, stylise
torch.cat([inputs, perturbed]) and pass the two halves to `consistency` (two DDP forwards before one backward
would mark parameters ready twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, check_non_negative


@dataclass(frozen=True)
class CompoundRegularization:
    """The random perturbation. Sizes are fractions of the image's shorter side, so one setting fits any size."""
    # The authors shift by up to 10 px at 256 px crops (--data_shift_level 10): ~4 % of the side.
    max_shift: float = 0.04
    # Deviation: the authors' warp is shift + random smooth flow; we add a small rotation and zoom (the affine
    # part of camera motion), and use a smaller local motion (1 % of the side; theirs has std 8 px at 256 px).
    max_rotation_deg: float = 1.0
    max_zoom: float = 0.02
    motion_std: float = 0.01
    motion_grid: int = 3          # the local motion field is drawn on a grid x grid lattice, then upsampled
    # Deviation: the authors' noise std is 0.001-0.002 in ImageNet-normalised units (below one 8-bit level);
    # we use 1-2 levels of the 0-255 range, the size of video sensor/compression noise, which is what flickers.
    noise_std: float = 1.0        # in 0-255 units; each image draws its std uniformly from [s, 2s] as they do

    def __post_init__(self) -> None:
        for name in ("max_shift", "max_rotation_deg", "max_zoom", "motion_std", "noise_std"):
            check_non_negative(f"stability {name}", getattr(self, name))
        if not isinstance(self.motion_grid, int) or self.motion_grid < 2:
            raise ConfigError(f"stability motion_grid must be an integer >= 2, got {self.motion_grid}")


DEFAULT_REGULARIZATION = CompoundRegularization()


@dataclass(frozen=True)
class Perturbation:
    """One random warp per image: a sampling grid for grid_sample and the mask of pixels it keeps in frame."""
    grid: torch.Tensor   # (N, H, W, 2), normalised coordinates, align_corners=False
    mask: torch.Tensor   # (N, 1, H, W), 1 where the warped pixel comes from inside the image

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """W(images): nearest-neighbour resampling as the authors do (no blur), edge pixels replicated outside."""
        return F.grid_sample(images, self.grid.to(images.dtype), mode="nearest", padding_mode="border",
                             align_corners=False)


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """rand/randn on the generator's device (a CUDA generator cannot fill CPU tensors), returned on the CPU."""
    device = generator.device if generator is not None else torch.device("cpu")
    fn = torch.rand if kind == "rand" else torch.randn
    return fn(shape, generator=generator, device=device).cpu()


def _uniform(n: int, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    return (_draw("rand", (n,), generator).double() * 2 - 1) * bound


def random_warp(n: int, height: int, width: int, generator: torch.Generator | None = None,
                config: CompoundRegularization = DEFAULT_REGULARIZATION,
                device: torch.device | str = "cpu") -> Perturbation:
    """Draw n random smooth warps W of a (height, width) image; the result lives on `device`."""
    side = min(height, width)
    angle = _uniform(n, math.radians(config.max_rotation_deg), generator)
    zoom = 1 + _uniform(n, config.max_zoom, generator)
    shift = torch.stack([_uniform(n, config.max_shift * side, generator),
                         _uniform(n, config.max_shift * side, generator)], dim=1)            # (n, 2) px
    g = config.motion_grid
    coarse = _draw("randn", (n, 2, g, g), generator).double() * (config.motion_std * side)
    motion = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)  # (n, 2, H, W)

    # Source pixel of every output pixel p: R(angle) * zoom * (p - centre) + centre + shift + motion(p).
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    cx, cy = (width - 1) / 2, (height - 1) / 2
    dx, dy = xs - cx, ys - cy
    cos, sin = (torch.cos(angle) * zoom).view(n, 1, 1), (torch.sin(angle) * zoom).view(n, 1, 1)
    src_x = cos * dx - sin * dy + cx + shift[:, 0].view(n, 1, 1) + motion[:, 0]
    src_y = sin * dx + cos * dy + cy + shift[:, 1].view(n, 1, 1) + motion[:, 1]
    # Deviation: the authors compare every pixel; we keep only pixels whose source lies inside the image
    # (replicated border pixels have no consistent stylisation to match).
    mask = ((src_x >= -0.5) & (src_x <= width - 0.5) & (src_y >= -0.5) & (src_y <= height - 0.5))
    grid = torch.stack([(2 * src_x + 1) / width - 1, (2 * src_y + 1) / height - 1], dim=-1)
    return Perturbation(grid=grid.float().to(device), mask=mask.unsqueeze(1).float().to(device))


def perturb(inputs_255: torch.Tensor, generator: torch.Generator | None = None,
            config: CompoundRegularization = DEFAULT_REGULARIZATION) -> tuple[torch.Tensor, Perturbation]:
    """W(x) + D for a (N, 3, H, W) batch in the 0-255 range, and the warp W that was used."""
    n, _, h, w = inputs_255.shape
    warp = random_warp(n, h, w, generator, config, inputs_255.device)
    std = config.noise_std * (1 + _draw("rand", (n, 1, 1, 1), generator))   # per image, in [s, 2s]
    noise = _draw("randn", tuple(inputs_255.shape), generator) * std
    return warp.apply(inputs_255) + noise.to(inputs_255.device, inputs_255.dtype), warp


def consistency(outputs_255: torch.Tensor, perturbed_outputs_255: torch.Tensor,
                perturbation: Perturbation) -> torch.Tensor:
    """Mean |F(W(x) + D) - W(F(x))| over the kept pixels, in [0, 1] units (L1 as the authors use)."""
    target = perturbation.apply(outputs_255.float())
    diff = (perturbed_outputs_255.float() - target).abs() * perturbation.mask
    kept = perturbation.mask.sum() * outputs_255.shape[1]
    return diff.sum() / kept.clamp_min(1) / 255.0


def stability_loss(network: nn.Module, inputs_255: torch.Tensor, outputs_255: torch.Tensor,
                   generator: torch.Generator | None = None,
                   config: CompoundRegularization = DEFAULT_REGULARIZATION) -> torch.Tensor:
    """Compound regularisation term for a batch: outputs_255 = network(inputs_255), gradients flow through both.

    Runs the network once more on the perturbed batch. Output sizes must match the input's (use inputs whose
    sides are multiples of 4, as training crops are).
    """
    if inputs_255.dim() != 4 or outputs_255.shape != inputs_255.shape:
        raise ConfigError(f"stability loss: outputs {tuple(outputs_255.shape)} must have the inputs' shape "
                          f"{tuple(inputs_255.shape)} (N, 3, H, W); use sides that are multiples of 4")
    perturbed, warp = perturb(inputs_255, generator, config)
    return consistency(outputs_255, network(perturbed), warp)


__all__ = ["CompoundRegularization", "DEFAULT_REGULARIZATION", "Perturbation", "consistency", "perturb",
           "random_warp", "stability_loss"]
