#!/usr/bin/env python3
"""Do the styles of a multi-style network part? Trains single- and multi-style networks, scores them on held-out photos.

    python bench/multistyle_quality.py train --styles 1 --first 2      # single-style baseline of the 3rd painting
    python bench/multistyle_quality.py train --styles 4 --scale 1       # 4 styles, norm tables at --lr (before #29)
    python bench/multistyle_quality.py train --styles 4                 # 4 styles, today's default
    python bench/multistyle_quality.py score                            # the table, from every model in --out

`train` runs the real `train()` on data/train2014: 128 px crops, batch 4, `--steps_per_style` steps per style
(N styles: N x that many steps, one style per step in turn), bf16 where the CPU has avx512_bf16, else fp32; the
model lands in --out named after its paintings, steps and norm learning-rate factor (TrainConfig.
style_norm_lr_scale), with a .json beside it holding the wall time. `score` stylises every held-out photo
(../shared/images/content/*.jpg, none of them in data/train2014) at --size px with every style of every model
(fp32, one pass) and scores it with bench/score.py against every painting (the painting at the training crop size,
the scale the network learned its strokes at): the content error, the style error (mean relative Gram error) of
each style against its own painting with the single-style network's beside it, and whether each style's output is
the nearest, of all the network's styles, to its own painting (the #29 criteria: style error within 15 % of the
single-style network's, and nearest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.score import Scorer, load  # noqa: E402

PAINTINGS = REPO.parent / "shared" / "images" / "style"
PHOTOS = REPO.parent / "shared" / "images" / "content"
STYLES = ("candy", "mosaic", "starry_night", "the_scream")  # four visibly different paintings; N=2 uses the first two
TOLERANCE = 1.15  # the #29 criterion: style error within 15 % of the single-style network's


def cpu_flags() -> str:
    """The CPU's avx2 / avx512_bf16 flags, named beside every figure."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return " ".join(f for f in ("avx2", "avx512_bf16") if f in flags) or "neither avx2 nor avx512_bf16"


def model_name(styles: list[str], steps_per_style: int, scale: float) -> str:
    """File stem of a run: its paintings, steps per style and (several styles) its norm learning-rate factor."""
    return "+".join(styles) + f"_{steps_per_style}" + (f"_x{scale:g}" if len(styles) > 1 else "")


def train_one(args: argparse.Namespace) -> None:
    """Train one network (the real train(), 128 px crops) and write it and its wall time to --out."""
    from stylefusion.training.loop import NORM_LR_SCALE, TrainConfig, train

    styles = list(STYLES[args.first:args.first + args.styles])
    scale = NORM_LR_SCALE if args.scale is None else args.scale
    paths = [str(PAINTINGS / f"{s}.jpg") for s in styles]
    out = args.out / f"{model_name(styles, args.steps_per_style, scale)}.pth"
    precision = "bf16" if "avx512_bf16" in cpu_flags() else "fp32"
    config = TrainConfig(style_image=paths if len(paths) > 1 else paths[0],
                         content_dataset=str(REPO / "data" / "train2014"), model_save_path=str(out),
                         batch_size=args.batch_size, image_size=args.image_size, epochs=100_000,
                         max_steps=args.steps_per_style * len(styles), lr=args.lr, style_norm_lr_scale=scale,
                         checkpoint_interval=0, preview_interval=0, device="cpu", precision=precision,
                         checkpoint_dir=str(args.out / f"{out.stem}_checkpoints"))
    start = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - start
    info = {"styles": styles, "steps_per_style": args.steps_per_style, "scale": scale, "lr": args.lr,
            "precision": precision, "image_size": args.image_size, "batch_size": args.batch_size,
            "seconds": round(seconds, 1), "threads": torch.get_num_threads(), "cpu_flags": cpu_flags(),
            "load_after": os.getloadavg()[0]}
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    print(f"{out.name}: {seconds:.0f} s ({seconds / config.max_steps:.2f} s/step), {precision}, "
          f"{torch.get_num_threads()} thread(s), CPU flags {cpu_flags()}")


