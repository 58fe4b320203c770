#!/usr/bin/env python3
"""Fast (feed-forward) style transfer (Johnson et al. 2016), run from a clone: the code is stylefusion_cli/fast.py.

    python fast_style_transfer.py --mode train|image|video|webcam|export|download ...   (see --help)

Installed with `pip install .`, the `fast-style-transfer` command runs the same code.
"""

import sys

from stylefusion_cli.fast import MODE_OPTIONS, MODES, build_parser, command, main

__all__ = ["MODE_OPTIONS", "MODES", "build_parser", "command", "main"]  # importable as before the code moved

if __name__ == "__main__":
    sys.exit(command())
