"""Image mode: stylise a file or a folder tree of photos into a mirrored output tree.

`stylize_folder(ImageConfig)` is `plan_images` + `stylize_images` with the network(s), device and torchrun share
set up: from model files, or from paintings (run/painting.py: any painting, now). Decoding and saving overlap
the network on worker threads; same-size photos go through in batches, large ones alone or in tiles.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..core.color import check_mode, preserve_color
from ..core.device import check_precision, resolve_device
from ..core.distributed import distributed_context, rank_device
from ..core.errors import ConfigError, InputImageError, OutputError, not_found, resolved
from ..core.images import (SAVE_FORMATS, IMAGE_EXTENSIONS, first_missing, is_image_file, load_pil, path_list,
                           pil_to_uint8, prepare_output_dir, remove_empty_tree, resize_longest, save_image, walk_images)
from ..core.memory import default_budget
from ..networks.arbitrary import STYLE_SIZE
from ..networks.inference import retain_freed_memory
from ..networks.transformer import MIN_INPUT_SIDE
from .control import Control, ControlledStylizer
from .painting import Paintings
from .sources import check_source, controlled_run
from .stylizer import check_image_size
from .tiling import TileProgress

# Inputs whose extension save_image cannot write (palette GIF, greyscale PGM) get a PNG output.
_OUTPUT_FALLBACK_SUFFIX = ".png"

@dataclass(frozen=True)
class ImagePlan:
    """Which files to stylise and where each result goes (the output tree mirrors the input tree)."""

    input_path: Path
    output_dir: Path
    pairs: tuple[tuple[Path, Path], ...]
    single_file: bool
    unreadable: tuple[tuple[Path, str], ...] = ()  # sub-folders that could not be listed, and why
    note: str | None = None  # e.g. images already in an output folder inside the input folder (not inputs)

    def shard(self, rank: int, world_size: int) -> "ImagePlan":
        """This process's share under torchrun: every world_size-th file, so N processes take disjoint parts."""
        if world_size <= 1:
            return self
        return ImagePlan(self.input_path, self.output_dir, self.pairs[rank::world_size], self.single_file,
                         *((self.unreadable, self.note) if rank == 0 else ((), None)))  # reported once


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
    style_images: Sequence[str | os.PathLike] = ()  # or paintings: any painting, now (run/painting.py)
    style_size: int = STYLE_SIZE                # the paintings' shorter side as the style predictor sees them
    stroke_scale: float | None = None          # paintings: the network runs this many times smaller (None: auto)
    batch_size: int = ImageOptions.batch_size
    max_size: int | None = None                # downscale so the longest side is at most this (None: keep)
    preserve_color: str = "none"
    device: str = "auto"                       # under torchrun, cuda means cuda:LOCAL_RANK
    precision: str = "auto"                    # auto: bf16 where the device computes it natively, else fp32
    max_memory: int | None = None              # bytes the network may use; larger images run in tiles
    tile_size: int | None = None               # force tiles of about this side (px)
    retain_freed_memory: bool = True           # keep glibc's freed buffers mapped (process-wide: inference.py)
    control: Control = Control()               # strength, masks (control.py)

    def __post_init__(self) -> None:
        self.style_images = path_list(self.style_images)  # one path given bare is one painting

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
    note: str | None = None  # the plan's (ImagePlan.note)


def _output_names(relatives: list[Path]) -> list[Path]:
    """Each input's output path: its own where save_image can write its format, else a PNG beside it, named
    x.gif.png where x.png is taken (by an input x.png or another fallback), so no result overwrites another."""
    taken = {r for r in relatives if r.suffix.lower() in SAVE_FORMATS}
    names = []
    for relative in relatives:
        if relative.suffix.lower() in SAVE_FORMATS:
            names.append(relative)
            continue
        name = relative.with_suffix(_OUTPUT_FALLBACK_SUFFIX)
        if name in taken:
            name = relative.with_name(relative.name + _OUTPUT_FALLBACK_SUFFIX)
        taken.add(name)
        names.append(name)
    return names


def plan_images(input_path: str | os.PathLike, output_dir: str | os.PathLike,
                protected: Mapping[str, Sequence[str | os.PathLike]] | None = None) -> ImagePlan:
    """List the images of a file or folder (recursively) and their mirrored output paths; nothing is written.

    Refuses an output folder that is the input folder, and any output path that is an input file: a photo, or
    one of the other files the run reads, `protected` (option name -> paths: paintings, masks, model files).
    """
    source, out = Path(input_path), Path(output_dir)
    if not source.exists():
        raise InputImageError(not_found("input", source))
    if out.exists() and not out.is_dir():
        raise OutputError(f"output directory is a file: {out}")
    if not source.is_file() and not source.is_dir():
        raise InputImageError(f"input is neither an image file nor a folder (a pipe or device?): {source}")
    out_resolved = resolved(out)
    single = source.is_file()
    root = source.parent if single else source
    unreadable: list[tuple[Path, str]] = []
    if out_resolved == resolved(root):
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
    names = _output_names([path.relative_to(root) for path in inputs])
    pairs = tuple((path, out / name) for path, name in zip(inputs, names))
    resolved_inputs = {resolved(path): "" for path in inputs}
    for option, paths in (protected or {}).items():
        resolved_inputs.update((resolved(path), f", the {option}") for path in paths)
    for path, target in pairs:  # every output, before anything is written: the whole run is refused
        if (what := resolved_inputs.get(resolved(target))) is not None:
            whose = f"{what}, with the result of {path}" if what else ""
            raise OutputError(f"refusing to overwrite an input file: {target}{whose} (choose another "
                              f"--output_images_dir)")
    return ImagePlan(source, out, pairs, single, tuple(unreadable), None if single else _inside_note(out, root, pairs))


