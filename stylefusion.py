#!/usr/bin/env python3
"""Iterative neural style transfer (Gatys et al. 2016), run from a clone: the code is stylefusion_cli/iterative.py.

    python stylefusion.py --content_image data/city.jpg --style_image data/udnie.jpg \
        --output_dir output/iterative_style_transfer --epochs 20 --steps_per_epoch 100

Installed with `pip install .`, the `stylefusion` command runs the same code.
"""

import sys

from stylefusion_cli.iterative import build_parser, command, main

__all__ = ["build_parser", "command", "main"]  # importable as before the code moved

if __name__ == "__main__":
    sys.exit(command())
