#!/usr/bin/env python3
"""Make the pictures of README's "Control" section (docs/control/*.jpg) from the files in data/.

    python docs/make_control_pictures.py                       # all four; needs models/udnie.pth for two of them
    python docs/make_control_pictures.py --only regions multi  # the two that need no fast model
    python docs/make_control_pictures.py --tiny --output_dir /tmp/x --model_path any.pth   # toy sizes (a test)

Each picture is a row of labelled panels, a small compressed JPEG written atomically:
  regions.jpg   iterative, udnie.jpg on the left half and a drawn mosaic on the right (--style_masks)
  strength.jpg  the fast model (--model_path) on city.jpg at strength 0, 0.5 and 1
  mask.jpg      the fast model through data/mask_left.png, feathered edge
  multi.jpg     a 2-style network (udnie + mosaic) trained here: style 0, the 50/50 blend, style 1
Measured with OMP_NUM_THREADS=1 on a shared 2-core CPU: regions 4.5-5.5 min, multi 20 min (its training; 132 s
with two threads on a quiet one), the fast pictures seconds. The mosaic (bold tiles with dark grout) is drawn by this
script as a second, clearly different style; the repository has no second painting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from stylefusion.run.control import Control  # noqa: E402
from stylefusion.core.errors import StyleFusionError  # noqa: E402
from stylefusion.core.images import atomic_path, load_image, resize_to, tensor_to_pil  # noqa: E402
from stylefusion.iterative.gatys import IterativeConfig, stylize as stylize_iterative  # noqa: E402
from stylefusion.run.stylizer import Stylizer, controlled, load_networks  # noqa: E402
from stylefusion.training.loop import TrainConfig, train  # noqa: E402

DATA = REPO / "data"
PICTURES = ("regions", "strength", "mask", "multi")
JPEG_QUALITY = 80


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts of one run of the script (the defaults, or toy ones for --tiny)."""
    panel: int = 256            # panel width in px (city.jpg's 4:3 gives panel * 3/4 rows)
    regions_steps: int = 100    # L-BFGS steps of the iterative regions run
    multi_steps: int = 300      # training steps of the 2-style network
    multi_crop: int = 128       # its square training crops
    multi_batch: int = 4
    feather: float = 8.0        # mask feather at the panel's resolution (16 px at 512)


TINY = Settings(panel=64, regions_steps=3, multi_steps=2, multi_crop=32, multi_batch=1, feather=4.0)


