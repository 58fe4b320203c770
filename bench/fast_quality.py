#!/usr/bin/env python3
"""Quality of fast models on photos they never saw in training, scored by bench/score.py.

    python bench/fast_quality.py --style data/udnie.jpg --models models/udnie.pth models/udnie_compact.pth
    python bench/fast_quality.py --style data/udnie.jpg --models A.pth B.pth --photos a.jpg b.jpg --size 512

Each photo (default: ../shared/images/content/*.jpg, else data/astronaut.jpg) is resized to `--size` on its
longest side and stylised by each model (fp32, one pass); the table gives per photo and model the content error
(relu4_2) and the style error (mean relative Gram error relu1_1..relu5_1) as a ratio to the unstylised photo's
own style error ("vs photo": 1.0 = no closer to the style than the photo; lower is better), then the means.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.score import Scorer, load  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402
from stylefusion.networks.model_files import load_model  # noqa: E402

SHARED = REPO.parent / "shared" / "images" / "content"


def default_photos() -> list[Path]:
    photos = sorted(SHARED.glob("*.jpg")) if SHARED.is_dir() else []
    return photos or [REPO / "data" / "astronaut.jpg"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", required=True, help="the style image the models were trained on")
    parser.add_argument("--models", nargs="+", required=True, type=Path)
    parser.add_argument("--photos", nargs="+", type=Path, default=None)
    parser.add_argument("--size", type=int, default=512, help="longest side of the photos (and the style)")
    parser.add_argument("--save_dir", type=Path, default=None, help="also save each stylised photo here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "avx512_bf16")})
    print(f"torch {torch.__version__}, CPU flags: {' '.join(flags) or 'unknown'}, size {args.size}\n")
    style = load(args.style, args.size)
    stylizers = {m: Stylizer(load_model(m)[0], device="cpu", precision="fp32") for m in args.models}
    sums: dict[str, list[float]] = {str(m): [0.0, 0.0] for m in args.models}
    photos = args.photos or default_photos()
    print("| photo | model | content | style | vs photo | s |")
    print("|---|---|---:|---:|---:|---:|")
    for photo in photos:
        content = load(photo, args.size)
        scorer = Scorer(content, style)
        base = scorer.score(content).style
        for model, stylizer in stylizers.items():
            start = time.perf_counter()
            result = stylizer(content[None])[0]
            seconds = time.perf_counter() - start
            if args.save_dir:
                from stylefusion.core.images import save_image
                args.save_dir.mkdir(parents=True, exist_ok=True)
                save_image(result, args.save_dir / f"{photo.stem}_{model.stem}.jpg")
            s = scorer.score(result)
            sums[str(model)][0] += s.content
            sums[str(model)][1] += s.style / base
            print(f"| {photo.name} | {model.name} | {s.content:.3f} | {s.style:.3f} | {s.style / base:.2f} | "
                  f"{seconds:.2f} |", flush=True)
    for model, (content, ratio) in sums.items():
        print(f"| **mean** | {Path(model).name} | {content / len(photos):.3f} | | {ratio / len(photos):.2f} | |")


if __name__ == "__main__":
    main()
