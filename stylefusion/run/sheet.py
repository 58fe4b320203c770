"""A contact sheet: one photo rendered in every given painting and model, labelled, to choose a style at a glance.

Each tile is the photo (longest side `tile` px) through one network: a painting (Magenta's arbitrary network) or a
trained model file; the first tile is the photo itself. Written atomically as one image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, ImageDraw

from ..core.errors import ConfigError, OutputError
from ..core.images import (SAVE_FORMATS, ensure_not_input, load_pil, no_empty_folders_on_failure, path_list,
                           pil_to_uint8, prepare_output_dir, resize_longest, save_image, tensor_to_pil)
from ..networks.arbitrary import STYLE_SIZE
from ..networks.cin import select_style, style_count
from ..networks.model_files import load_model
from .painting import Paintings, each_painting
from .stylizer import Stylizer, check_image_size

TILE = 384              # longest side of each rendering, px
LABEL_PX = 18           # the caption band under each tile
GAP_PX = 8
MIN_CELL_PX = 96        # a narrow tile (a tall photo) still gets a cell wide enough for a readable caption
MAX_COLUMNS = 5


@dataclass(frozen=True)
class SheetConfig:
    """The photo, what to render it in (paintings, then models), and where the sheet goes."""

    photo: str | os.PathLike
    output: str | os.PathLike
    style_images: Sequence[str | os.PathLike] = ()
    model_paths: Sequence[str | os.PathLike] = ()
    style_size: int = STYLE_SIZE
    stroke_scale: float | None = None
    tile: int = TILE
    device: str | torch.device = "cpu"
    precision: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "style_images", path_list(self.style_images))  # one bare path: one painting


def _renderers(config: SheetConfig) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """(caption, stylizer) for every painting, then every model (every style of a model of several)."""
    found: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
    if config.style_images:
        paintings = Paintings(tuple(config.style_images), None, config.style_size, stroke_scale=config.stroke_scale)
        stylizers = each_painting(paintings, device=config.device, precision=config.precision)
        found += [(Path(p).name, s) for p, s in zip(config.style_images, stylizers)]
    for path in config.model_paths:
        network, settings = load_model(path)
        count = style_count(network)
        if count == 1:
            found.append((Path(path).name, Stylizer(network, config.device, config.precision)))
            continue
        names = settings.get("styles") if isinstance(settings.get("styles"), list) else []
        for index in range(count):  # a model of several styles: a cell each, to choose among them too
            select_style(network, index)  # each Stylizer keeps its own copy, with this style fixed
            name = names[index] if index < len(names) else f"style {index}"
            found.append((f"{Path(path).name}: {name}", Stylizer(network, config.device, config.precision)))
    return found


def _layout(tiles: list[tuple[str, Image.Image]]) -> Image.Image:
    """The tiles in a grid of at most MAX_COLUMNS, each with its caption underneath."""
    width, height = tiles[0][1].size
    cell = max(width, MIN_CELL_PX)
    columns = min(MAX_COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * (cell + GAP_PX) + GAP_PX, rows * (height + LABEL_PX + GAP_PX) + GAP_PX),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for n, (caption, image) in enumerate(tiles):
        row, column = divmod(n, columns)
        x, y = GAP_PX + column * (cell + GAP_PX), GAP_PX + row * (height + LABEL_PX + GAP_PX)
        sheet.paste(image, (x + (cell - width) // 2, y))
        draw.text((x + 2, y + height + 3), caption[: cell // 7], fill="black")  # ~6 px a character
    return sheet


def make_sheet(config: SheetConfig, on_tile: Callable[[str], None] | None = None) -> Path:
    """Render the photo in every painting and model and write the labelled sheet to config.output; its path."""
    if not config.style_images and not config.model_paths:
        raise ConfigError("the sheet needs paintings (--style_image) or models (--model_path) to compare")
    for item in (config.photo, *config.style_images, *config.model_paths):
        if not isinstance(item, (str, os.PathLike)):
            raise ConfigError(f"the sheet's photo, paintings and models are paths, got {item!r}")
    if not isinstance(config.tile, int) or config.tile < 16:
        raise ConfigError(f"the sheet's tile side must be at least 16 px, got {config.tile}")
    output = Path(config.output)
    if output.suffix.lower() not in SAVE_FORMATS:
        raise OutputError(f"unsupported sheet extension '{output.suffix}' for {output} (use "
                          f"{', '.join(SAVE_FORMATS)})")
    ensure_not_input(output, [config.photo, *config.style_images, *config.model_paths])
    photo = pil_to_uint8(load_pil(config.photo)).float().div_(255.0)
    if max(photo.shape[-2:]) > config.tile:  # smaller photos stay their size
        photo = resize_longest(photo, config.tile)
    check_image_size(*photo.shape[-2:], f"image {config.photo}")
    tiles = [("photo", tensor_to_pil(photo))]
    for caption, stylizer in _renderers(config):
        tiles.append((caption, tensor_to_pil(stylizer(photo[None])[0])))
        if on_tile is not None:
            on_tile(caption)
    with no_empty_folders_on_failure(output.parent):
        prepare_output_dir(output.parent)
        return save_image(_layout(tiles), output)


__all__ = ["SheetConfig", "make_sheet"]
