"""Feed-forward stylisation (Johnson et al. 2016): run a transformer network on batches, and batch image mode.

`Stylizer` prepares a loaded network once for one device and precision; calling it maps a (B, 3, H, W)
batch in [0, 1] to the stylised batch in [0, 1] of the same size (the video mode calls it on frames).
`stylize_folder(ImageConfig)` stylises a file or a folder tree into a mirrored output tree (image mode); it is
`plan_images` + `stylize_images` with the model, device and torchrun share set up.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.color import check_mode, preserve_color
from ..core.device import autocast, check_precision, resolve_device, resolve_precision
from ..core.distributed import distributed_context, rank_device
from ..core.errors import ConfigError, InputImageError, OutputError, non_finite_output
from ..core.images import (SAVE_FORMATS, IMAGE_EXTENSIONS, first_missing, is_image_file, load_pil, pil_to_uint8,
                           prepare_output_dir, remove_empty_tree, resize_longest, save_image, walk_images)
from ..core.memory import default_budget
from ..networks.cin import choose_style
from ..networks.inference import for_inference, retain_freed_memory
from ..networks.layers import network_layers
from ..networks.model_files import load_model
from ..networks.transformer import MIN_INPUT_SIDE
from .control import Control, ControlledStylizer
from .tiling import UNTILED_BYTES_PER_PIXEL, TiledRunner, TileProgress, TilePlan, plan_tiling

# Two stride-2 convs then two 2x upsamples: sides that are multiples of 4 come back unchanged.
SIZE_MULTIPLE = 4
# Inputs whose extension save_image cannot write (palette GIF, greyscale PGM) get a PNG output.
_OUTPUT_FALLBACK_SUFFIX = ".png"


class Stylizer:
    """A transformer network prepared once for inference on one device and precision.

    Call it on a float batch (B, 3, H, W) in [0, 1] on any device; it returns the stylised batch in [0, 1],
    same shape, dtype and device. A uint8 batch in [0, 255] gives a uint8 result: a large photo then needs a
    quarter of the memory for itself and its result. The network sees the batch reflect-padded to a multiple of 4 and cropped back.
    Images that would not fit `max_memory` bytes (default: a safe share of the free memory) in one pass run
    one at a time, in tiles if need be (tiling.py: the same result as one pass); `tile_size` forces tiles.
    Set `on_tile` to a callable to hear of each tile of a tiled image.
    """

    def __init__(self, network: nn.Module, device: torch.device | str | None = None, precision: str = "fp32",
                 channels_last: bool | None = None, max_memory: int | None = None,
                 tile_size: int | None = None) -> None:
        network = getattr(network, "module", network)  # unwrap DistributedDataParallel
        if device is None:
            device = next(network.parameters()).device
        self.device = torch.device(device)
        check_precision(precision, self.device)
        precision = self.precision = resolve_precision(precision, self.device)
        # channels_last: faster for the convs on CPU (oneDNN) and CUDA (tensor cores); MPS prefers NCHW.
        self.channels_last = self.device.type in ("cpu", "cuda") if channels_last is None else channels_last
        net = for_inference(network, self.device)  # a copy: the caller's network is left as it is
        # On the CPU, bf16 runs as a bf16 network rather than under autocast: CPU autocast keeps reflection
        # padding and instance norm in fp32, converting every activation twice (measured in bench/fast.py).
        self._pure_low_precision = self.device.type == "cpu" and precision == "bf16"
        self.compute_dtype = torch.bfloat16 if self._pure_low_precision else torch.float32
        net = net.to(device=self.device, dtype=self.compute_dtype)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.network = net
        if max_memory is not None and max_memory <= 0:
            raise ConfigError(f"the memory budget must be positive, got {max_memory} bytes")
        if tile_size is not None and tile_size < 1:
            raise ConfigError(f"--tile_size must be at least 1, got {tile_size}")
        self.max_memory = max_memory if max_memory is not None else default_budget(self.device)
        self.tile_size = tile_size
        # Each architecture states its own peak; a bf16 network holds its activations in half the bytes.
        peak = getattr(network, "PEAK_BYTES_PER_PIXEL", UNTILED_BYTES_PER_PIXEL)
        self.bytes_per_pixel = peak * (0.5 if self._pure_low_precision else 1.0)
        self.on_tile: Callable[[TileProgress], Any] | None = None
        self._runner: TiledRunner | None = None

    def batch_limit(self, height: int, width: int) -> int:
        """How many images of this size fit one whole pass in the budget (0: each needs tiles)."""
        if self.tile_size is not None:
            return 0
        padded = (height + -height % SIZE_MULTIPLE) * (width + -width % SIZE_MULTIPLE)
        return int(self.max_memory // (self.bytes_per_pixel * padded))

    def tile_plan(self, height: int, width: int) -> TilePlan:
        """How an image of this size runs in tiles within the budget (ConfigError when it cannot)."""
        runner = self._tiled_runner()
        return plan_tiling(runner.layers, height + -height % SIZE_MULTIPLE, width + -width % SIZE_MULTIPLE,
                           self.max_memory, self.compute_dtype, self.tile_size, self.bytes_per_pixel)

    def _tiled_runner(self) -> TiledRunner:
        if self._runner is None:
            self._runner = TiledRunner(network_layers(self.network), self.compute_dtype, self.channels_last)
        return self._runner

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not (isinstance(batch, torch.Tensor) and batch.dim() == 4 and batch.shape[1] == 3
                and (batch.is_floating_point() or batch.dtype == torch.uint8)):
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ConfigError(f"expected a float or uint8 batch of shape (B, 3, H, W), got {shape}")
        height, width = batch.shape[-2:]
        check_image_size(height, width)
        fits = self.batch_limit(height, width)
        if fits >= batch.shape[0]:
            out = self._whole(batch)
        elif fits >= 1:  # one image at a time fits: smaller batches
            out = _joined([self._whole(part) for part in batch.split(fits)])
        else:
            plan = self.tile_plan(height, width)
            out = _joined([self._tiled(image[None], plan) for image in batch])
        return out

    def _tiled(self, image: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """One (1, 3, H, W) image through the network in tiles."""
        height, width = image.shape[-2:]
        padded = (height + -height % SIZE_MULTIPLE, width + -width % SIZE_MULTIPLE)
        amp = contextlib.nullcontext() if self._pure_low_precision else autocast(self.device, self.precision)
        output = torch.empty_like(image)  # made outside inference mode: callers may modify it in place
        with torch.inference_mode(), amp:
            return self._tiled_runner().run(image, plan, padded, self.device, self.on_tile, output)

    def _whole(self, batch: torch.Tensor) -> torch.Tensor:
        """The batch through the network in one pass."""
        height, width = batch.shape[-2:]
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True).float()
            pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            if batch.is_floating_point():
                x = x.mul(255.0)  # the network works in the 0-255 range
            x = x.to(self.compute_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            amp = (contextlib.nullcontext() if self._pure_low_precision
                   else autocast(self.device, self.precision))
            with amp:
                y = self.network(x)
        # Outside inference mode, so callers get an ordinary tensor they may modify in place.
        y = y[..., :height, :width]
        if not torch.isfinite(y).all():  # clamp() keeps NaN: a broken model would write black images
            raise non_finite_output()
        if batch.dtype == torch.uint8:
            y = y.float().clamp(0.0, 255.0).round().to(torch.uint8)
        else:
            y = y.to(batch.dtype).div(255.0).clamp(0.0, 1.0)
        return y.to(batch.device).contiguous()


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts as one batch (a single part as it is: no copy of a large image)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def stylise(network: nn.Module | Stylizer, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Stylise a (B, 3, H, W) batch in [0, 1] with a network (prepared on the fly) or a ready Stylizer."""
    stylizer = network if isinstance(network, Stylizer) else Stylizer(network, precision=precision)
    return stylizer(batch)


