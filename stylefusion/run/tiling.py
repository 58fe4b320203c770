"""Exact tiled inference of a transformer network: any image size within a memory budget.

A whole-image pass keeps several full-size activation maps alive (about 750 bytes per pixel in fp32), so a
48-megapixel photo needs ~36 GB. Here the network runs as a chain of layers over tiles instead, and the
result is the same as one whole-image pass (up to float rounding), for two reasons:
- Halos are exact: each tile is computed from an input window that covers its whole receptive field, and
  reflection padding is applied only where a window touches the image border, exactly as the whole-image
  pass pads there. The window is found by projecting the tile back through every layer; the forward pass
  tracks which rows and columns of each intermediate map are fully known and keeps only those.
- Instance-norm statistics are those of the whole image: before a norm is applied, one pass over the tiles
  computes the layers up to it and gathers per-channel mean and variance of the whole map (combined with
  Chan et al.'s parallel formula). A later pass then applies the norm with those statistics.
Recomputing everything up to each norm would cost many forwards; so some pre-norm maps are stored whole (the
small ones: a quarter- or sixteenth-resolution map has 8-16 values per input pixel, the full-resolution ones
32) and later passes start from them. `plan_tiling` picks what to store and the tile size from the budget.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, non_finite_output
from ..core.memory import format_bytes
from ..networks.layers import Conv, Layer, layer_channels, layer_sizes, Norm, ReLU, Sigmoid, SkipAdd, SkipSave
from ..networks.transformer import TransformerNet

# Peak bytes per pixel of a whole-image pass for a network that does not state its own PEAK_BYTES_PER_PIXEL:
# the standard network's, the larger of the two architectures.
UNTILED_BYTES_PER_PIXEL = TransformerNet.PEAK_BYTES_PER_PIXEL
# Full-resolution tile side (px): tiles smaller than this spend most of their work on halos.
MIN_TILE = 32
# Stored maps at least this large get their own memory mapping (see TiledRunner._empty_map).
MAPPED_MAP_BYTES = 64 << 20
# Largest tile side tried when the budget allows; larger tiles gain nothing measurable (bench/tiled.py).
MAX_TILE = 1024


# ----------------------------------------------------------------------------------------- boxes and halos
@dataclass(frozen=True)
class Box:
    """Rows [y0, y1) and columns [x0, x1) of a map."""
    y0: int
    y1: int
    x0: int
    x1: int

    def within(self, outer: "Box") -> tuple[slice, slice]:
        """Index of this box inside a tensor that holds `outer`."""
        return slice(self.y0 - outer.y0, self.y1 - outer.y0), slice(self.x0 - outer.x0, self.x1 - outer.x0)


def _back_span(lo: int, hi: int, layer: Conv, size_up: int) -> tuple[int, int]:
    """Input rows a conv needs for output rows [lo, hi), clipped to its (upsampled) input, then un-upsampled."""
    start = max(0, lo * layer.stride - layer.pad)
    stop = min(size_up, (hi - 1) * layer.stride - layer.pad + layer.kernel)
    f = layer.upsample
    return start // f, -(-stop // f)


def back_project(layers: Sequence[Layer], sizes: Sequence[tuple[int, int]], box: Box) -> Box:
    """The box of the chain's input needed to compute `box` of its output (the receptive field)."""
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, Conv):
            h, w = sizes[i]
            y0, y1 = _back_span(box.y0, box.y1, layer, h * layer.upsample)
            x0, x1 = _back_span(box.x0, box.x1, layer, w * layer.upsample)
            box = Box(y0, y1, x0, x1)
    return box


