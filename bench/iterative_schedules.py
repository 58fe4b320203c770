#!/usr/bin/env python3
"""Experiment (not a test): compare optimisation schedules of iterative style transfer step by step.

Each positional argument is one schedule: comma-separated stages `size:steps[:optimizer[:precision]]`,
coarse to fine; each stage starts from the previous stage's image upsampled (bicubic), with a fresh optimiser.
optimizer: lbfgs (the library's: one iteration per step, no line search), lbfgs+ls (strong-Wolfe line
search), lbfgs+pyrN (L-BFGS on an N-level Laplacian-pyramid parameterisation of the image), adam.
The table gives the loss of the last stage after k of its steps, so schedules that end at the same size are
compared on the same loss; seconds are this process's wall time.

    python bench/iterative_schedules.py 256:400 128:150,256:400 256:400:lbfgs:fp32 --threads 1
    python bench/iterative_schedules.py 512:300 128:150,256:150,512:250 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stylefusion.core.device import autocast  # noqa: E402
from stylefusion.core.images import load_image, resize_to, scaled_size  # noqa: E402
from stylefusion.iterative.gatys import IterativeConfig  # noqa: E402
from stylefusion.core.losses import (PerceptualLoss, content_loss, parse_layer_weights, style_grams,  # noqa: E402
                                     style_loss)
from stylefusion.core.vgg import load_vgg19  # noqa: E402


@dataclass
class Stage:
    size: int
    steps: int
    optimizer: str = "lbfgs"
    precision: str = "bf16"


@dataclass
class Run:
    name: str
    stages: list[Stage]
    losses: list[float] = field(default_factory=list)    # last stage, per step
    seconds: list[float] = field(default_factory=list)   # wall time since the run started, per last-stage step
    breakdown: str = ""


def parse_schedule(text: str, precision: str) -> list[Stage]:
    stages = []
    for item in text.split(","):
        parts = item.split(":")
        stages.append(Stage(int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else "lbfgs",
                            parts[3] if len(parts) > 3 else precision))
    return stages


def make_optimizer(name: str, image: torch.Tensor, size: tuple[int, int], history: int):
    """(optimizer, compose) where compose() builds the image from the optimised parameters."""
    coarse: list[torch.Tensor] = []
    if "+pyr" in name:  # image = full-res level + upsampled coarser levels (all start at zero but the first)
        levels = int(name.split("+pyr")[1])
        coarse = [torch.zeros(1, 3, max(1, size[0] >> k), max(1, size[1] >> k), requires_grad=True)
                  for k in range(1, levels)]
    params = [image, *coarse]

    def compose() -> torch.Tensor:
        out = image
        for z in coarse:
            out = out + F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        return out
    if name.startswith("lbfgs"):
        return torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=history, tolerance_grad=-1,
                                 tolerance_change=-1,
                                 line_search_fn="strong_wolfe" if "+ls" in name else None), compose
    return torch.optim.Adam(params, lr=0.02), compose


def run(schedule: Run, content_path: Path, style_path: Path, history: int) -> None:
    cfg = IterativeConfig(content_path, [style_path], "unused")
    cl, sl = parse_layer_weights(cfg.content_layers, "c"), parse_layer_weights(cfg.style_layers, "s")
    vgg = load_vgg19(list(dict.fromkeys([*cl, *sl])))
    loss_fn = PerceptualLoss(vgg, cl, sl, cfg.content_weight, cfg.style_weight, cfg.tv_weight)
    content_full, style_full = load_image(content_path), load_image(style_path)
    torch.manual_seed(0)
    device = torch.device("cpu")
    image = None
    start = time.perf_counter()
    for index, stage in enumerate(schedule.stages):
        size = scaled_size(*content_full.shape[-2:], stage.size)
        content = resize_to(content_full, size)
        style = resize_to(style_full, scaled_size(*style_full.shape[-2:], max(size)))
        with autocast(device, stage.precision):
            targets = loss_fn.content_targets(content.unsqueeze(0))
            grams = style_grams(vgg, [style.unsqueeze(0)], None, sl)
        start_image = content.unsqueeze(0) if image is None else F.interpolate(
            image, size=size, mode="bicubic", align_corners=False)
        image = start_image.contiguous().requires_grad_(True)
        optimizer, compose = make_optimizer(stage.optimizer, image, size, history)
        last = index == len(schedule.stages) - 1
        for _ in range(stage.steps):
            losses = []

            def closure() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, stage.precision):
                    total = loss_fn(compose(), targets, grams).total
                total.backward()
                losses.append(float(total.detach()))
                return total

            optimizer.step(closure)
            if stage.optimizer == "adam":
                with torch.no_grad():
                    image.clamp_(0, 1)
            if last:
                schedule.losses.append(losses[-1])
                schedule.seconds.append(time.perf_counter() - start)
        image = compose().detach().float()
        print(f"  {schedule.name}: stage {stage.size}px x {stage.steps} {stage.optimizer} {stage.precision} "
              f"done at {time.perf_counter() - start:.1f} s, loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    with torch.no_grad(), autocast(device, schedule.stages[-1].precision):
        feats = vgg(image, list(dict.fromkeys([*cl, *sl])))
        parts = [f"content {cfg.content_weight * float(content_loss(feats[n], targets[n])):.3f}" for n in cl]
        parts += [f"{n} {cfg.style_weight * float(style_loss(feats[n], grams[n])):.4f}" for n in sl]
    schedule.breakdown = ", ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("schedules", nargs="+", help="size:steps[:optimizer[:precision]],... (see above)")
    p.add_argument("--content", type=Path, default=REPO / "data" / "city.jpg")
    p.add_argument("--style", type=Path, default=REPO / "data" / "udnie.jpg")
    p.add_argument("--precision", default="bf16", help="stages without their own precision")
    p.add_argument("--history", type=int, default=100, help="L-BFGS history size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--at", default="0,10,25,50,100,150,200,250,300,400,499", help="last-stage steps to print")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    runs = [Run(text, parse_schedule(text, a.precision)) for text in a.schedules]
    for r in runs:
        run(r, a.content, a.style, a.history)
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}, {a.content.name} + {a.style.name}, "
          f"L-BFGS history {a.history}; loss of the last stage after k of its steps (wall s since the run began)")
    print("| k | " + " | ".join(r.name for r in runs) + " |\n|---|" + "---|" * len(runs))
    for k in (int(s) for s in a.at.split(",")):
        cells = [f"{r.losses[k]:.4f} ({r.seconds[k]:.0f} s)" if k < len(r.losses) else "" for r in runs]
        if any(cells):
            print(f"| {k} | " + " | ".join(cells) + " |")
    print("\nfinal loss terms (weighted):")
    for r in runs:
        print(f"- {r.name}: {r.breakdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