def check_image_size(height: int, width: int, name: str = "image") -> None:
    """Raise InputImageError when an image is smaller than the network can take."""
    if min(height, width) < MIN_INPUT_SIDE:
        raise InputImageError(f"{name} is too small ({width}x{height}): the network needs at least "
                              f"{MIN_INPUT_SIDE} pixels on each side")


# ---------------------------------------------------------------------------------------------- image mode
@dataclass(frozen=True)
class ImagePlan:
    """Which files to stylise and where each result goes (the output tree mirrors the input tree)."""

    input_path: Path
    output_dir: Path
    pairs: tuple[tuple[Path, Path], ...]
    single_file: bool
    unreadable: tuple[tuple[Path, str], ...] = ()  # sub-folders that could not be listed, and why

    def shard(self, rank: int, world_size: int) -> "ImagePlan":
        """This process's share under torchrun: every world_size-th file, so N processes take disjoint parts."""
        if world_size <= 1:
            return self
        return ImagePlan(self.input_path, self.output_dir, self.pairs[rank::world_size], self.single_file,
                         self.unreadable if rank == 0 else ())  # reported once


@dataclass(frozen=True)
class ImageOptions:
    """Image-mode settings: same-size images are stylised `batch_size` at a time."""

    batch_size: int = 4
    max_size: int | None = None  # downscale so the longest side is at most this (None: keep the size)
    preserve_color: str = "none"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size must be at least 1, got {self.batch_size}")
        if self.max_size is not None and self.max_size < MIN_INPUT_SIDE:
            raise ConfigError(f"--max_size {self.max_size} is too small: the network needs at least "
                              f"{MIN_INPUT_SIDE} pixels on each side")
        check_mode(self.preserve_color)


