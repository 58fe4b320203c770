#!/usr/bin/env python3
"""Fast (feed-forward) style transfer, Johnson et al. 2016: train a network per style, then stylise
images, folders and videos in one pass.

    python fast_style_transfer.py --mode train --style_image data/udnie.jpg --content_dataset data/train2014 \
        --model_save_path models/new_model.pth --epochs 10
    python fast_style_transfer.py --mode image --input_images_dir data/train2014/default_class \
        --output_images_dir output/images_generated --model_path models/udnie.pth
    python fast_style_transfer.py --mode video --video_input data/maigua.mp4 \
        --video_output output/videos/maigua_udnie.mp4 --model_path models/udnie.pth
    python fast_style_transfer.py --mode export --model_path models/udnie.pth --export_path udnie.onnx
    python fast_style_transfer.py --mode download

This script only parses arguments, shows progress and reports errors; the work is in stylefusion/.
"""

from __future__ import annotations

import argparse
import sys

from cli_common import OneLineParser, positive_int, run_cli

MODES = ("train", "image", "video", "export", "download")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by several modes."""
    g = parser.add_argument_group("common")
    g.add_argument("--mode", required=True, choices=MODES, help="what to do")
    g.add_argument("--model_path", default=None,
                   help="transformer model file to use (image, video, export modes)")
    g.add_argument("--batch_size", type=positive_int, default=None,
                   help="images per batch (train default 4; image/video default 4)")
    g.add_argument("--max_size", type=positive_int, default=None,
                   help="image/video: downscale inputs so the longest side is at most this (default: keep size)")
    g.add_argument("--preserve_color", default="none", choices=("none", "luminance", "histogram"),
                   help="image/video: keep the input's colours (luminance: keep its chroma; histogram: match "
                        "colour statistics)")
    g.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default: auto)")
    g.add_argument("--precision", default="fp32", help="fp32|bf16|fp16 autocast (default: fp32)")
    g.add_argument("--seed", type=int, default=None, help="random seed (train default 42)")


# ------------------------------------------------------------------------------------------------- train
def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode train."""


def run_train(args: argparse.Namespace) -> int:
    """--mode train."""
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------- image
def add_image_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode image."""


def run_image(args: argparse.Namespace) -> int:
    """--mode image."""
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------- video
def add_video_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode video."""


def run_video(args: argparse.Namespace) -> int:
    """--mode video."""
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------ export
def add_export_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode export."""


def run_export(args: argparse.Namespace) -> int:
    """--mode export."""
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------- download
def add_download_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode download."""


def run_download(args: argparse.Namespace) -> int:
    """--mode download."""
    raise NotImplementedError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(parser)
    add_train_args(parser)
    add_image_args(parser)
    add_video_args(parser)
    add_export_args(parser)
    add_download_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runner = {"train": run_train, "image": run_image, "video": run_video,
              "export": run_export, "download": run_download}[args.mode]
    return runner(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
