"""Exact VGG-19 losses of images too large for one pass: the network runs on tiles with receptive-field halos.

Two passes per evaluation (the last tile's pass-1 graph is kept for pass 2) (a deviation in method, not in result,
from Gatys et al.'s single pass):
1. no grad, tile by tile: sum each tile's core-feature Gram contributions into whole-image Grams and copy
   the core content feature maps into whole-image maps; the loss and its gradient w.r.t. those Grams
   (C x C) and maps follow on the small tensors; with region masks (GuidedPerceptualLoss) each region's
   guided Gram is summed the same way from the core features weighted by that region's mask;
2. with grad, tile by tile: backpropagate the surrogate <dL/dG, G_tile> + <dL/dF, F_tile> through the tile's
   whole input window and add that window's gradient into the image gradient. Since G = sum of G_tile and
   the core features equal the whole-image ones, the sum over tiles is exactly the whole-image gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

from ..core.losses import (GuidedPerceptualLoss, LossTerms, PerceptualLoss, guide_area, layer_guides,
                           style_grams)
from ..core.vgg import LAYER_INDEX, LAYER_NAMES, VGG19Features

TileCallback = Callable[[int, int], None]  # (tiles done, tiles in this evaluation)


def pool_level(layer: str) -> int:
    """How many 2x2 poolings come before `layer` (its feature map is 2**level times smaller)."""
    return sum(1 for name in LAYER_NAMES[:LAYER_INDEX[layer]] if name.startswith("pool"))


def alignment(layers: Iterable[str]) -> int:
    """Tile origins must be multiples of this so every pooling window lies wholly inside one tile."""
    return 2 ** max(pool_level(n) for n in layers)


def halo_px(layers: Iterable[str]) -> int:
    """Input pixels beyond a tile's core that make its core features equal the whole image's, at every layer.

    Tracks how far the zero padding at a cut edge corrupts the map: +1 px per 3x3 conv, halved (rounded up)
    by each aligned 2x2 pooling; the result in input pixels is rounded up to the alignment.
    """
    layers = list(layers)
    align = alignment(layers)
    need = 0
    for layer in layers:
        wrong, level = 0, 0
        for name in LAYER_NAMES[:LAYER_INDEX[layer] + 1]:
            if name.startswith("conv"):
                wrong += 1
            elif name.startswith("pool"):
                wrong, level = -(-wrong // 2), level + 1
        need = max(need, wrong * 2 ** level)
    return -(-need // align) * align


@dataclass(frozen=True)
class Tile:
    """A core region [y0, y1) x [x0, x1) of the image and the input window around it (core plus halo)."""
    y0: int
    y1: int
    x0: int
    x1: int
    wy0: int
    wy1: int
    wx0: int
    wx1: int

    def core(self, level: int) -> tuple[slice, slice]:
        """The core's rows and columns in the window's feature map at a pooling level."""
        return (slice((self.y0 >> level) - (self.wy0 >> level), (self.y1 >> level) - (self.wy0 >> level)),
                slice((self.x0 >> level) - (self.wx0 >> level), (self.x1 >> level) - (self.wx0 >> level)))


def _cuts(length: int, tile: int, align: int) -> list[int]:
    n = -(-length // tile)
    step = -(-(-(-length // n)) // align) * align  # even cores, each a multiple of the alignment
    return [min(i * step, length) for i in range(n)] + [length]


def plan_tiles(height: int, width: int, tile: int, halo: int, align: int) -> list[Tile]:
    """Cores of at most about `tile` px (rounded up to the alignment) covering the image, with their windows."""
    tile = max(align, -(-tile // align) * align)
    ys, xs = _cuts(height, tile, align), _cuts(width, tile, align)
    tiles = []
    for y0, y1 in zip(ys, ys[1:]):
        for x0, x1 in zip(xs, xs[1:]):
            if y1 > y0 and x1 > x0:
                tiles.append(Tile(y0, y1, x0, x1, max(0, y0 - halo), min(height, y1 + halo),
                                  max(0, x0 - halo), min(width, x1 + halo)))
    return tiles


def _window(image: torch.Tensor, tile: Tile) -> torch.Tensor:
    return image[..., tile.wy0:tile.wy1, tile.wx0:tile.wx1]


def _core_features(vgg: VGG19Features, window: torch.Tensor, tile: Tile, layers: list[str]) -> dict[str, torch.Tensor]:
    """The tile's core features at each layer, from a forward pass over its window."""
    feats = vgg(window, layers)
    return {n: f[(..., *tile.core(pool_level(n)))] for n, f in feats.items()}


def _flat(features: torch.Tensor) -> torch.Tensor:
    return features.float().reshape(features.shape[0], features.shape[1], -1)


Kept = tuple[torch.Tensor, dict[str, torch.Tensor]]  # a tile's input window (leaf) and core features with graph
Guides = Mapping[str, torch.Tensor]  # per Gram layer: the active regions' masks (R, 1, h, w) at the layer's size


