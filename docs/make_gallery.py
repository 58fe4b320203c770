#!/usr/bin/env python3
"""Make the README's gallery (docs/gallery/*.jpg) from the files in data/, with StyleFusion itself.

    python docs/make_gallery.py                                   # the README's pictures, from models/udnie.pth
    python docs/make_gallery.py --model_path models/my_model.pth --output_dir output/gallery_mine
    python docs/make_gallery.py --tiny --output_dir /tmp/gallery  # 64 px, 2 steps: seconds (the test suite)

It writes content.jpg and style.jpg (the inputs), iterative.jpg (stylefusion.iterative.gatys, Gatys et al.),
fast_city.jpg and fast_astronaut.jpg (the fast model on the content and on a photo) and video_frames.jpg (a
contact strip: frames of data/maigua.mp4, above the same frames of the video mode's output), each as a
compressed JPEG written atomically, and prints each file's size and the total.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
from PIL import Image  # noqa: E402

from stylefusion.core.device import resolve_device, resolve_precision  # noqa: E402
from stylefusion.core.errors import StyleFusionError  # noqa: E402
from stylefusion.core.images import atomic_path, load_image, load_pil, prepare_output_dir, tensor_to_pil  # noqa: E402
from stylefusion.iterative.gatys import IterativeConfig, IterativeProgress, stylize  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402
from stylefusion.networks.model_files import load_model  # noqa: E402
from stylefusion.run.video import VideoConfig, stylize_video  # noqa: E402

DATA = REPO / "data"
CONTENT, STYLE, PHOTO, VIDEO = DATA / "city.jpg", DATA / "udnie.jpg", DATA / "astronaut.jpg", DATA / "maigua.mp4"
GALLERY_FILES = ("content.jpg", "style.jpg", "iterative.jpg", "fast_city.jpg", "fast_astronaut.jpg",
                 "video_frames.jpg")
STRIP_GAP = 4  # px of white between the strip's frames


@dataclass(frozen=True)
class Sizes:
    """How large and how long: the README's defaults, or the --tiny preset."""
    size: int               # longest side of content/style/fast pictures
    iterative_size: int     # longest side of the iterative result
    iterative_steps: int    # L-BFGS steps
    video_size: int         # longest side of the video frames
    video_seconds: float    # how much of data/maigua.mp4 (3 s) to stylise; 0 = all of it
    video_frames: int       # frames in the contact strip


# Iterative at these defaults: about 3.4 s per step (fp32) on one thread of the busy, shared 2-core dev CPU.
DEFAULT = Sizes(size=320, iterative_size=320, iterative_steps=120, video_size=240, video_seconds=0.0,
                video_frames=4)
