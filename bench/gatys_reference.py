#!/usr/bin/env python3
"""The quality reference for the iterative path: a plain Gatys et al. loop with neural-style-pt's recipe.

    python bench/gatys_reference.py --out bench_out/reference            # 500 steps at 512 px, ~30 min on 2 cores
    python bench/gatys_reference.py --out /tmp/ref --size 96 --steps 20   # smoke run

Written here with plain torch, independent of the library's loss and optimisation code; only the Caffe VGG-19
weights are shared (through bench/score.py). neural-style-pt's defaults, in its units:
- the image is optimised in Caffe space (BGR, 0-255, mean subtracted), from `randn * 0.001` (`-init random`);
- content: 5 x MSE of relu4_2; style: 100 x MSE of Gram / (C H W) at relu1_1 ... relu5_1; TV 1e-3 x the sum of
  absolute neighbour differences; max pooling; style image scaled to the content's longest side;
- L-BFGS, lr 1, history 100, no line search, 500 iterations (run one per step() call here, which is the same
  sequence of updates, so snapshots can be taken).
Writes step_NNNN.png at each --snapshots step and times.json (seconds after each step, excluding start-up), and
the content and style exactly as it used them, resized to --size, as content.png and style.png: give those to
the runs compared with it (bench/time_to_quality.py scores against them). Resized by two programs, the same
painting differs: PIL's Lanczos (here) and the library's antialiased bicubic give Gram matrices 4-8 % apart at
relu1_1 ... relu5_1 for starry_night.jpg at 512 px, which the scorer would count against the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score import _CAFFE_MEAN_BGR, CONTENT_LAYER, STYLE_LAYERS, caffe_convs, caffe_features, load  # noqa: E402

CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = 5.0, 100.0, 1e-3


def caffe(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB [0, 1] -> (1, 3, H, W) Caffe space."""
    return (image[None].flip(1) * 255.0 - torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1)).contiguous()


def uncaffe(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) Caffe space -> (3, H, W) RGB [0, 1], clamped."""
    return ((x.detach() + torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1)) / 255.0).flip(1)[0].clamp(0, 1)


def gram(f: torch.Tensor) -> torch.Tensor:
    """neural-style-pt's Gram: F F^T divided by the number of elements of F."""
    _, c, h, w = f.shape
    flat = f.reshape(c, h * w)
    return flat @ flat.T / f.numel()


def save_png(image: torch.Tensor, path: Path) -> None:
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(__file__).resolve().parents[2] / "shared" / "images"
    p.add_argument("--content", default=shared / "content" / "tubingen.jpg")
    p.add_argument("--style", default=shared / "style" / "starry_night.jpg")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--snapshots", default="25,50,75,100,150,200,250,300,400,500")
    p.add_argument("--init", default="random", choices=("random", "content"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    snapshots = {int(s) for s in args.snapshots.split(",")} | {args.steps}
    torch.manual_seed(args.seed)

    convs = caffe_convs()
    content_rgb, style_rgb = load(args.content, args.size), load(args.style, args.size)
    save_png(content_rgb, args.out / "content.png")
    save_png(style_rgb, args.out / "style.png")
    content, style = caffe(content_rgb), caffe(style_rgb)
    with torch.no_grad():
        content_target = caffe_features(convs, content)[CONTENT_LAYER]
        style_targets = {k: gram(v) for k, v in caffe_features(convs, style).items() if k in STYLE_LAYERS}
    image = (torch.randn_like(content) * 0.001 if args.init == "random" else content.clone()).requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=1, history_size=100, tolerance_grad=-1,
                                  tolerance_change=-1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        f = caffe_features(convs, image)
        loss = CONTENT_WEIGHT * F.mse_loss(f[CONTENT_LAYER], content_target)
        loss = loss + sum(STYLE_WEIGHT * F.mse_loss(gram(f[k]), t) for k, t in style_targets.items())
        tv = ((image[:, :, 1:, :] - image[:, :, :-1, :]).abs().sum()
              + (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().sum())
        loss = loss + TV_WEIGHT * tv
        loss.backward()
        return loss

    times, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = optimizer.step(closure)
        times.append(time.perf_counter() - start)
        if step in snapshots:
            save_png(uncaffe(image), args.out / f"step_{step:04d}.png")
            print(f"step {step}: loss {float(loss.detach()):.4g}, {times[-1]:.1f} s", file=sys.stderr, flush=True)
    (args.out / "times.json").write_text(json.dumps({"size": args.size, "steps": args.steps, "seconds": times,
                                                     "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
