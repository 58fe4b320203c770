#!/usr/bin/env python3
"""Make the README's standard-vs-compact picture (docs/compact/pair.jpg): the same photos through two networks.

    python docs/make_compact_pair.py --standard models/udnie_standard.pth --compact models/udnie.pth
    python docs/make_compact_pair.py --standard A.pth --compact B.pth --tiny --output_dir /tmp/pair   # seconds

One row per photo (data/city.jpg, data/astronaut.jpg): the photo, the standard network's result, the compact
network's result, side by side on a white sheet, written as one compressed JPEG. Both models should be trained
on the same data for the same steps, or the picture compares trainings rather than architectures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from make_gallery import contact_strip, fast_picture, resized, save_jpeg  # noqa: E402
from PIL import Image  # noqa: E402

from stylefusion.core.device import resolve_device, resolve_precision  # noqa: E402
from stylefusion.core.errors import ConfigError, StyleFusionError  # noqa: E402
from stylefusion.core.images import prepare_output_dir  # noqa: E402
from stylefusion.networks.model_files import load_model  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402

PHOTOS = (REPO / "data" / "city.jpg", REPO / "data" / "astronaut.jpg")


def make_pair(standard: str, compact: str, size: int, output_dir: str, quality: int, device: str) -> Path:
    """Write pair.jpg under output_dir; returns its path."""
    run_on = resolve_device(device)
    nets = []
    for path, arch in ((standard, "standard"), (compact, "compact")):
        network, _ = load_model(path)
        if network.ARCH != arch:  # a swapped pair would make a picture with the wrong captions
            raise ConfigError(f"{path} holds a {network.ARCH} network, not a {arch} one")
        nets.append(Stylizer(network, run_on, resolve_precision("auto", run_on)))
    rows = []
    for photo in PHOTOS:
        rows.append([resized(photo, size), *(fast_picture(net, photo, size) for net in nets)])
    # contact_strip wants frames of one size: pad each row's pictures to the largest (the photos differ in shape)
    w = max(p.width for row in rows for p in row)
    h = max(p.height for row in rows for p in row)
    sheet_rows = [[_centred(p, w, h) for p in row] for row in rows]
    path = prepare_output_dir(output_dir) / "pair.jpg"
    save_jpeg(contact_strip(sheet_rows), path, quality)
    return path


def _centred(picture: Image.Image, width: int, height: int) -> Image.Image:
    """The picture in the middle of a white width x height canvas."""
    if picture.size == (width, height):
        return picture
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
    return canvas


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--standard", required=True, help="a standard-architecture model file")
    p.add_argument("--compact", required=True, help="a compact-architecture model file")
    p.add_argument("--output_dir", default=str(REPO / "docs" / "compact"), help="default: docs/compact")
    p.add_argument("--size", type=int, default=320, help="longest side of each picture (default 320)")
    p.add_argument("--tiny", action="store_true", help="64 px pictures: runs in seconds (the test suite)")
    p.add_argument("--quality", type=int, default=82, help="JPEG quality (default 82)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    args = p.parse_args(argv)
    if args.size < 16 or not 1 <= args.quality <= 95:
        p.error("--size must be at least 16 and --quality between 1 and 95")
    try:
        path = make_pair(args.standard, args.compact, 64 if args.tiny else args.size, args.output_dir,
                         args.quality, args.device)
    except StyleFusionError as exc:
        print(f"make_compact_pair.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