@dataclass(frozen=True)
class ImageProgress:
    """Reported after each input file: counts so far, and the error when this file was skipped."""

    done: int
    total: int
    stylised: int
    failed: int
    path: Path
    error: str | None = None


@dataclass(frozen=True)
class ImageSummary:
    """Outcome of a run: how many images were written, and which inputs (files, then folders) failed and why."""

    stylised: int
    failed: int
    failures: tuple[tuple[Path, str], ...]
    unreadable: tuple[tuple[Path, str], ...] = ()  # sub-folders that could not be listed (stylize_folder)


@dataclass
class ImageConfig:
    """What image mode stylises and how; the CLI fills it from argparse, library users directly."""

    input: str | os.PathLike                   # an image file, or a folder searched recursively
    output: str | os.PathLike                  # folder for the mirrored output tree
    model_path: str | os.PathLike | None = None  # not needed when a network is passed to stylize_folder
    # (a sequence of paths: one model per mask of `control`)
    batch_size: int = ImageOptions.batch_size
    max_size: int | None = None                # downscale so the longest side is at most this (None: keep)
    preserve_color: str = "none"
    device: str = "auto"                       # under torchrun, cuda means cuda:LOCAL_RANK
    precision: str = "auto"                    # auto: bf16 where the device computes it natively, else fp32
    max_memory: int | None = None              # bytes the network may use; larger images run in tiles
    tile_size: int | None = None               # force tiles of about this side (px)
    retain_freed_memory: bool = True           # keep glibc's freed buffers mapped (process-wide; see networks/inference.py)
    control: Control = Control()               # strength, masks (control.py)

    def options(self) -> ImageOptions:
        """The batching options, checked."""
        options = ImageOptions(self.batch_size, self.max_size, self.preserve_color)
        options.validate()
        return options


@dataclass(frozen=True)
class ImageStart:
    """Reported once before the first image: this process's share and what the model file says about itself."""

    total: int
    rank: int
    world_size: int
    output_dir: Path
    model_settings: dict[str, Any]
    unreadable: tuple[tuple[Path, str], ...]


def _output_name(relative: Path) -> Path:
    if relative.suffix.lower() in SAVE_FORMATS:
        return relative
    return relative.with_suffix(_OUTPUT_FALLBACK_SUFFIX)


def plan_images(input_path: str | os.PathLike, output_dir: str | os.PathLike) -> ImagePlan:
    """List the images of a file or folder (recursively) and their mirrored output paths; nothing is written.

    Refuses an output folder that is the input folder, and any output path that is an input file.
    """
    source, out = Path(input_path), Path(output_dir)
    if not source.exists():
        raise InputImageError(f"input not found: {source}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output directory is a file: {out}")
    out_resolved = out.resolve()
    single = source.is_file()
    root = source.parent if single else source
    unreadable: list[tuple[Path, str]] = []
    if out_resolved == root.resolve():
        raise OutputError(f"the output folder {out} is the input folder: the results would overwrite the "
                          f"inputs; choose another --output_images_dir")
    if single:
        if not is_image_file(source):
            raise InputImageError(f"not an image file (unknown extension '{source.suffix}'): {source}")
        inputs = [source]
    else:
        inputs = walk_images(source, out_resolved, unreadable)
        if not inputs:
            raise InputImageError(f"no image files found in {source} "
                                  f"(looked for {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})"
                                  + (f"; {len(unreadable)} unreadable, e.g. {unreadable[0][1]}" if unreadable else ""))
    pairs = tuple((path, out / _output_name(path.relative_to(root))) for path in inputs)
    resolved_inputs = {path.resolve() for path in inputs}
    for path, target in pairs:
        if target.resolve() in resolved_inputs:
            raise OutputError(f"refusing to overwrite an input file: {target} (choose another --output_images_dir)")
    return ImagePlan(source, out, pairs, single, tuple(unreadable))


@dataclass
class _Loaded:
    source: Path
    target: Path
    image: torch.Tensor | None
    error: str | None