def outputs(path: Path, photos: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """[style][photo] stylised photos (fp32, one pass) of one model file."""
    from stylefusion.networks.cin import select_style, style_count
    from stylefusion.networks.model_files import load_model

    network = load_model(path)[0].float().eval()
    result = []
    for style in range(style_count(network)):
        select_style(network, style)
        with torch.inference_mode():
            result.append([(network(p[None] * 255.0) / 255.0).clamp(0, 1)[0] for p in photos])
    return result


def score_model(path: Path, styles: list[str], photos: list[torch.Tensor], scorers: dict[str, list[Scorer]]
                ) -> list[tuple[str, float, float, float]]:
    """(painting, content error, style error, margin) per style of one model, means over the photos.

    Margin: the lowest Gram error against this style's painting of any other style's output, divided by this
    style's own; above 1 when the style's output is the nearest to its painting (how far the styles parted).
    """
    outs = outputs(path, photos)
    rows = []
    for k, own in enumerate(styles):
        # scores[j][i]: style j's output of photo i against painting `own`
        scores = [[scorers[own][i].score(out) for i, out in enumerate(outs[j])] for j in range(len(outs))]
        style = [sum(s.style for s in per_photo) / len(photos) for per_photo in scores]
        rows.append((own, sum(s.content for s in scores[k]) / len(photos), style[k],
                     min((m for j, m in enumerate(style) if j != k), default=float("nan")) / style[k]))
    return rows


def score_all(args: argparse.Namespace) -> None:
    """Print the table: every model's every style on the held-out photos, against the single-style baselines."""
    infos = {p: json.loads(p.with_suffix(".json").read_text()) for p in sorted(args.out.glob("*.pth"))
             if p.with_suffix(".json").exists()}
    photos = [load(p, args.size) for p in sorted(PHOTOS.glob("*.jpg"))]
    paintings = sorted({s for info in infos.values() for s in info["styles"]})
    sizes = {info["image_size"] for info in infos.values()}
    if len(sizes) != 1:
        sys.exit(f"{args.out} holds models trained at {sorted(sizes)} px: score one crop size at a time")
    image_size = sizes.pop()
    scorers = {s: [Scorer(photo, load(PAINTINGS / f"{s}.jpg", image_size)) for photo in photos] for s in paintings}
    rows = {path: score_model(path, info["styles"], photos, scorers) for path, info in infos.items()}
    # the baseline of a painting: its single-style network with the same steps per style
    singles = {(info["styles"][0], info["steps_per_style"]): rows[p][0][2] for p, info in infos.items()
               if len(info["styles"]) == 1}
    print(f"torch {torch.__version__}, CPU flags: {cpu_flags()}, {len(photos)} held-out photos at {args.size} px, "
          f"paintings at {image_size} px\n")
    print("| styles | norm lr x | steps/style | s/step | style | content | style error | single-style | ratio "
          "| nearest (margin) |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for path, info in sorted(infos.items(), key=lambda item: (len(item[1]["styles"]), item[1]["scale"])):
        several = len(info["styles"]) > 1
        scale = f"{info['scale']:g}" if several else "–"
        for own, content, style, margin in rows[path]:
            base = singles.get((own, info["steps_per_style"]))
            ratio = "–" if base is None else f"{style / base:.3f}" + (" ✗" if style > TOLERANCE * base else "")
            print(f"| {len(info['styles'])} | {scale} | {info['steps_per_style']} "
                  f"| {info['seconds'] / (info['steps_per_style'] * len(info['styles'])):.2f} | {own} "
                  f"| {content:.3f} | {style:.3f} | {'–' if base is None else f'{base:.3f}'} | {ratio} "
                  f"| {(('yes' if margin > 1 else '**no**') + f' ({margin:.3f})') if several else '–'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("train", "score"))
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "multistyle")
    parser.add_argument("--styles", type=int, default=1, help="train: how many of the paintings (1, 2 or 4)")
    parser.add_argument("--first", type=int, default=0,
                        help="train: index of the first painting in " + ", ".join(STYLES))
    parser.add_argument("--scale", type=float, default=None,
                        help="train: norm learning-rate factor (TrainConfig.style_norm_lr_scale); "
                             "default: the library's")
    parser.add_argument("--steps_per_style", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="score: longest side of the held-out photos")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train_one(args) if args.action == "train" else score_all(args)


if __name__ == "__main__":
    main()
