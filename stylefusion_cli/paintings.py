"""Any painting, now, in the fast CLI: --style_image and --style_size for every mode, which of model files or
paintings a run uses, and --mode sheet (one photo in every painting and model)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import first_frame_warnings, in_range, info, output_file, positive_int, require_model

STYLE_IMAGE_HELP = (
    "train: the style image(s) to learn (several: one network, one set of instance-norm scales and shifts per "
    "style, chosen later with --style / --style_weights). image, video, webcam, export, sheet without "
    "--model_path: any painting, now (Magenta's arbitrary-style network, Ghiasi et al. 2017, at the photo's full "
    "resolution): several are blended by --style_weights, or with --mask one per region; webcam keys switch "
    "between them")
STYLE_SIZE_HELP = (
    "train: longest side of the style image, px (default: --image_size). With paintings: the painting's shorter "
    "side as the style predictor reads it (default 256, as trained); smaller gives bolder, larger strokes, "
    "larger gives finer strokes closer to the photo")


def add_painting_args(parser: argparse.ArgumentParser) -> None:
    """--style_image and --style_size: the style to learn (train), or the painting to use now (the other modes)."""
    g = parser.add_argument_group("style images (train: the style to learn; other modes: any painting, now)")
    g.add_argument("--style_image", nargs="+", action="extend", default=None, metavar="PATH", help=STYLE_IMAGE_HELP)
    g.add_argument("--style_size", type=positive_int, default=None, metavar="PX", help=STYLE_SIZE_HELP)
    g.add_argument("--stroke_scale", type=stroke_scale_arg, default=None, metavar="S",
                   help="paintings: auto (default) runs the network at 512 px on the longest side (at most 2x "
                        "smaller than the photo) and brings the result to full size with the photo's edges (a guided "
                        "filter): the network learnt its strokes on 256 px crops, so at full resolution they are small "
                        "against a large photo; 1 runs it at full resolution; 2 at half size (strokes twice as "
                        "large), and so on up to 64 (never below 64 px on the longest side)")


def stroke_scale_arg(text: str) -> float | None:
    """argparse type: auto (None) or a number from 1 to 64."""
    return None if text == "auto" else in_range(text, 1, 64, float, "auto or ")


def add_sheet_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode sheet (it also takes --input_images_dir, --style_image, --model_path, --max_size)."""
    g = parser.add_argument_group("sheet mode: one photo (--input_images_dir) in every --style_image and "
                                  "--model_path, side by side with labels, to choose a style")
    g.add_argument("--sheet_output", default=None, metavar="PATH", type=output_file,
                   help="the contact sheet: .jpg, .png, .webp, .bmp, .tif or .ppm (default "
                        "output/sheet_<photo>.jpg); each tile's longest side is --max_size (default 384)")


def paintings_or_model(args: argparse.Namespace, mode: str) -> tuple[list[str], object]:
    """(paintings, model path(s)) of an image/video/webcam/export run: one of them, never both (one line)."""
    from stylefusion.core.errors import ConfigError, require_file

    paintings = list(args.style_image or [])
    if paintings and args.model_path is not None:
        raise ConfigError("give --style_image (any painting, now) or --model_path (a trained model), not both")
    if paintings:
        for path in paintings:  # missing, a folder, a device, empty: said before any work
            require_file(path, "style image", ConfigError)
        return paintings, None
    hint = "a trained model, e.g. models/udnie.pth) or --style_image (any painting, now"
    return [], require_model(args, mode, hint)


def style_size(args: argparse.Namespace) -> int:
    """--style_size for the arbitrary network (its default: the predictor's own 256)."""
    from stylefusion.networks.arbitrary import STYLE_SIZE, check_style_size

    return check_style_size(args.style_size or STYLE_SIZE)  # before any network loads


def say_paintings(paintings: list[str], args: argparse.Namespace) -> None:
    """One status line: which paintings, blended how, read at which size."""
    if not paintings:
        return
    names = [os.path.basename(p) for p in paintings]
    weights = [f"{w:g}" for w in args.style_weights] if args.style_weights is not None else []
    if len(paintings) > 1 and len(weights) == len(paintings):  # a count that does not match is refused next
        names = [f"{n} x {w}" for n, w in zip(names, weights)]
    info(f"paintings: {', '.join(names)} (Magenta's arbitrary-style network, style read at {style_size(args)} px)")
    for line in first_frame_warnings(paintings):
        info(line)


def run_sheet(args: argparse.Namespace) -> int:
    """--mode sheet: the photo in every painting and model, one labelled image."""
    from tqdm import tqdm

    from stylefusion.core.errors import ConfigError
    from stylefusion.core.device import resolve_device
    from stylefusion.run.sheet import TILE, SheetConfig, make_sheet

    if args.input_images_dir is None or not Path(args.input_images_dir).is_file():
        raise ConfigError("--mode sheet needs --input_images_dir PHOTO (one image file)")
    models = args.model_path if isinstance(args.model_path, list) else [args.model_path] if args.model_path else []
    output = args.sheet_output or str(Path("output") / f"sheet_{Path(args.input_images_dir).stem}.jpg")
    config = SheetConfig(photo=args.input_images_dir, output=output, style_images=list(args.style_image or []),
                         model_paths=models, style_size=style_size(args), stroke_scale=args.stroke_scale,
                         tile=args.max_size or TILE,
                         device=resolve_device(args.device), precision=args.precision)
    warnings = first_frame_warnings([config.photo, *config.style_images])
    captions: list[str] = []
    # No total: a model of several styles gets a cell per style, known once it is loaded.
    with tqdm(unit="style", desc="sheet", disable=None) as bar:

        def on_done(caption: str) -> None:
            while warnings:  # after the first picture: the run has passed its checks
                bar.write(warnings.pop(0), file=sys.stderr)
            captions.append(caption)
            bar.update(1)

        written = make_sheet(config, on_done)
    info(f"wrote {written}: {args.input_images_dir} in {len(captions)} style(s)")
    return 0