def _weighted(features: torch.Tensor, tile: Tile, layer: str, guides: Guides | None) -> torch.Tensor:
    """Core features flattened (B, C, P), or (B, R, C, P) weighted by each region's guide over the core."""
    f = _flat(features)
    if guides is None:
        return f
    level = pool_level(layer)
    g = guides[layer][..., tile.y0 >> level:tile.y1 >> level, tile.x0 >> level:tile.x1 >> level]
    return f.unsqueeze(1) * g.float().reshape(1, g.shape[0], 1, -1)


def _gram_norm(layer: str, channels: int, height: int, width: int, guides: Guides | None) -> torch.Tensor | int:
    """The Gram divisor of losses.gram_matrix (C*H*W), or of losses.guided_gram_matrix per region (1, R, 1, 1)."""
    level = pool_level(layer)
    if guides is None:
        return channels * (height >> level) * (width >> level)
    return channels * guide_area(guides[layer]).reshape(1, -1, 1, 1)


def loss_guides(loss_fn: PerceptualLoss, size: tuple[int, int], layers: Iterable[str]) -> Guides | None:
    """The guided loss's active-region masks at each layer's size for an image of `size`; None if unguided."""
    if not isinstance(loss_fn, GuidedPerceptualLoss):
        return None
    active = loss_fn.masks[[r for r, _ in loss_fn.regions]]
    return {n: layer_guides(active, (size[0] >> pool_level(n), size[1] >> pool_level(n))) for n in layers}


def _statistics(vgg: VGG19Features, image: torch.Tensor, tiles: list[Tile], gram_layers: list[str],
                map_layers: list[str], keep_last: bool, on_tile: TileCallback | None, passes: int,
                guides: Guides | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Kept | None]:
    """Pass 1: sum Gram contributions (per region with guides) and fill maps tile by tile; optionally keep
    the last tile's graph."""
    layers = list(dict.fromkeys([*gram_layers, *map_layers]))
    b, _, h, w = image.shape
    grams: dict[str, torch.Tensor] = {}
    maps: dict[str, torch.Tensor] = {}
    kept: Kept | None = None
    for i, tile in enumerate(tiles):
        last = keep_last and i == len(tiles) - 1
        with torch.set_grad_enabled(last):  # the last tile's graph serves pass 2 too: one forward fewer
            window = _window(image, tile).detach().requires_grad_(last)
            feats = _core_features(vgg, window, tile, layers)
        if last:
            kept = (window, feats)
        with torch.no_grad(), torch.autocast(device_type=image.device.type, enabled=False):
            for n in gram_layers:
                f = _weighted(feats[n], tile, n, guides)
                part = torch.matmul(f, f.transpose(-1, -2))
                grams[n] = grams[n] + part if n in grams else part
            for n in map_layers:
                level, f = pool_level(n), feats[n]
                if n not in maps:
                    maps[n] = torch.zeros(b, f.shape[1], h >> level, w >> level, device=image.device)
                maps[n][..., tile.y0 >> level:tile.y1 >> level, tile.x0 >> level:tile.x1 >> level] = f.float()
        if on_tile:
            on_tile(i + 1, passes)
    for n in gram_layers:  # the same normalisation as losses.gram_matrix (guided_gram_matrix with guides)
        grams[n] = grams[n] / _gram_norm(n, grams[n].shape[-1], h, w, guides)
    return grams, maps, kept