def _inside_note(out: Path, root: Path, pairs: tuple[tuple[Path, Path], ...]) -> str | None:
    """Where the output folder lies inside the input folder and already holds images: they are not inputs (the
    walk skips the output folder, so results are never stylised again), and those a result is named like get
    replaced, which a photo kept there would not survive: said before anything is written."""
    if not out.is_dir() or not resolved(out).is_relative_to(resolved(root)):
        return None
    held = walk_images(out)
    if not held:
        return None
    replaced = [target for _, target in pairs if target.exists()]
    named = f" ({', '.join(p.name for p in replaced[:3])}{', ...' if len(replaced) > 3 else ''})" if replaced else ""
    return (f"{out} is inside the input folder: its {len(held)} image(s) are not stylised; results replace "
            f"{len(replaced)} of them{named}")


def _protected(config: ImageConfig) -> dict[str, list[str | os.PathLike]]:
    """The files besides the photos that a run reads, by option: paintings, masks, model files."""
    models = config.model_path
    models = [] if models is None else [models] if isinstance(models, (str, os.PathLike)) else list(models)
    return {"--style_image": list(config.style_images), "--mask": list(config.control.masks),
            "--model_path": models}


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


def _batch_size_for(stylizer: Callable[[torch.Tensor], torch.Tensor], batch_size: int, size: tuple[int, int]) -> int:
    """How many images of this size go through at once: large ones alone, as the stylizer's budget holds one."""
    limit = getattr(stylizer, "batch_limit", None)
    return batch_size if limit is None else max(1, min(batch_size, limit(*size)))


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
        if error:
            failures.append((item.source, error))
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
    batch_for = functools.partial(_batch_size_for, stylizer, options.batch_size)
    prefetch_bytes = getattr(stylizer, "max_memory", 4 << 30) // 4
    budget = _decode_budget(stylizer)
    refusal = getattr(stylizer, "refusal", None)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="load") as loader, \
                ThreadPoolExecutor(1, thread_name_prefix="save") as writer:
            for item in _prefetched(plan.pairs, options.max_size, loader, options.batch_size + 1, prefetch_bytes,
                                    budget):
                if item.error is not None and plan.single_file:
                    raise InputImageError(item.error)
                refused = None if item.error or plan.single_file or not refusal else refusal(*item.image.shape[-2:])
                error = item.error or (refused and f"{item.source}: {refused}")  # refused: a portrait, landscape masks
                if error:  # skipped
                    report(item, error)
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


def stylize_folder(config: ImageConfig, callback: Callable[[ImageProgress], Any] | None = None,
                   tile_callback: Callable[[TileProgress], Any] | None = None,
                   on_start: Callable[[ImageStart], Any] | None = None,
                   network: nn.Module | None = None) -> ImageSummary:
    """Image mode: stylise config.input into config.output with a model (loaded from config.model_path unless
    given) or with paintings (config.style_images: Magenta's arbitrary-style network at full resolution).

    Under torchrun each process takes every world_size-th file on its own GPU; unreadable sub-folders are
    reported (in `on_start` and the summary) by rank 0 only.
    """
    options = config.options()
    device = image_device(config.device)
    check_precision(config.precision, device)
    rank, world_size = distributed_context()
    plan = plan_images(config.input, config.output, _protected(config)).shard(rank, world_size)
    check_source(config.model_path, Paintings(tuple(config.style_images)), network)
    if device.type == "cuda" and device.index is not None:  # torchrun's cuda:LOCAL_RANK ("cuda" alone: current)
        torch.cuda.set_device(device)
    paintings = Paintings(tuple(config.style_images), None, config.style_size, stroke_scale=config.stroke_scale)
    stylizer, settings = controlled_run(config.model_path, paintings, config.control,
                                        options.preserve_color, network, device=device, precision=config.precision,
                                        max_memory=config.max_memory, tile_size=config.tile_size)
    if isinstance(stylizer, ControlledStylizer):
        options = ImageOptions(options.batch_size, options.max_size, "none")  # applied before the blend
    stylizer.on_tile = tile_callback
    if config.retain_freed_memory:
        retain_freed_memory()  # the network runs over and over: keep its buffers mapped
    if on_start is not None:
        on_start(ImageStart(len(plan.pairs), rank, world_size, plan.output_dir, settings, plan.unreadable, plan.note))
    summary = stylize_images(plan, stylizer, options, callback)
    return ImageSummary(summary.stylised, summary.failed, summary.failures, plan.unreadable)
