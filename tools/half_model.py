#!/usr/bin/env python3
"""Write a copy of a StyleFusion model file with fp16 weights (half the size) and report how close its output is.

    python tools/half_model.py trained.pth models/udnie.pth [--check data/astronaut.jpg ...]

Loading restores fp32 (the network is built in fp32 and load_state_dict casts), so the only change is the
rounding of each weight to fp16; --check prints the PSNR between the two files' outputs on those images (the
shipped model's bar is 45 dB, issue #15). The settings (training options, architecture) are kept as they are.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from stylefusion.core.errors import StyleFusionError  # noqa: E402
from stylefusion.core.images import atomic_path, load_image  # noqa: E402
from stylefusion.networks.model_files import load_model  # noqa: E402
from stylefusion.core.weights import load_weights  # noqa: E402
from stylefusion.networks.transformer import MODEL_FORMAT  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 255) - b.clamp(0, 255)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--check", nargs="*", type=Path, default=[REPO / "data" / "astronaut.jpg"])
    a = p.parse_args()
    try:
        full, _ = load_model(a.source)  # ModelError, in one line, for anything that is not a usable model
    except StyleFusionError as exc:
        print(f"half_model.py: {exc}", file=sys.stderr)
        return 1
    data = load_weights(a.source, "cpu")
    if not (isinstance(data, dict) and data.get("format") == MODEL_FORMAT):
        print("half_model.py: the source must be a StyleFusion model file (with its settings)", file=sys.stderr)
        return 1
    state = {k: v.half() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    with atomic_path(a.target) as tmp:
        torch.save({**data, "state_dict": state}, tmp)
    half, _ = load_model(a.target)
    print(f"{a.target}: {a.target.stat().st_size / 1e6:.2f} MB (was {a.source.stat().st_size / 1e6:.2f} MB)")
    with torch.inference_mode():
        for image in a.check:
            x = load_image(image)[None] * 255
            print(f"{image.name}: fp16 weights vs fp32 weights, PSNR {psnr(half(x), full(x)):.1f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
