#!/usr/bin/env python3
"""Benchmark of iterative style transfer at large sizes (not a test): peak RSS and seconds per step.

Each size runs in its own process, so its peak RSS (ru_maxrss) is its own; a few steps only. The first step
is left out of the time per step when there are at least two.

    python bench/iterative_large.py --run 512:3 --run 2048:2:6 --run 4096:1:10    # SIZE:STEPS[:MAX_MEMORY_GB]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(size: int, steps: int, max_memory: float | None, tile: int | None, content: Path, style: Path) -> dict:
    """One stylize() run in this process; returns its plan, timings and peak RSS."""
    from stylefusion.iterative.gatys import IterativeConfig, stylize

    tiles: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory() as d:
        cfg = IterativeConfig(content_image=content, style_images=[style], output_dir=d, image_size=size, epochs=1,
                              steps_per_epoch=steps, device="cpu", max_memory=max_memory, tile_size=tile)
        t0 = time.perf_counter()
        result = stylize(cfg, lambda p: tiles.append(p.tile) if p.tile else None)
        total = time.perf_counter() - t0
        with open(result.loss_log) as f:
            rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    per_step = (seconds[-1] - seconds[0]) / (len(seconds) - 1) if len(seconds) > 1 else seconds[0]
    return {"size": f"{rows[0]['width']}x{rows[0]['height']}", "steps": steps, "max_memory": max_memory,
            "tile_passes": tiles[-1][1] if tiles else 0, "per_step": per_step, "first_step": seconds[0],
            "total": total, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "loss": [float(rows[0]["total"]), float(rows[-1]["total"])]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", default=[], help="SIZE:STEPS[:MAX_MEMORY_GB[:TILE]], repeatable")
    p.add_argument("--content", type=Path, default=REPO / "data" / "city.jpg")
    p.add_argument("--style", type=Path, default=REPO / "data" / "udnie.jpg")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        size, steps, mem, tile = (a.child.split(":") + ["", ""])[:4]
        print(json.dumps(child(int(size), int(steps), float(mem) if mem else None, int(tile) if tile else None,
                               a.content, a.style)))
        return 0
    import torch

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {a.content.name} + {a.style.name}")
    print("\n| size | steps | --max_memory GB | tile passes/step | s/step | first step s | peak RSS GB "
          "| loss first -> last |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in a.run or ["512:3"]:
        r = subprocess.run([sys.executable, __file__, "--child", spec, "--content", str(a.content), "--style",
                            str(a.style)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"| {spec} | failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode} |")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"| {d['size']} | {d['steps']} | {d['max_memory'] or 'default'} | {d['tile_passes'] or 'whole'} | "
              f"{d['per_step']:.1f} | {d['first_step']:.1f} | {d['peak_rss_gb']:.2f} | "
              f"{d['loss'][0]:.4g} -> {d['loss'][1]:.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