def _conv_forward(layer: Conv, x: torch.Tensor, box: Box, size: tuple[int, int]) -> tuple[torch.Tensor, Box]:
    """Run a conv on the window `box` of its input map (full size `size`); returns the rows and columns of
    its output that the window fully determines, and their box. Pads only at the map's own border."""
    (h, w), f, p, s, k = size, layer.upsample, layer.pad, layer.stride, layer.kernel
    if f > 1:
        x = F.interpolate(x, scale_factor=f, mode="nearest")
        box, h, w = Box(box.y0 * f, box.y1 * f, box.x0 * f, box.x1 * f), h * f, w * f
    top, bottom = (p if box.y0 == 0 else 0), (p if box.y1 == h else 0)
    left, right = (p if box.x0 == 0 else 0), (p if box.x1 == w else 0)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), mode="reflect")

    def span(start: int, stop: int, before: int, after: int) -> tuple[int, int, int]:
        first = -(-(start - before + p) // s)           # first output whose window starts inside the tile
        offset = first * s - p - (start - before)       # input rows to drop so windows align with the stride
        count = (stop + after - (first * s - p) - k) // s + 1
        return first, offset, count

    oy, dy, ny = span(box.y0, box.y1, top, bottom)
    ox, dx, nx = span(box.x0, box.x1, left, right)
    x = x[..., dy:dy + (ny - 1) * s + k, dx:dx + (nx - 1) * s + k]
    return _valid_conv(layer.module, x), Box(oy, oy + ny, ox, ox + nx)


def _valid_conv(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's convolution without its padding."""
    if hasattr(module, "forward_valid"):
        return module.forward_valid(x)
    conv = module.conv2d
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


# ------------------------------------------------------------------------------------- whole-image statistics
@dataclass
class RunningStats:
    """Per-channel count, mean and sum of squared deviations, merged tile by tile (Chan et al. 1979)."""
    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Merge the statistics of a (1, C, h, w) tile."""
        n = x.shape[-2] * x.shape[-1]
        # As (pixels, C) rows, summed over the outer dimension (twice as fast as var_mean over (0, 2, 3) of a
        # channels_last tensor), shifted by one pixel's values so that fp32 sums of squares do not cancel.
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).float()
        shift = rows[0].clone()
        deviation = rows - shift
        tile_mean = deviation.sum(0).double() / n
        m2 = deviation.square_().sum(0).double() - tile_mean.square() * n
        mean = tile_mean + shift.double()
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def affine(self, norm: nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) so that the norm is x * scale + shift with these statistics (biased variance)."""
        var = self.m2 / self.count
        scale = norm.weight.double() / torch.sqrt(var + norm.eps)
        shift = norm.bias.double() - self.mean * scale
        return scale.to(dtype).view(1, -1, 1, 1), shift.to(dtype).view(1, -1, 1, 1)


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Stage:
    """One pass over tiles: run layers [start, stop) from the map stored at `start` (0: the input image).

    kind "stats" gathers the whole-map statistics of the norm at `stop`; "store" does that and keeps the
    pre-norm map at `stop` whole; "keep" keeps the map at `stop` (a residual block's input) whole; "pointwise"
    applies pointwise layers in place (no halo), turning the map at `start` into the map at `stop`; "output"
    writes the network's output. `skips` maps a SkipAdd of the chain whose residual block began before `start`
    to the stored map holding that block's input.
    """
    start: int
    stop: int
    kind: str
    skips: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class StorePolicy:
    """Which pre-norm maps are stored whole: those with at most `limit` values per input pixel, and the
    first norm of a residual block only when `first_in_block` (it costs a third map, saves a conv)."""
    limit: float
    first_in_block: bool


POLICIES = (StorePolicy(16, True), StorePolicy(8, False), StorePolicy(0, False))


def plan_stages(layers: Sequence[Layer], values_per_pixel: Sequence[float], policy: StorePolicy) -> list[Stage]:
    """Split the network into passes over tiles; `values_per_pixel[i]` is the size of the map at i."""
    stages: list[Stage] = []
    start, block_input, in_block, first_norm = 0, None, False, False
    skip_of: dict[int, int] = {}

    def skips(stop: int) -> tuple[tuple[int, int], ...]:
        return tuple((j, skip_of[j]) for j in range(start, stop) if j in skip_of)

    for i, layer in enumerate(layers):
        pointwise_chain = start > 0 and all(not isinstance(x, Conv) for x in layers[start:i])
        if isinstance(layer, SkipSave):
            if pointwise_chain and start < i:  # materialise the block's input so its skip can read it
                stages.append(Stage(start, i, "pointwise", skips(i)))
                start = i
            elif start < i and values_per_pixel[i] <= policy.limit:  # convs with no norm lead here (the arbitrary
                stages.append(Stage(start, i, "keep", skips(i)))  # network's encoder): keep, not recompute per norm
                start = i
            in_block, first_norm = True, True
            block_input = i if start == i else None  # None: the block's input lives inside the chain
        elif isinstance(layer, SkipAdd):
            if block_input is not None:
                skip_of[i] = block_input
            if pointwise_chain:  # the block ends on pointwise work from a stored map: write its output
                stages.append(Stage(start, i + 1, "pointwise", skips(i + 1)))
                start = i + 1
            in_block, block_input = False, None
        elif isinstance(layer, Norm):
            store = values_per_pixel[i] <= policy.limit and (not in_block or block_input is not None)
            if in_block and first_norm and not policy.first_in_block:
                store = False
            stages.append(Stage(start, i, "store" if store else "stats", skips(i)))
            if store:
                start = i
            first_norm = False
    stages.append(Stage(start, len(layers), "output", skips(len(layers))))
    return stages


def _live_after(stages: Sequence[Stage], n: int) -> set[int]:
    """Stored maps that stages n.. still read."""
    return {s.start for s in stages[n:]} | {src for s in stages[n:] for _, src in s.skips}


def peak_map_values(stages: Sequence[Stage], values_per_pixel: Sequence[float]) -> float:
    """The most values per input pixel held in stored maps at once (the input image not counted)."""
    live: dict[int, float] = {}
    peak = 0.0
    for n, stage in enumerate(stages):
        if stage.kind in ("store", "keep"):
            live[stage.stop] = values_per_pixel[stage.stop]
        elif stage.kind == "pointwise":
            live[stage.stop] = live.pop(stage.start, 0.0)  # written in place
        peak = max(peak, sum(live.values()))
        keep = _live_after(stages, n + 1)
        live = {k: v for k, v in live.items() if k in keep}
    return peak


def stage_cost(layers: Sequence[Layer], stages: Sequence[Stage], channels: Sequence[int],
               sizes: Sequence[tuple[int, int]]) -> float:
    """Multiply-adds of all passes (halos not counted): what a plan costs relative to another."""
    total = 0.0
    for stage in stages:
        for j in range(stage.start, stage.stop):
            layer = layers[j]
            if isinstance(layer, Conv):
                h, w = sizes[j + 1]
                total += layer.kernel ** 2 * channels[j] * channels[j + 1] * h * w
    return total


@dataclass(frozen=True)
class TilePlan:
    """How one image runs: its passes, the full-resolution tile side and the dtype of the stored maps."""
    stages: tuple[Stage, ...]
    tile: int
    store_dtype: torch.dtype
    map_bytes: int
    work_bytes: int


def _work_bytes(tile: int, bytes_per_pixel: float) -> int:
    """Working memory of one tile: a whole-image pass's bytes per pixel over the tile and a halo margin."""
    return int(bytes_per_pixel * (tile + 32) ** 2)


def plan_tiling(layers: Sequence[Layer], height: int, width: int, budget: int, compute_dtype: torch.dtype,
                tile: int | None = None, bytes_per_pixel: float = UNTILED_BYTES_PER_PIXEL) -> TilePlan:
    """The cheapest plan whose stored maps and tile work fit `budget` bytes; ConfigError when none does.

    Plans differ in which pre-norm maps they keep (more maps: fewer recomputed layers) and in keeping maps in
    the compute dtype or bf16 (half the memory, about 8 bits of mantissa: bench/tiled.py measures the PSNR).
    """
    sizes = layer_sizes(layers, height, width)
    channels = layer_channels(layers)
    pixels = height * width
    vpp = [c * h * w / pixels for c, (h, w) in zip(channels, sizes)]
    dtypes = [compute_dtype] + ([torch.bfloat16] if compute_dtype != torch.bfloat16 else [])
    candidates = []
    for policy in POLICIES:
        stages = plan_stages(layers, vpp, policy)
        cost = stage_cost(layers, stages, channels, sizes)
        for rank, dtype in enumerate(dtypes):
            map_bytes = int(peak_map_values(stages, vpp) * pixels * torch.finfo(dtype).bits // 8)
            candidates.append((cost, rank, tuple(stages), dtype, map_bytes))
    candidates.sort(key=lambda c: (c[0], c[1]))
    longest = max(height, width)
    if tile is not None:
        tile = min(tile, longest)  # a tile larger than the image is the whole image
    for _, _, stages, dtype, map_bytes in candidates:
        if tile is not None:
            side = tile
        else:
            room = budget - map_bytes
            if room <= 0:
                continue
            side = min(MAX_TILE, longest, int(math.sqrt(room / bytes_per_pixel)) - 32)
            if side < min(MIN_TILE, longest):
                continue
        work = _work_bytes(side, bytes_per_pixel)
        if map_bytes + work <= budget:
            return TilePlan(stages, side, dtype, map_bytes, work)
    smallest = min(c[4] for c in candidates) + _work_bytes(tile or MIN_TILE, bytes_per_pixel)
    raise ConfigError(f"a {width}x{height} image does not fit in the memory budget of {format_bytes(budget)} "
                      f"even in tiles (it needs at least {format_bytes(smallest)}): raise --max_memory or "
                      f"lower --max_size")


# ------------------------------------------------------------------------------------------------- running
def tiles(height: int, width: int, side: int) -> list[Box]:
    """Split a map into a grid of near-equal boxes of at most `side` (at least 1) on each axis."""
    def cuts(length: int) -> list[int]:
        count = max(1, -(-length // max(1, side)))
        return [round(k * length / count) for k in range(count + 1)]

    ys, xs = cuts(height), cuts(width)
    return [Box(y0, y1, x0, x1) for y0, y1 in zip(ys, ys[1:]) for x0, x1 in zip(xs, xs[1:])]


def _reflect_index(start: int, stop: int, size: int, device: torch.device) -> torch.Tensor | slice:
    """Rows [start, stop) of a map reflect-padded past `size` at its far end, as an index into the map."""
    if stop <= size:
        return slice(start, stop)
    idx = torch.arange(start, stop, device=device)
    return torch.where(idx < size, idx, 2 * (size - 1) - idx)


def read_window(image: torch.Tensor, box: Box) -> torch.Tensor:
    """`box` of `image` where rows/columns past its end are reflected (the input's pad to a multiple of 4)."""
    h, w = image.shape[-2:]
    rows = _reflect_index(box.y0, box.y1, h, image.device)
    cols = _reflect_index(box.x0, box.x1, w, image.device)
    out = image[..., rows, :] if isinstance(rows, slice) else image.index_select(-2, rows)
    return out[..., cols] if isinstance(cols, slice) else out.index_select(-1, cols)


@dataclass
class TileProgress:
    """Reported after each tile of each pass."""
    done: int
    total: int


class TiledRunner:
    """Runs one image through the network's layers in tiles (see the module docstring for why it is exact)."""

    def __init__(self, layers: Sequence[Layer], compute_dtype: torch.dtype, channels_last: bool,
                 input_scale: float = 255.0) -> None:
        self.layers = list(layers)
        self.input_scale = input_scale  # the network works in 0-255: windows are scaled, the output scaled back
        self.compute_dtype = compute_dtype
        self.channels_last = channels_last

    def _prepare(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A new tensor (never a view of a stored map: layers work on it in place) in the compute layout."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(device=device, dtype=self.compute_dtype, memory_format=layout, copy=True)

    def _empty_map(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A stored map in the compute layout, so tiles are read and written without transposing.

        A large CPU map gets its own anonymous memory mapping, returned to the OS when the map is freed: from
        the heap (where retain_freed_memory() sends allocations below 1 GB) its hole would stay in the
        process and fragment it.
        """
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        nbytes = math.prod(shape) * torch.finfo(dtype).bits // 8
        if device.type != "cpu" or nbytes < MAPPED_MAP_BYTES:
            return torch.empty(shape, dtype=dtype, device=device, memory_format=layout)
        n, c, h, w = shape
        flat = torch.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype)
        if self.channels_last:
            return flat.view(n, h, w, c).permute(0, 3, 1, 2)
        return flat.view(n, c, h, w)

    def _forward(self, stage: Stage, x: torch.Tensor, box: Box, sizes: Sequence[tuple[int, int]],
                 affine: dict[int, tuple[torch.Tensor, torch.Tensor]], maps: dict[int, torch.Tensor]
                 ) -> tuple[torch.Tensor, Box]:
        """Run the stage's layers on a window `box` of its input map; returns what the window determines."""
        saved: list[tuple[torch.Tensor, Box]] = []
        for i in range(stage.start, stage.stop):
            layer = self.layers[i]
            if saved and x is saved[-1][0] and not isinstance(layer, Conv):
                x = x.clone()  # pointwise layers work in place: keep the residual block's input intact
            if isinstance(layer, Conv):
                x, box = _conv_forward(layer, x, box, sizes[i])
            elif isinstance(layer, Norm):
                scale, shift = affine[i]
                x = x.mul_(scale).add_(shift)
            elif isinstance(layer, ReLU):
                x = x.relu_()
            elif isinstance(layer, Sigmoid):
                x = x.sigmoid_().mul_(layer.scale)
            elif isinstance(layer, SkipSave):
                saved.append((x, box))
            else:  # SkipAdd: the block's input, from the chain or from a stored map
                source = dict(stage.skips).get(i)
                if source is not None:
                    skip = maps[source][..., box.y0:box.y1, box.x0:box.x1]
                else:
                    skip_x, skip_box = saved.pop()
                    rows, cols = box.within(skip_box)
                    skip = skip_x[..., rows, cols]
                x = x.add_(skip)
        return x, box

    def _output(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A tile of network output (0-255 range) as `dtype`: uint8 rounded, float in [0, 1]."""
        y = y.float()
        if not bool(torch.isfinite(y).all()):
            raise non_finite_output()
        if dtype == torch.uint8:
            return y.clamp_(0.0, 255.0).round_().to(dtype)
        return y.div_(self.input_scale).clamp_(0.0, 1.0).to(dtype)

    def run(self, image: torch.Tensor, plan: TilePlan, padded: tuple[int, int], device: torch.device,
            progress: Callable[[TileProgress], None] | None = None, output: torch.Tensor | None = None
            ) -> torch.Tensor:
        """Stylise a (1, 3, H, W) image (float in [0, 1], or uint8 in [0, 255]) whose network input is
        `padded` (reflect-padded at the far ends); returns the (1, 3, H, W) output in `image`'s dtype and range
        on its device (written into `output` when given). A non-finite output pixel raises ModelError."""
        height, width = image.shape[-2:]
        sizes = layer_sizes(self.layers, *padded)
        full_h = padded[0]
        maps: dict[int, torch.Tensor] = {}
        affine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        output = torch.empty_like(image) if output is None else output
        jobs = [(stage, tiles(*sizes[stage.stop], max(1, plan.tile * sizes[stage.stop][0] // full_h)))
                for stage in plan.stages]
        total, done = sum(len(boxes) for _, boxes in jobs), 0
        for n, (stage, boxes) in enumerate(jobs):
            source = maps.get(stage.start)
            if stage.kind in ("store", "keep"):
                channels = layer_channels(self.layers)[stage.stop]
                maps[stage.stop] = self._empty_map((1, channels, *sizes[stage.stop]), plan.store_dtype, device)
            stats = RunningStats() if stage.kind in ("stats", "store") else None
            for core in boxes:
                if stage.kind == "pointwise":
                    window = core
                else:
                    window = back_project(self.layers[stage.start:stage.stop], sizes[stage.start:stage.stop + 1],
                                          core)
                if stage.start == 0:
                    x = self._prepare(read_window(image, window), device)
                    x = x if image.dtype == torch.uint8 else x.mul_(self.input_scale)
                else:
                    x = self._prepare(source[..., window.y0:window.y1, window.x0:window.x1], device)
                y, box = self._forward(stage, x, window, sizes, affine, maps)
                rows, cols = core.within(box)
                y = y[..., rows, cols]
                if stats is not None:
                    stats.add(y)
                if stage.kind in ("store", "keep"):
                    maps[stage.stop][..., core.y0:core.y1, core.x0:core.x1] = y
                elif stage.kind == "pointwise":
                    source[..., core.y0:core.y1, core.x0:core.x1] = y
                elif stage.kind == "output":
                    top, left = core.y0, core.x0
                    keep_h, keep_w = min(core.y1, height) - top, min(core.x1, width) - left
                    if keep_h > 0 and keep_w > 0:
                        output[..., top:top + keep_h, left:left + keep_w] = self._output(y[..., :keep_h, :keep_w],
                                                                                         output.dtype)
                done += 1
                if progress is not None:
                    progress(TileProgress(done, total))
            if stage.kind == "pointwise":
                maps[stage.stop] = maps.pop(stage.start)
            if stats is not None:
                affine[stage.stop] = stats.affine(self.layers[stage.stop].module, self.compute_dtype)
            keep = _live_after(plan.stages, n + 1)
            maps = {k: v for k, v in maps.items() if k in keep}
        return output
