#!/usr/bin/env python3
"""Benchmark of iterative style transfer (not a test): prints tables, records nothing by itself.

1. Seconds per optimisation step at --size px for lbfgs/adam x fp32/bf16.
2. Time to reach a fixed loss: the loss that --steps single-scale L-BFGS steps reach at --size, versus the
   coarse-to-fine schedule (the loss compared is always the full-size loss, read from the per-step log).

    python bench/iterative.py                 # 512 px, 500 reference steps (about an hour on 2 CPU cores)
    python bench/iterative.py --quick         # smoke run at 96 px
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from stylefusion.core.device import cpu_supports_bf16  # noqa: E402
from stylefusion.iterative.gatys import IterativeConfig, stylize  # noqa: E402


def run(content: Path, style: Path, out: Path, **kw) -> list[dict]:
    """One stylize() run; returns the per-step log rows with floats."""
    cfg = IterativeConfig(content_image=content, style_images=[style], output_dir=out, device="cpu", **kw)
    result = stylize(cfg)
    with open(result.loss_log) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def step_times(content: Path, style: Path, size: int, steps: int, tmp: Path) -> list[tuple[str, str, float]]:
    rows = []
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    for optimizer in ("lbfgs", "adam"):
        for precision in precisions:
            log = run(content, style, tmp / f"t_{optimizer}_{precision}", image_size=size, multiscale=False,
                      epochs=1, steps_per_epoch=steps + 2, optimizer=optimizer, precision=precision)
            per_step = (log[-1]["seconds"] - log[1]["seconds"]) / (len(log) - 2)  # skip 2 warm-up steps
            rows.append((optimizer, precision, per_step))
    return rows


def precision_quality(content: Path, style: Path, size: int, steps: int, tmp: Path) -> list[tuple[str, float, float]]:
    """Final images of fp32 and bf16 runs, both scored by the same fp32 loss; returns (precision, loss, s)."""
    from stylefusion.core.images import load_image, resize_to
    from stylefusion.core.losses import PerceptualLoss, parse_layer_weights, style_grams
    from stylefusion.core.vgg import load_vgg19

    rows = []
    for precision in ("fp32", "bf16"):
        cfg = IterativeConfig(content_image=content, style_images=[style], output_dir=tmp / f"q_{precision}",
                              device="cpu", image_size=size, multiscale=False, epochs=1, steps_per_epoch=steps,
                              precision=precision, output_format="png")
        t0 = time.perf_counter()
        image = stylize(cfg).image.unsqueeze(0)
        elapsed = time.perf_counter() - t0
        cl, sl = parse_layer_weights(cfg.content_layers, "c"), parse_layer_weights(cfg.style_layers, "s")
        vgg = load_vgg19([*cl, *sl])
        loss = PerceptualLoss(vgg, cl, sl, cfg.content_weight, cfg.style_weight, cfg.tv_weight)
        c = resize_to(load_image(content), tuple(image.shape[-2:])).unsqueeze(0)
        s_img = load_image(style)
        s_img = resize_to(s_img, tuple(round(d * size / max(s_img.shape[-2:])) for d in s_img.shape[-2:]))
        with torch.no_grad():
            total = loss(image, loss.content_targets(c), style_grams(vgg, [s_img.unsqueeze(0)], None, sl)).total
        rows.append((precision, float(total), elapsed))
    return rows


def time_to_loss(content: Path, style: Path, size: int, steps: int, tmp: Path, precision: str,
                 epochs: int) -> dict:
    single = run(content, style, tmp / "single", image_size=size, multiscale=False, epochs=1,
                 steps_per_epoch=steps, precision=precision)
    target, t_single = single[-1]["total"], single[-1]["seconds"]
    # Same total step count, split by the library's default coarse-to-fine plan over `epochs` epochs.
    multi = run(content, style, tmp / "multi", image_size=size, multiscale=True, epochs=epochs,
                steps_per_epoch=steps // epochs, precision=precision)
    full = [r for r in multi if max(r["height"], r["width"]) == size]
    hit = next((r for r in full if r["total"] <= target), None)
    # Contention-free cost: steps weighted by pixels relative to a full-size step.
    area = full[0]["height"] * full[0]["width"]
    upto = [r for r in multi if hit is None or r["step"] <= hit["step"]]
    cost = sum(r["height"] * r["width"] / area for r in upto)
    at_same_time = [r for r in single if r["seconds"] <= multi[-1]["seconds"]]
    return {"single_at_multi_time": at_same_time[-1]["total"] if at_same_time else None,
            "cost_hit": cost if hit else None, "target": target, "t_single": t_single,
            "multi_final": multi[-1]["total"],
            "t_multi_total": multi[-1]["seconds"], "t_hit": hit["seconds"] if hit else None,
            "hit_step": int(hit["step"]) if hit else None, "coarse_steps": len(multi) - len(full)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content", type=Path, default=REPO / "data" / "city.jpg")
    p.add_argument("--style", type=Path, default=REPO / "data" / "udnie.jpg")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=500, help="reference single-scale L-BFGS steps")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the multi-scale run (same total steps)")
    p.add_argument("--timing_steps", type=int, default=5)
    p.add_argument("--precision", default="fp32", help="precision of the time-to-loss runs")
    p.add_argument("--skip_timing", action="store_true")
    p.add_argument("--quality_steps", type=int, default=0,
                   help="also compare fp32 and bf16 final loss (scored in fp32) after this many steps")
    p.add_argument("--skip_time_to_loss", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (96 px, 20 steps)")
    a = p.parse_args()
    if a.quick:
        a.size, a.steps, a.timing_steps, a.epochs = 96, 20, 2, 4

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {a.content.name} + {a.style.name}, {a.size} px")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not a.skip_timing:
            print("\n| optimizer | precision | s/step |\n|---|---|---|")
            for optimizer, precision, sec in step_times(a.content, a.style, a.size, a.timing_steps, tmp):
                print(f"| {optimizer} | {precision} | {sec:.3f} |", flush=True)
        if a.quality_steps:
            print(f"\n| precision | loss after {a.quality_steps} L-BFGS steps (scored in fp32) | time (s) |"
                  "\n|---|---|---|")
            for precision, loss, sec in precision_quality(a.content, a.style, a.size, a.quality_steps, tmp):
                print(f"| {precision} | {loss:.4g} | {sec:.1f} |", flush=True)
        if a.skip_time_to_loss:
            return 0
        r = time_to_loss(a.content, a.style, a.size, a.steps, tmp, a.precision, a.epochs)
    print("\n| run | time (s) | loss |\n|---|---|---|")
    print(f"| single-scale L-BFGS, {a.steps} steps at {a.size} | {r['t_single']:.1f} | {r['target']:.4g} |")
    print(f"| multi-scale, {a.steps} steps ({r['coarse_steps']} coarse), whole run | {r['t_multi_total']:.1f} "
          f"| {r['multi_final']:.4g} |")
    if r["single_at_multi_time"] is not None:
        print(f"| single-scale after the multi-scale run's time | {r['t_multi_total']:.1f} "
              f"| {r['single_at_multi_time']:.4g} |")
    if r["t_hit"] is None:
        print("| multi-scale reaches the single-scale loss | never | - |")
    else:
        print(f"| multi-scale reaches the single-scale loss (step {r['hit_step']}) | {r['t_hit']:.1f} "
              f"| <= {r['target']:.4g} |")
        print(f"\nratio multi/single time to the same loss: {r['t_hit'] / r['t_single']:.2f} (target <= 0.33); "
              f"in full-size-step equivalents: {r['cost_hit']:.0f} / {a.steps} = {r['cost_hit'] / a.steps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
