"""How an iterative run at a given size fits a memory budget: whole image or tiles, and how long an L-BFGS history.

The figures are fp32 CPU measurements (peak RSS, VGG-19 up to relu5_1, bench/RESULTS.md); bf16 needs less,
so they are an upper bound there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..core.errors import MemoryBudgetError
from ..core.memory import format_bytes
from .pyramid import EXTRA_PX_FACTOR
from .tiled_features import alignment, halo_px, pool_level

GB = 2 ** 30  # --max_memory is in GiB, as in image and video modes
# Python, torch and the VGG-19 weights, measured before any image work: 0.90-0.97 GB.
BASE_BYTES = 1.0e9
# Forward + backward through relu5_1 with grad, per input pixel: measured 2.3 KB at 512x384, 2.5 KB at 1024x768.
ACTIVATION_BYTES_PER_PX = 2600
# The style images' Gram targets: one forward pass without grad through relu5_1, the five style layers' maps kept
# for their Grams: measured 707-717 B per style pixel (fp32 CPU, 1024x768 and 2048x1536 peak RSS).
STYLE_FORWARD_BYTES_PER_PX = 750
# Each --style_masks region adds a mask-weighted copy of every style layer's features, kept for backward:
# measured +256 MB peak RSS for 2 regions at 512x384 (1.33 -> 1.59 GB), i.e. ~650 B per pixel and region.
GUIDED_BYTES_PER_PX = 650
# Image-sized fp32 RGB buffers besides the history: image, its grad, content image, L-BFGS's flat gradient,
# previous gradient, direction and step, the saved copy, the upsampling source, and the best image evaluated so far
# with the one before each step (gatys._BestSoFar).
IMAGE_BUFFERS = 12
# Optimising a pyramid (pyramid.py): its levels and their gradients, and L-BFGS's own buffers 1/3 larger.
PYRAMID_BUFFERS = 4
RGB_BYTES_PER_PX = 12
# Below this core size the halo makes tiles too wasteful (a 256 px core has a 416 px window: 2.6x the work).
MIN_TILE = 128


@dataclass(frozen=True)
class MemoryPlan:
    """How one scale runs: tile core size (None: whole image), L-BFGS history, estimated peak bytes."""
    tile: int | None
    history: int
    estimate: float


def _window_px(height: int, width: int, tile: int, halo: int, align: int) -> int:
    """Pixels in the largest tile window (core plus halo) for a core size, as tiled_features.plan_tiles cuts."""
    tile = max(align, -(-tile // align) * align)

    def side(length: int) -> int:
        n = -(-length // tile)
        step = -(-(-(-length // n)) // align) * align
        return min(length, step + (2 * halo if n > 1 else 0))
    return side(height) * side(width)


def fixed_bytes(height: int, width: int, content_layers: Iterable[str], style_px: int) -> float:
    """Memory that does not depend on tiling: base, image-sized buffers, content maps, the style image."""
    px = height * width
    maps = sum(3 * 4 * 512 / 4 ** pool_level(n) for n in content_layers)  # target, current, grad (<= 512 ch)
    return BASE_BYTES + px * (IMAGE_BUFFERS * RGB_BYTES_PER_PX + maps) + 2 * RGB_BYTES_PER_PX * style_px


def plan_memory(height: int, width: int, layers: Iterable[str], content_layers: Iterable[str], style_px: int,
                history: int, budget: float, tile: int | None = None, regions: int = 0,
                pyramid: bool = False) -> MemoryPlan:
    """Whole image when it fits with the full history, else the largest tile that leaves room for a history.

    L-BFGS keeps 2 x history image-sized fp32 vectors (at 4096x3072 one is 151 MB, history 100 = 30 GB).
    Shortening the history costs little (history 20 vs 100: +0.4 % loss after 300 steps at 512 px, see
    bench/RESULTS.md) while tiles below ~1024 px cost much time in halos, so tiles may take up to half of the
    memory left and the history gets the rest, down to 1. `history` is the history the run would use;
    `regions` the number of style masks (guided Grams); `pyramid` whether L-BFGS optimises an image pyramid,
    whose vectors hold 4/3 of the pixels.
    """
    layers = list(layers)
    per_px = ACTIVATION_BYTES_PER_PX + regions * GUIDED_BYTES_PER_PX
    px = height * width
    per_history = 2 * RGB_BYTES_PER_PX * px * (1 + EXTRA_PX_FACTOR if pyramid else 1)
    left = budget - fixed_bytes(height, width, content_layers, style_px) - (
        PYRAMID_BUFFERS * RGB_BYTES_PER_PX * px if pyramid else 0)
    style_pass = style_px * STYLE_FORWARD_BYTES_PER_PX  # before the steps, freed after: the larger one counts
    if tile is None and max(px * per_px + history * per_history, style_pass) <= left:
        return MemoryPlan(None, history, budget - left + max(px * per_px + history * per_history, style_pass))
    halo, align = halo_px(layers), alignment(layers)

    def style_window(core: int) -> float:  # the style images are cut into tiles of the same core size
        return min(style_px, (core + 2 * halo) ** 2) * STYLE_FORWARD_BYTES_PER_PX
    if tile is None:
        room = max(left - history * per_history, left / 2)
        tile = max(height, width, round(style_px ** 0.5))
        while tile > MIN_TILE and max(_window_px(height, width, tile, halo, align) * per_px,
                                      style_window(tile)) > room:
            tile = max(MIN_TILE, int(tile * 0.8))
    activations = _window_px(height, width, tile, halo, align) * per_px
    fits = int((left - activations) // per_history) if style_window(tile) <= left else 0
    if fits < 1:
        need = budget - left + activations + per_history
        lower = "--image_size or --style_scale" if style_px > px else "--image_size"  # a style larger: its scale
        raise MemoryBudgetError(f"{width}x{height} px needs about {format_bytes(need)} even in {tile} px tiles, over "
                                f"the {format_bytes(budget)} budget: lower {lower} or raise --max_memory")
    history = min(history, fits)
    return MemoryPlan(tile, history, budget - left + activations + history * per_history)
