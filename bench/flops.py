#!/usr/bin/env python3
"""How close one iterative step comes to the machine's floating-point limit (issue #11, item 3).

    python bench/flops.py                  # 512x384, fp32, all threads: matmul limit, step time, ratio
    python bench/flops.py --precision bf16 # on CPUs with native bf16

The limit: the best of a few large square matmuls (n = --matmul_n) in the step's precision. One step's
work: VGG-19 up to relu5_1, forward plus the backward to the image only (the weights are frozen), counted
from the conv layers the library runs (2 FLOP per multiply-add; pooling, ReLU, Grams and L-BFGS are not
counted, so the ratio slightly flatters the limit). The step time is the median of --steps L-BFGS steps of
the library's own run (stylize(), the default losses), after two warm-up steps.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stylefusion.iterative.gatys import IterativeConfig, stylize  # noqa: E402

def step_flop(height: int, width: int) -> float:
    """FLOP of one forward + input-gradient backward through the library's VGG-19 to relu5_1, counted from the
    conv layers it really runs (a forward hook reads each conv's output size and weight shape)."""
    from stylefusion.core.vgg import load_vgg19

    vgg = load_vgg19(["relu5_1"])
    macs = 0

    def count(conv: torch.nn.Conv2d, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * conv.weight[0].numel()  # per output value: C_in * k * k multiply-adds

    hooks = [m.register_forward_hook(count) for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        vgg(torch.rand(1, 3, height, width))
    for hook in hooks:
        hook.remove()
    return 2 * 2 * macs  # forward and backward-to-input each cost one multiply-add per weight use


def matmul_limit(n: int, dtype: torch.dtype, reps: int = 5) -> float:
    """Best FLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def step_seconds(size: int, steps: int, precision: str) -> tuple[float, tuple[int, int]]:
    """Median seconds per L-BFGS step of the library's run at `size` (longest side), and the working size."""
    with tempfile.TemporaryDirectory() as tmp:
        content, style = Path(tmp) / "c.png", Path(tmp) / "s.png"
        Image.effect_noise((size, size * 3 // 4), 64).convert("RGB").save(content)
        Image.effect_noise((size, size), 96).convert("RGB").save(style)
        cfg = IterativeConfig(content_image=content, style_images=[style], output_dir=Path(tmp) / "out",
                              image_size=size, epochs=1, steps_per_epoch=steps + 2, device="cpu",
                              precision=precision, output_format="png")
        result = stylize(cfg)
        with open(result.loss_log) as f:
            rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    per_step = [b - a for a, b in zip(seconds[1:], seconds[2:])]  # the first two steps are warm-up
    return statistics.median(per_step), (int(rows[0]["height"]), int(rows[0]["width"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--matmul_n", type=int, default=4096)
    args = p.parse_args()
    dtype = torch.float32 if args.precision == "fp32" else torch.bfloat16
    limit = matmul_limit(args.matmul_n, dtype)
    seconds, (h, w) = step_seconds(args.size, args.steps, args.precision)
    work = step_flop(h, w)
    floor = work / limit
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}, {args.precision}")
    print("| matmul limit GFLOP/s | step GFLOP | size | limit s/step | measured s/step | ratio | achieved GFLOP/s |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    print(f"| {limit / 1e9:.1f} | {work / 1e9:.1f} | {w}x{h} | {floor:.2f} | {seconds:.2f} | {seconds / floor:.2f} | "
          f"{work / seconds / 1e9:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