def tiled_statistics(vgg: VGG19Features, image: torch.Tensor, tiles: list[Tile], gram_layers: Iterable[str],
                     map_layers: Iterable[str], on_tile: TileCallback | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Whole-image Gram matrices (B, C, C, as losses.gram_matrix) and fp32 feature maps, one tile at a time."""
    grams, maps, _ = _statistics(vgg, image, tiles, list(gram_layers), list(map_layers), False, on_tile,
                                 len(tiles))
    return grams, maps


def tiled_backward(vgg: VGG19Features, image: torch.Tensor, tiles: list[Tile], gram_grads: Mapping[str, torch.Tensor],
                   map_grads: Mapping[str, torch.Tensor], on_tile: TileCallback | None = None,
                   kept: Kept | None = None, guides: Guides | None = None) -> torch.Tensor:
    """Exact d(loss)/d(image) from dL/dGram and dL/dFeatureMap, recomputing each tile's features with grad.

    `kept` holds the last tile's window and features from pass 1; that tile goes first, freeing its graph.
    """
    layers = list(dict.fromkeys([*gram_grads, *map_grads]))
    h, w = image.shape[-2:]
    grad = torch.zeros(image.shape, dtype=torch.float32, device=image.device)
    order = [tiles[-1], *tiles[:-1]] if kept is not None else tiles
    done = len(tiles) - (1 if kept is not None else 0)
    for i, tile in enumerate(order):
        if i == 0 and kept is not None:
            window, feats = kept
            kept = None
        else:
            window = _window(image, tile).detach().requires_grad_(True)
            feats = _core_features(vgg, window, tile, layers)
        with torch.autocast(device_type=image.device.type, enabled=False):
            surrogate = window.new_zeros((), dtype=torch.float32)
            for n, g in gram_grads.items():
                f = _weighted(feats[n], tile, n, guides)
                norm = _gram_norm(n, f.shape[-2], h, w, guides)
                surrogate = surrogate + (torch.matmul(g.float(), f) * f / norm).sum()
            for n, g in map_grads.items():
                level = pool_level(n)
                core = g[..., tile.y0 >> level:tile.y1 >> level, tile.x0 >> level:tile.x1 >> level]
                surrogate = surrogate + (core * feats[n].float()).sum()
        if surrogate.requires_grad:
            surrogate.backward()
            _window(grad, tile).add_(window.grad.float())  # halo pixels get their share from every window
        del window, feats, surrogate
        if on_tile:
            on_tile(done + i + 1, done + len(tiles))
    return grad


def tiled_loss(loss_fn: PerceptualLoss, image: torch.Tensor, content_targets: Mapping[str, torch.Tensor],
               grams: Mapping[str, torch.Tensor], tile: int, on_tile: TileCallback | None = None) -> LossTerms:
    """loss_fn(image, ...) computed on tiles, with image.grad set to the exact whole-image gradient."""
    style_layers = [n for n in loss_fn.style_layers if loss_fn.style_weight > 0]
    if isinstance(loss_fn, GuidedPerceptualLoss) and not loss_fn.regions:
        style_layers = []  # no region takes part: no style term
    content_layers = [n for n in loss_fn.content_layers if n in content_targets]
    guides = loss_guides(loss_fn, tuple(image.shape[-2:]), style_layers)
    layers = list(dict.fromkeys([*style_layers, *content_layers]))
    if image.grad is None:
        image.grad = torch.zeros_like(image)
    if not layers:
        terms = loss_fn.combine(image, {}, {}, content_targets, grams)
    else:
        tiles = plan_tiles(*image.shape[-2:], tile, halo_px(layers), alignment(layers))
        passes = 2 * len(tiles) - 1
        image_grams, maps, kept = _statistics(loss_fn.vgg, image.detach(), tiles, style_layers, content_layers,
                                              True, on_tile, passes, guides)
        image_grams = {n: g.requires_grad_(True) for n, g in image_grams.items()}
        maps = {n: m.requires_grad_(True) for n, m in maps.items()}
        terms = loss_fn.combine(image, maps, image_grams, content_targets, grams)
    if terms.total.requires_grad:
        terms.total.backward()  # into the Gram and map leaves, and into image.grad for the TV term
    if layers:
        g_grads = {n: g.grad for n, g in image_grams.items() if g.grad is not None}
        m_grads = {n: m.grad for n, m in maps.items() if m.grad is not None}
        image.grad += tiled_backward(loss_fn.vgg, image, tiles, g_grads, m_grads, on_tile, kept,
                                     guides).to(image.grad.dtype)
    return LossTerms(*(t.detach() for t in terms))


@torch.no_grad()
def tiled_style_grams(vgg: VGG19Features, style_images: list[torch.Tensor], blend_weights: list[float] | None,
                      layers: Iterable[str], tile: int) -> dict[str, torch.Tensor]:
    """losses.style_grams computed on tiles: the blended Gram targets of large style images."""
    layers = list(layers)

    def grams_of(image: torch.Tensor) -> dict[str, torch.Tensor]:
        tiles = plan_tiles(*image.shape[-2:], tile, halo_px(layers), alignment(layers))
        return tiled_statistics(vgg, image, tiles, layers, [])[0]
    return style_grams(vgg, style_images, blend_weights, layers, grams_of)


@torch.no_grad()
def tiled_region_style_grams(vgg: VGG19Features, style_images: list[torch.Tensor], layers: Iterable[str],
                             tile: int) -> dict[str, torch.Tensor]:
    """losses.region_style_grams computed on tiles: each style image's own Gram (R, C, C) per layer."""
    layers = list(layers)
    per_style = [tiled_style_grams(vgg, [image], None, layers, tile) for image in style_images]
    return {n: torch.cat([grams[n] for grams in per_style]) for n in layers}


@torch.no_grad()
def tiled_content_targets(loss_fn: PerceptualLoss, content: torch.Tensor, tile: int) -> dict[str, torch.Tensor]:
    """PerceptualLoss.content_targets computed on tiles."""
    if not loss_fn.content_layers or loss_fn.content_weight == 0:
        return {}
    layers = list(loss_fn.content_layers)
    tiles = plan_tiles(*content.shape[-2:], tile, halo_px(layers), alignment(layers))
    return tiled_statistics(loss_fn.vgg, content, tiles, [], layers)[1]