def _load(source: Path, target: Path, max_size: int | None, max_bytes: int | None = None) -> _Loaded:
    """Decode one input (EXIF-upright RGB) as uint8, or as float [0, 1] when downscaled to max_size (the resized
    pixels are not rounded); errors become a message, not an exception. An input whose header says it would not
    fit `max_bytes` decoded is refused before decoding."""
    try:
        image = pil_to_uint8(load_pil(source, max_bytes))
        if max_size is not None and max(image.shape[-2:]) > max_size:
            image = resize_longest(_as_float(image), max_size)
        check_image_size(image.shape[-2], image.shape[-1], f"image {source}")
        return _Loaded(source, target, image, None)
    except InputImageError as exc:
        return _Loaded(source, target, None, str(exc))


def _prefetched(pairs: Iterable[tuple[Path, Path]], max_size: int | None, pool: ThreadPoolExecutor,
                ahead: int, max_bytes: int, budget: int | None = None) -> Iterator[_Loaded]:
    """Load images on a worker thread, up to `ahead` files in advance, so decoding overlaps the network; fewer
    when the decoded images are large (at most about `max_bytes` of them waiting). Each image must decode
    within `budget` bytes."""
    queue: deque[Future[_Loaded]] = deque()
    last_bytes = 0
    for source, target in pairs:
        queue.append(pool.submit(_load, source, target, max_size, budget))
        limit = ahead if last_bytes == 0 else max(1, min(ahead, max_bytes // last_bytes))
        while len(queue) > limit:
            item = queue.popleft().result()
            if item.image is not None:
                last_bytes = item.image.numel() * item.image.element_size()
            yield item
    while queue:
        yield queue.popleft().result()


def _as_float(image: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] as float (uint8 [0, 255] converted)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


def _save(image: torch.Tensor, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {target.parent}: {exc.strerror or exc}") from None
    save_image(image, target)


def _decode_budget(stylizer: Callable[[torch.Tensor], torch.Tensor]) -> int | None:
    """Bytes a photo may take decoded, in host memory: the network's budget where it runs on the CPU, else the
    host's own default (a GPU's budget says nothing of the host's RAM)."""
    on_cpu = torch.device(getattr(stylizer, "device", None) or "cpu").type == "cpu"
    return getattr(stylizer, "max_memory", None) if on_cpu else default_budget(torch.device("cpu"))


def stylize_images(plan: ImagePlan, stylizer: Callable[[torch.Tensor], torch.Tensor],
                   options: ImageOptions = ImageOptions(),
                   callback: Callable[[ImageProgress], Any] | None = None) -> ImageSummary:
    """Stylise every planned image with `stylizer` (a Stylizer), batching same-size images.

    Unreadable files of a folder are reported through `callback` and skipped; a single input file that
    cannot be read raises InputImageError instead.
    """
    options.validate()
    created = first_missing(plan.output_dir)
    prepare_output_dir(plan.output_dir)
    total = len(plan.pairs)
    counts = {"stylised": 0, "failed": 0}
    failures: list[tuple[Path, str]] = []
    saves: list[Future[None]] = []

    def report(item: _Loaded, error: str | None) -> None:
        counts["failed" if error else "stylised"] += 1
        if callback is not None:
            callback(ImageProgress(counts["stylised"] + counts["failed"], total, counts["stylised"],
                                   counts["failed"], item.source, error))

    def run(batch: list[_Loaded], writer: ThreadPoolExecutor) -> None:
        # Alone, an image goes as it was decoded (uint8 unless resized): a large photo stays small until tiled.
        content = (batch[0].image[None] if len(batch) == 1
                   else torch.stack([_as_float(item.image) for item in batch]))
        stylised = stylizer(content)
        for i, item in enumerate(batch):
            result = stylised[i]
            if options.preserve_color != "none":
                result = preserve_color(_as_float(result), _as_float(content[i]), options.preserve_color)
            saves.append(writer.submit(_save, result, item.target))
        # Surface a write error (disk full, ...) early, and never queue many results behind a slow disk; a large
        # image's result is written before the next image starts.
        large = batch_for((content.shape[-2], content.shape[-1])) < options.batch_size
        while saves and (saves[0].done() or len(saves) > (0 if large else 2 * options.batch_size)):
            saves.pop(0).result()
        for item in batch:
            report(item, None)

    # Never hold more than this many decoded images waiting for a same-size partner.
    max_pending = 2 * options.batch_size
    pending: dict[tuple[int, int], list[_Loaded]] = {}
    batch_limit = getattr(stylizer, "batch_limit", None)

    def batch_for(size: tuple[int, int]) -> int:  # large images go alone: the budget holds one at a time
        return options.batch_size if batch_limit is None else max(1, min(options.batch_size, batch_limit(*size)))

    prefetch_bytes = getattr(stylizer, "max_memory", 4 << 30) // 4
    budget = _decode_budget(stylizer)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="load") as loader, \
                ThreadPoolExecutor(1, thread_name_prefix="save") as writer:
            for item in _prefetched(plan.pairs, options.max_size, loader, options.batch_size + 1, prefetch_bytes,
                                    budget):
                if item.error is not None:
                    if plan.single_file:
                        raise InputImageError(item.error)
                    failures.append((item.source, item.error))
                    report(item, item.error)
                    continue
                size = (item.image.shape[-2], item.image.shape[-1])
                bucket = pending.setdefault(size, [])
                bucket.append(item)
                if len(bucket) >= batch_for(size):
                    run(pending.pop(size), writer)
                elif sum(len(b) for b in pending.values()) > max_pending:
                    run(pending.pop(next(iter(pending))), writer)  # the oldest size group goes partly filled
            for size in list(pending):
                run(pending.pop(size), writer)
            for future in saves:
                future.result()
    except BaseException:
        for future in saves:
            future.cancel()
        remove_empty_tree(created)
        raise
    if counts["stylised"] == 0:
        remove_empty_tree(created)
    return ImageSummary(counts["stylised"], counts["failed"], tuple(failures))


def image_device(name: str) -> torch.device:
    """The device image mode runs on: --device resolved, and under torchrun one GPU per process (LOCAL_RANK)."""
    return rank_device(resolve_device(name))


def model_paths(model_path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """One model path or several (one per mask) as a list."""
    return [model_path] if isinstance(model_path, (str, os.PathLike)) else list(model_path)


def load_networks(model_path: str | os.PathLike | Sequence[str | os.PathLike], control: Control,
                  map_location: str = "cpu") -> tuple[list[nn.Module], dict[str, Any]]:
    """The model(s) for a run, checked against `control` before any is loaded; the first model's settings."""
    paths = model_paths(model_path)
    control.validate(len(paths))
    loaded = [load_model(path, map_location) for path in paths]
    for path, (network, settings) in zip(paths, loaded):  # --style/--style_weights: every multi-style model
        choose_style(network, control.style, control.style_weights, settings.get("styles"), str(path))
    return [network for network, _ in loaded], loaded[0][1]


def controlled(stylizers: list[Stylizer], control: Control, preserve: str) -> Stylizer | ControlledStylizer:
    """The stylizer itself, or with strength and masks applied (then preserve_color is applied inside it)."""
    if len(stylizers) == 1 and not control.active:
        return stylizers[0]
    return ControlledStylizer(stylizers, control, preserve)


def stylize_folder(config: ImageConfig, callback: Callable[[ImageProgress], Any] | None = None,
                   tile_callback: Callable[[TileProgress], Any] | None = None,
                   on_start: Callable[[ImageStart], Any] | None = None,
                   network: nn.Module | None = None) -> ImageSummary:
    """Image mode: stylise config.input into config.output with a model (loaded from config.model_path unless given).

    Under torchrun each process takes every world_size-th file on its own GPU; unreadable sub-folders are
    reported (in `on_start` and the summary) by rank 0 only.
    """
    options = config.options()
    device = image_device(config.device)
    check_precision(config.precision, device)
    rank, world_size = distributed_context()
    plan = plan_images(config.input, config.output).shard(rank, world_size)
    if network is None and config.model_path is None:
        raise ConfigError("a model path is required to stylise images")
    networks, settings = load_networks(config.model_path, config.control) if network is None else ([network], {})
    if device.type == "cuda" and device.index is not None:  # torchrun's cuda:LOCAL_RANK ("cuda" alone: current)
        torch.cuda.set_device(device)
    stylizer = controlled([Stylizer(n, device, config.precision, max_memory=config.max_memory,
                                    tile_size=config.tile_size) for n in networks], config.control,
                          options.preserve_color)
    if isinstance(stylizer, ControlledStylizer):
        options = ImageOptions(options.batch_size, options.max_size, "none")  # applied before the blend
    stylizer.on_tile = tile_callback
    if config.retain_freed_memory:
        retain_freed_memory()  # the network runs over and over: keep its buffers mapped
    if on_start is not None:
        on_start(ImageStart(len(plan.pairs), rank, world_size, plan.output_dir, settings, plan.unreadable))
    summary = stylize_images(plan, stylizer, options, callback)
    return ImageSummary(summary.stylised, summary.failed, summary.failures, plan.unreadable)
