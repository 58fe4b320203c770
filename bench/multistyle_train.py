#!/usr/bin/env python3
"""Training seconds per step with one style vs several (conditional instance norm, stylefusion/networks/cin.py).

    python bench/multistyle_train.py                       # 128 px crops, batch 4, 1 vs 3 styles, 3 rounds
    python bench/multistyle_train.py --quick               # smoke test: 64 px, batch 1, 4 steps, 1 round

Each run is the real `train()` (data loading included) on data/train2014 with data/udnie.jpg (+ city.jpg,
astronaut.jpg as the 2nd and 3rd style); a step's time is the gap between two progress callbacks, the first
`--warmup` steps left out. Runs alternate (1, N, 1, N, ...) so a shared machine's load hits both alike; the
table gives each variant's median and the ratio N/1 of the medians. Target (issue #13): ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stylefusion.training.loop import TrainConfig, TrainProgress, train  # noqa: E402

STYLES = [REPO / "data" / name for name in ("udnie.jpg", "city.jpg", "astronaut.jpg")]


def step_times(styles: list[Path], args: argparse.Namespace, out: Path) -> list[float]:
    """Seconds of each step after the warm-up, for one training run."""
    stamps: list[float] = []

    def on_progress(progress: TrainProgress) -> None:
        stamps.append(time.perf_counter())

    config = TrainConfig(style_image=[str(s) for s in styles] if len(styles) > 1 else str(styles[0]),
                         content_dataset=str(REPO / "data" / "train2014"), model_save_path=str(out / "m.pth"),
                         batch_size=args.batch_size, image_size=args.image_size, epochs=1000,
                         max_steps=args.warmup + args.steps + 1, checkpoint_interval=0, preview_interval=0,
                         device=args.device, num_workers=0)
    train(config, on_progress)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return gaps[args.warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", type=int, default=3, help="styles of the multi-style run (at most 3)")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating (1 style, N styles) pairs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.batch_size, args.steps, args.warmup, args.rounds = 64, 1, 4, 1, 1
    variants = {1: STYLES[:1], args.styles: STYLES[:args.styles]}
    times: dict[int, list[float]] = {n: [] for n in variants}
    runs: dict[int, list[float]] = {n: [] for n in variants}  # each run's median: the spread between runs
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n, styles in variants.items():
                gaps = step_times(styles, args, Path(tmp) / f"r{r}_{n}")
                times[n] += gaps
                runs[n].append(statistics.median(gaps))
    print(f"device {args.device}, {args.image_size} px crops, batch {args.batch_size}, {args.steps} timed steps "
          f"x {args.rounds} alternating rounds, torch threads {torch.get_num_threads()}")
    print("| styles | steps timed | median s/step | mean s/step | ratio to 1 style (medians) | median of each run |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(times[1])
    for n, values in times.items():
        median = statistics.median(values)
        print(f"| {n} | {len(values)} | {median:.3f} | {statistics.fmean(values):.3f} | {median / base:.3f} | "
              + ", ".join(f"{m:.2f}" for m in runs[n]) + " |")


if __name__ == "__main__":
    main()