TINY = Sizes(size=64, iterative_size=64, iterative_steps=2, video_size=64, video_seconds=0.5, video_frames=3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; sizes left out come from the default or the --tiny preset."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=str(REPO / "models" / "udnie.pth"),
                   help="fast model for the fast and video pictures (default: models/udnie.pth)")
    p.add_argument("--output_dir", default=str(REPO / "docs" / "gallery"), help="default: docs/gallery")
    p.add_argument("--tiny", action="store_true", help="64 px, 2 steps, half a second of video: runs in seconds")
    p.add_argument("--size", type=int, help=f"longest side of the pictures (default {DEFAULT.size})")
    p.add_argument("--iterative_size", type=int, help=f"default {DEFAULT.iterative_size}")
    p.add_argument("--iterative_steps", type=int, help=f"L-BFGS steps (default {DEFAULT.iterative_steps})")
    p.add_argument("--video_size", type=int, help=f"longest side of video frames (default {DEFAULT.video_size})")
    p.add_argument("--video_seconds", type=float, help="seconds of the clip to stylise (default: all 3)")
    p.add_argument("--video_frames", type=int, help=f"frames in the strip (default {DEFAULT.video_frames})")
    p.add_argument("--quality", type=int, default=82, help="JPEG quality (default 82)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    return p.parse_args(argv)


def sizes_of(args: argparse.Namespace) -> Sizes:
    """The preset (default or tiny) with the options given on the command line applied."""
    preset = TINY if args.tiny else DEFAULT
    given = {name: getattr(args, name) for name in Sizes.__dataclass_fields__ if getattr(args, name) is not None}
    sizes = Sizes(**{**preset.__dict__, **given})
    if min(sizes.size, sizes.iterative_size, sizes.video_size, sizes.iterative_steps, sizes.video_frames) < 1:
        raise SystemExit("make_gallery.py: sizes, steps and frames must be >= 1")
    return sizes


def save_jpeg(image: Image.Image, path: Path, quality: int) -> int:
    """Write a compressed (optimised, progressive) JPEG atomically; return its size in bytes."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=quality, optimize=True, progressive=True)
    return path.stat().st_size


def resized(path: Path, longest: int) -> Image.Image:
    """An input picture scaled so its longest side is `longest`."""
    return tensor_to_pil(load_image(path, longest))


def fast_picture(stylizer: Stylizer, path: Path, longest: int) -> Image.Image:
    """The fast model's result on one image (Johnson et al.: one forward pass)."""
    return tensor_to_pil(stylizer(load_image(path, longest)[None])[0])


def iterative_picture(sizes: Sizes, device: str, work: Path) -> Image.Image:
    """The Gatys et al. result on data/city.jpg in the style of data/udnie.jpg, at the library's defaults."""
    def report(p: IterativeProgress) -> None:
        if p.saved is None and p.tile is None and (p.step % 25 == 0 or p.step == p.total_steps):
            print(f"  iterative: step {p.step}/{p.total_steps}, loss {p.total_loss:.3f}, {p.elapsed:.0f} s",
                  flush=True)

    config = IterativeConfig(content_image=CONTENT, style_images=[STYLE], output_dir=work / "iterative",
                             epochs=1, steps_per_epoch=sizes.iterative_steps, image_size=sizes.iterative_size,
                             device=device, output_format="png")
    return load_pil(stylize(config, callback=report).final_path)


def video_frames(path: Path, count: int, size: tuple[int, int] | None = None) -> list[Image.Image]:
    """`count` frames spread evenly over a video (first to last), optionally resized."""
    with av.open(str(path)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    picks = [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(min(count, len(frames)))]
    return [f.resize(size, Image.BICUBIC) if size and f.size != size else f for f in picks]


def contact_strip(rows: list[list[Image.Image]]) -> Image.Image:
    """Rows of same-sized frames on a white sheet, STRIP_GAP px apart."""
    w, h = rows[0][0].size
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * w + (columns - 1) * STRIP_GAP, len(rows) * h + (len(rows) - 1) * STRIP_GAP),
                      "white")
    for y, row in enumerate(rows):
        for x, frame in enumerate(row):
            sheet.paste(frame, (x * (w + STRIP_GAP), y * (h + STRIP_GAP)))
    return sheet


def video_picture(model_path: str, sizes: Sizes, device: str, work: Path) -> Image.Image:
    """Stylise the clip with the video mode's library call, then strip input frames above output frames."""
    output = work / "maigua_stylised.mp4"
    result = stylize_video(VideoConfig(video_input=VIDEO, video_output=output, model_path=model_path,
                                       max_size=sizes.video_size, duration=sizes.video_seconds or None,
                                       device=device, measure_flicker=False))
    stylised = video_frames(output, sizes.video_frames)
    return contact_strip([video_frames(VIDEO, sizes.video_frames, (result.width, result.height)), stylised])


def make_gallery(args: argparse.Namespace, sizes: Sizes) -> dict[str, int]:
    """Make every picture into args.output_dir; return {file name: bytes}. The model is checked first."""
    device = resolve_device(args.device)
    network, _ = load_model(args.model_path)  # a missing or bad model fails before the long iterative run
    stylizer = Stylizer(network, device, resolve_precision("auto", device))
    out = prepare_output_dir(args.output_dir)
    written: dict[str, int] = {}

    def save(name: str, make: Callable[[], Image.Image]) -> None:
        start = time.perf_counter()
        image = make()
        written[name] = save_jpeg(image, out / name, args.quality)
        print(f"{out / name}: {image.width}x{image.height}, {written[name] / 1024:.0f} KB, "
              f"{time.perf_counter() - start:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="stylefusion-gallery-") as tmp:
        save("content.jpg", lambda: resized(CONTENT, sizes.size))
        save("style.jpg", lambda: resized(STYLE, sizes.size))
        save("fast_city.jpg", lambda: fast_picture(stylizer, CONTENT, sizes.size))
        save("fast_astronaut.jpg", lambda: fast_picture(stylizer, PHOTO, sizes.size))
        save("video_frames.jpg", lambda: video_picture(args.model_path, sizes, args.device, Path(tmp)))
        save("iterative.jpg", lambda: iterative_picture(sizes, args.device, Path(tmp)))
    return written


def main(argv: list[str] | None = None) -> int:
    """Make the gallery; one line and exit status 1 on a StyleFusion error (e.g. no model at --model_path)."""
    args = parse_args(argv)
    sizes = sizes_of(args)
    try:
        written = make_gallery(args, sizes)
    except StyleFusionError as exc:
        print(f"make_gallery.py: {exc}", file=sys.stderr)
        return 1
    print(f"total: {sum(written.values()) / 1024:.0f} KB in {len(written)} files ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
