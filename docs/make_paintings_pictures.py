#!/usr/bin/env python3
"""Make the pictures of docs/paintings.md (docs/paintings/*.jpg) from the files in data/ and models/.

    python docs/make_paintings_pictures.py                          # both pictures, about a minute on 2 cores
    python docs/make_paintings_pictures.py --paintings a.jpg b.jpg  # the sheet with other paintings

  sheet.jpg    --mode sheet on data/astronaut.jpg: data/udnie.jpg (the repository's one painting) and the two
               shipped models trained on it
  strokes.jpg  data/city.jpg at 2048 px in data/udnie.jpg: --stroke_scale 1 (the network at full resolution)
               against auto (at the working size, then the guided filter), each shown whole and as a 1:1 crop
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "docs"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from make_control_pictures import row, save_jpeg  # noqa: E402
from stylefusion.core.images import load_image, resize_longest, tensor_to_pil  # noqa: E402
from stylefusion.networks.arbitrary import arbitrary_network  # noqa: E402
from stylefusion.run.painting import PaintingStylizer  # noqa: E402
from stylefusion.run.sheet import SheetConfig, make_sheet  # noqa: E402

DATA, MODELS = REPO / "data", REPO / "models"
CROP = 384  # side of the 1:1 crops in strokes.jpg


def sheet(paintings: list[Path], output: Path) -> None:
    """--mode sheet's picture, as the CLI makes it (each tile 256 px)."""
    models = [p for p in (MODELS / "udnie.pth", MODELS / "udnie_compact.pth") if p.is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        png = make_sheet(SheetConfig(DATA / "astronaut.jpg", Path(tmp) / "sheet.png", paintings, models, tile=256))
        save_jpeg(Image.open(png).convert("RGB"), output)


def strokes(painting: Path, output: Path) -> None:
    """The same 2048 px photo with the network at full resolution and at the default working size."""
    photo = resize_longest(load_image(DATA / "city.jpg"), 2048)
    network = arbitrary_network([painting])
    panels = []
    for scale, caption in ((1.0, "--stroke_scale 1: full resolution"), (None, "--stroke_scale auto (default)")):
        stylizer = PaintingStylizer(network, network.style.clone(), stroke_scale=scale, device="cpu",
                                    precision="fp32")
        with torch.inference_mode():
            out = stylizer(photo[None])[0]
        top, left = (out.shape[-2] - CROP) // 2, (out.shape[-1] - CROP) // 2
        panels += [(resize_longest(out, 512), caption), (out[:, top:top + CROP, left:left + CROP], "1:1 crop")]
    save_jpeg(row([(tensor_to_pil(image) if isinstance(image, torch.Tensor) else image, text)
                   for image, text in panels], 384), output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paintings", nargs="+", type=Path, default=None)
    parser.add_argument("--output_dir", type=Path, default=REPO / "docs" / "paintings")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    sheet(args.paintings or [DATA / "udnie.jpg"], args.output_dir / "sheet.jpg")
    strokes(DATA / "udnie.jpg", args.output_dir / "strokes.jpg")
    print(f"wrote {args.output_dir / 'sheet.jpg'} and {args.output_dir / 'strokes.jpg'}", file=sys.stderr)


if __name__ == "__main__":
    main()
