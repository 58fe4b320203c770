#!/usr/bin/env python3
"""Peak memory of one whole-image pass of each fast network, per pixel (what the budget planner assumes).

    python bench/network_peak.py --sides 1024 2048

Each (architecture, size) runs in its own process: ru_maxrss after the pass minus before it, over the pixels
(random weights and a random image: memory does not depend on the values). fp32, CPU, one thread.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(arch: str, side: int) -> dict:
    import torch

    from stylefusion.networks.model_files import build_network
    from stylefusion.run.stylizer import Stylizer

    torch.set_num_threads(1)
    stylizer = Stylizer(build_network(arch), device="cpu", precision="fp32", max_memory=100 << 30)
    stylizer(torch.rand(1, 3, 64, 64))  # load the kernels first
    x = torch.rand(1, 3, side * 3 // 4, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stylizer(x)
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    return {"arch": arch, "size": f"{side}x{side * 3 // 4}", "bytes_per_px": grew / (side * (side * 3 // 4)),
            "planned": stylizer.bytes_per_pixel}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sides", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]))))
        return 0
    print("| network | size | measured peak B/px | planned B/px |\n|---|---|---:|---:|")
    for arch in ("standard", "compact"):
        for side in a.sides:
            r = subprocess.run([sys.executable, __file__, "--child", arch, str(side)], capture_output=True, text=True)
            d = json.loads(r.stdout.splitlines()[-1])
            print(f"| {d['arch']} | {d['size']} | {d['bytes_per_px']:.0f} | {d['planned']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