def draw_mosaic(path: Path, size: int = 256, seed: int = 7) -> Path:
    """A second style image: jittered square tiles in a bold palette with dark grout, written to `path` (PNG)."""
    rng = np.random.default_rng(seed)
    palette = [(214, 48, 49), (253, 203, 110), (9, 132, 227), (0, 184, 148), (245, 246, 250), (108, 92, 231)]
    image = Image.new("RGB", (size, size), (30, 30, 36))
    draw = ImageDraw.Draw(image)
    tile = max(4, size // 16)
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            jx, jy = rng.integers(0, max(1, tile // 6), 2)
            colour = palette[int(rng.integers(len(palette)))]
            draw.rectangle([x + 1 + jx, y + 1 + jy, x + tile - 2, y + tile - 2], fill=colour)
    image.save(path)
    return path


def label(panel: Image.Image, text: str) -> Image.Image:
    """The panel with `text` in a dark box at its bottom-left corner."""
    draw = ImageDraw.Draw(panel)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    h = panel.height
    draw.rectangle([0, h - (bottom - top) - 6, right - left + 6, h], fill=(0, 0, 0))
    draw.text((3 - left, h - (bottom - top) - 3 - top), text, fill=(255, 255, 255))
    return panel


def row(panels: Sequence[tuple[torch.Tensor | Image.Image, str]], width: int) -> Image.Image:
    """Panels side by side, each scaled and centre-cropped to `width` px wide with city.jpg's 4:3, labelled."""
    height = round(width * 3 / 4)
    sheet = Image.new("RGB", (width * len(panels), height), (255, 255, 255))
    for i, (image, text) in enumerate(panels):
        pil = image if isinstance(image, Image.Image) else tensor_to_pil(image)
        sheet.paste(label(ImageOps.fit(pil.convert("RGB"), (width, height), Image.LANCZOS), text), (i * width, 0))
    return sheet


def save_jpeg(image: Image.Image, path: Path) -> Path:
    """Write a compressed JPEG atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return path


def city(settings: Settings) -> torch.Tensor:
    """data/city.jpg at the panel width, (3, H, W) in [0, 1]."""
    return resize_to(load_image(DATA / "city.jpg"), (round(settings.panel * 3 / 4), settings.panel))


def regions(settings: Settings, mosaic: Path, work: Path) -> Image.Image:
    """Iterative run with udnie on the left half and the mosaic on the right half (guided Gram matrices)."""
    config = IterativeConfig(content_image=DATA / "city.jpg", style_images=[DATA / "udnie.jpg", mosaic],
                             style_masks=[DATA / "mask_left.png", DATA / "mask_right.png"],
                             output_dir=work / "regions", epochs=1, steps_per_epoch=settings.regions_steps,
                             image_size=settings.panel, lbfgs_history=20, device="cpu", precision="fp32")
    result = stylize_iterative(config)
    return row([(load_image(DATA / "udnie.jpg"), "udnie.jpg: left"), (load_image(mosaic), "mosaic: right"),
                (result.image, f"regions, {settings.regions_steps} steps")], settings.panel)


def fast(model_path: Path | str, control: Control) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image mode's stylizer for one model with this control (strength, masks, style choice), on the CPU."""
    networks, _ = load_networks(model_path, control)
    return controlled([Stylizer(network, device="cpu") for network in networks], control, "none")


def apply(stylizer: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """One (3, H, W) image through a stylizer, without autograd."""
    with torch.inference_mode():
        return stylizer(image[None])[0]


def strength(settings: Settings, model_path: Path | str) -> Image.Image:
    """The fast model's output at strength 0, 0.5 and 1."""
    content = city(settings)
    return row([(apply(fast(model_path, Control(strength=s)), content), f"--strength {s:g}") for s in (0, 0.5, 1)],
               settings.panel)


def mask(settings: Settings, model_path: Path | str) -> Image.Image:
    """The mask, and the fast model applied through it with a feathered edge."""
    control = Control(masks=(DATA / "mask_left.png",), feather=settings.feather)
    at_512 = settings.feather * 512 / settings.panel
    return row([(Image.open(DATA / "mask_left.png"), "--mask mask_left.png"),
                (apply(fast(model_path, control), city(settings)), f"--feather {at_512:g} (at 512 px)")],
               settings.panel)


def multi(settings: Settings, mosaic: Path, work: Path) -> tuple[Image.Image, float]:
    """Train a 2-style network (udnie, mosaic) briefly; show style 0, the 50/50 blend and style 1."""
    config = TrainConfig(style_image=[DATA / "udnie.jpg", mosaic], content_dataset=DATA / "train2014",
                         model_save_path=work / "multi.pth", epochs=10_000, max_steps=settings.multi_steps,
                         batch_size=settings.multi_batch, image_size=settings.multi_crop, checkpoint_interval=0,
                         preview_interval=0, device="cpu", precision="fp32")
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    if result.model_path is None:
        raise StyleFusionError(f"training stopped early: {result.stop_reason}")
    content = city(settings)
    outputs = [(apply(fast(result.model_path, control), content), text) for control, text in (
        (Control(style=0), "--style 0"), (Control(style_weights=(0.5, 0.5)), "--style_weights 0.5,0.5"),
        (Control(style=1), "--style 1"))]
    return row(outputs, settings.panel), seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: model, output folder, which pictures, and sizes/steps."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=str(REPO / "models" / "udnie.pth"),
                        help="fast model for strength.jpg and mask.jpg (default: models/udnie.pth)")
    parser.add_argument("--output_dir", default=str(REPO / "docs" / "control"))
    parser.add_argument("--only", nargs="+", choices=PICTURES, default=list(PICTURES), help="pictures to make")
    parser.add_argument("--tiny", action="store_true", help="toy sizes and steps (seconds; for the test)")
    parser.add_argument("--panel", type=int, help=f"panel width in px (default {Settings.panel})")
    parser.add_argument("--regions_steps", type=int, help=f"iterative steps (default {Settings.regions_steps})")
    parser.add_argument("--multi_steps", type=int, help=f"2-style training steps (default {Settings.multi_steps})")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """The defaults or TINY, with the sizes and steps given on the command line."""
    base = TINY if args.tiny else Settings()
    given = {k: v for k, v in (("panel", args.panel), ("regions_steps", args.regions_steps),
                                ("multi_steps", args.multi_steps)) if v is not None}
    if any(v < 1 for v in given.values()):
        raise StyleFusionError("--panel, --regions_steps and --multi_steps must be >= 1")
    fields = {**base.__dict__, **given}
    if "panel" in given and not args.tiny:
        fields["feather"] = given["panel"] / 32  # 16 px at 512
    return Settings(**fields)


def make(args: argparse.Namespace, settings: Settings) -> None:
    """Make the chosen pictures; print each file with its size and the time it took."""
    if ({"strength", "mask"} & set(args.only)) and not Path(args.model_path).is_file():
        raise StyleFusionError(f"no fast model at {args.model_path}: give --model_path, or --only regions multi")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mosaic = draw_mosaic(work / "mosaic.png", size=max(64, settings.panel))
        for name in args.only:
            start = time.perf_counter()
            note = ""
            if name == "regions":
                picture = regions(settings, mosaic, work)
            elif name == "strength":
                picture = strength(settings, args.model_path)
            elif name == "mask":
                picture = mask(settings, args.model_path)
            else:
                picture, seconds = multi(settings, mosaic, work)
                note = f" (training {settings.multi_steps} steps: {seconds:.0f} s)"
            path = save_jpeg(picture, out / f"{name}.jpg")
            print(f"{path}: {picture.width}x{picture.height}, {path.stat().st_size / 1024:.0f} KB, "
                  f"{time.perf_counter() - start:.0f} s{note}")


def main(argv: Sequence[str] | None = None) -> int:
    """Make the pictures; a StyleFusionError is one line on stderr and exit status 1."""
    args = parse_args(argv)
    try:
        make(args, settings_from(args))
    except StyleFusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
