#!/usr/bin/env python3
"""Benchmark of tiled fast-network inference (stylefusion/run/tiling.py): exactness, speed, whole-run memory.

    python bench/tiled.py                        # all sections at the issue's sizes (about 15 min on 2 cores)
    python bench/tiled.py --sections exact speed # only these
    python bench/tiled.py --quick                # smoke run: small sizes

Sections:
- exact: PSNR of the tiled output against one whole-image pass (proxy model, fp32), maps stored in fp32 and bf16.
- speed: seconds per megapixel of a whole-image pass and of a tiled one at a size where both fit
  (interleaved repetitions, minimum taken), in fp32 and, where the CPU has it, bf16.
- run: `fast_style_transfer.py --mode image` on one photo (upscaled from ../shared/images/content when present)
  at 12 MP and 48 MP in a fresh process: wall seconds and the process's peak RSS (from wait4).
Targets (issue #9, 2-core CPU): 48 MP completes with peak RSS <= 4 GB; 12 MP with peak RSS <= 3 GB in at most
1.2x the time of the untiled run; tiled time per pixel <= 1.5x the untiled one where both fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.fast import content_image, interleaved, proxy_model  # noqa: E402
from stylefusion.core.device import cpu_supports_bf16  # noqa: E402
from stylefusion.core.images import tensor_to_pil  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402
from stylefusion.networks.model_files import load_model  # noqa: E402

SHARED = REPO.parent / "shared" / "images" / "content"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).double().pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(flush=True)


def photo(side: int) -> torch.Tensor:
    """(1, 3, side*3/4, side) in [0, 1]: a real photo upscaled when the shared images are present."""
    return torch.nn.functional.interpolate(content_image(512)[None], size=(side * 3 // 4, side), mode="bilinear",
                                           align_corners=False).clamp(0, 1)


def section_exact(model: Path, side: int) -> None:
    network, _ = load_model(model)
    x = photo(side)
    whole = Stylizer(network, "cpu", "fp32", max_memory=1 << 40)(x)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        stylizer = Stylizer(network, "cpu", "fp32", tile_size=side // 4)
        plan = dataclasses.replace(stylizer.tile_plan(*x.shape[-2:]), store_dtype=dtype)
        with torch.inference_mode():
            out = stylizer._tiled_runner().run(x, plan, tuple(x.shape[-2:]), torch.device("cpu"))
        rows.append([f"{x.shape[-1]}x{x.shape[-2]}", str(plan.tile), str(dtype).replace("torch.", ""),
                     f"{psnr(out, whole):.1f}", f"{(out - whole).abs().max().item() * 255:.3f}"])
    table(["size", "tile", "stored maps", "PSNR vs whole (dB)", "max diff (of 255)"], rows)


def section_speed(model: Path, side: int, reps: int, budget_gb: float) -> None:
    network, _ = load_model(model)
    x = photo(side)
    rows = []
    for precision in ["fp32"] + (["bf16"] if cpu_supports_bf16() else []):
        whole = Stylizer(network, "cpu", precision, max_memory=1 << 40)
        tiled = Stylizer(network, "cpu", precision, max_memory=int(budget_gb * 2**30))
        plan = tiled.tile_plan(*x.shape[-2:])
        run_tiled = lambda: tiled._tiled(x, plan)  # noqa: E731  (forced: the image would fit whole)
        best, outs = interleaved({"whole": lambda: whole(x), "tiled": run_tiled}, reps)
        mp = x.shape[-1] * x.shape[-2] / 1e6
        rows.append([precision, f"{x.shape[-1]}x{x.shape[-2]}", f"{best['whole'] / mp:.2f}",
                     f"{best['tiled'] / mp:.2f}", f"{best['tiled'] / best['whole']:.2f}", str(plan.tile),
                     str(plan.store_dtype).replace("torch.", ""), f"{psnr(outs['tiled'], outs['whole']):.1f}"])
    table(["precision", "size", "whole s/MP", "tiled s/MP", "tiled/whole", "tile", "maps", "PSNR"], rows)


def timed_run(argv: list[str]) -> tuple[float, float, int, str]:
    """Run a command; (wall seconds, peak RSS in GB, exit code, last stderr line)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
    return wall, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status), lines[-1] if lines else ""


def section_run(model: Path, sides: list[int], untiled: bool, budget_gb: float | None, precision: str,
                default_too: bool = False) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            src = Path(tmp) / f"photo_{side}.jpg"
            tensor_to_pil(photo(side)[0]).save(src, quality=92)
            mp = side * (side * 3 // 4) / 1e6
            variants = [("tiled" + (f" (--max_memory {budget_gb})" if budget_gb else " (default budget)"),
                         ["--max_memory", str(budget_gb)] if budget_gb else [])]
            if untiled and mp <= 16:  # one pass of a 48 MP image needs ~36 GB: not on a 24 GB machine
                variants.insert(0, ("untiled (--max_memory 22)", ["--max_memory", "22"]))
            if default_too:
                variants.append(("tiled (default budget)", []))
            for name, extra in variants:
                out = Path(tmp) / f"out_{side}_{len(rows)}"
                argv = [sys.executable, "fast_style_transfer.py", "--mode", "image", "--input_images_dir", str(src),
                        "--output_images_dir", str(out), "--model_path", str(model), "--precision", precision,
                        "--max_pixels", "300", *extra]
                wall, rss, code, last = timed_run(argv)
                ok = code == 0 and any(out.rglob("*.jpg"))
                rows.append([f"{side}x{side * 3 // 4} ({mp:.0f} MP)", name, precision, f"{wall:.1f}",
                             f"{rss:.2f}", "ok" if ok else f"FAILED ({code}): {last[:80]}"])
                print(rows[-1], flush=True)
    table(["image", "run", "precision", "wall s", "peak RSS GB", "result"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["exact", "speed", "run"], choices=["exact", "speed", "run"])
    parser.add_argument("--model_path", type=Path, default=None, help="default: a proxy model fitted here")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--speed_side", type=int, default=2048, help="longest side for the speed section")
    parser.add_argument("--run_sides", type=int, nargs="+", default=[4000, 8000])
    parser.add_argument("--untiled", action="store_true", help="run section: also an untiled run per size")
    parser.add_argument("--budget", type=float, default=None, help="GB for the tiled runs (default: the CLI's)")
    parser.add_argument("--default_too", action="store_true", help="run section: also a run with the default budget")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "avx512_bf16")}) \
        if Path("/proc/cpuinfo").exists() else []
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, flags: {' '.join(flags) or 'unknown'}\n")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model_path or proxy_model(Path(tmp) / "proxy.pth", 60 if args.quick else 300)
        if "exact" in args.sections:
            section_exact(model, 256 if args.quick else 1024)
        if "speed" in args.sections:
            section_speed(model, 256 if args.quick else args.speed_side, 1 if args.quick else args.reps,
                          0.05 if args.quick else 1.0)
        if "run" in args.sections:
            section_run(model, [400] if args.quick else args.run_sides, args.untiled, args.budget, args.precision,
                        args.default_too)


if __name__ == "__main__":
    main()
