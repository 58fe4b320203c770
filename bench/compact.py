#!/usr/bin/env python3
"""Benchmark of the compact network (issue #16) against the standard one on the CPU.

    python bench/compact.py                      # 640x360 and 1920x1080, 3 interleaved repetitions
    python bench/compact.py --quick              # smoke run: 160x96 only, 1 repetition, short clips
    python bench/compact.py --sections forward   # only the forward table (macs, forward, video)

Prints three tables:
- macs: multiply-adds per pixel of both networks (exact, compact.multiply_adds_per_pixel) and their ratio;
- forward: one frame through stylize.Stylizer (the inference form every mode uses: channels_last, fastnet's
  replacements), fp32 (and bf16 where the CPU has avx512_bf16), and through onnxruntime (the exported ONNX
  graph, as many threads as torch uses); ms per frame and frames/s, the minimum over interleaved repetitions;
- video: end to end, stylefusion.run.video.stylize_video (what `--mode video` runs) with the CLI's defaults on
  a generated H.264 clip: decode, stylise, encode, flicker score; wall frames/s, and the CPU seconds of all
  the process's threads, which give the frame rate the run would have with the machine's cores to itself
  ("CPU-bound": frames / (CPU s / cores)) -- on a shared machine the wall figures are inflated, that one less.
Random weights run at the same speed as trained ones. Targets (issue #16, 2-core AVX2 CPU, fp32): compact
>= 10 frames/s at 640x360 and >= 1.5 at 1920x1080 end to end, and >= 8x the standard network's frames/s.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.video import make_clip  # noqa: E402
from stylefusion.networks.compact import multiply_adds_per_pixel  # noqa: E402
from stylefusion.core.device import cpu_supports_bf16  # noqa: E402
from stylefusion.networks.export import export_model  # noqa: E402
from stylefusion.networks.inference import retain_freed_memory  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402
from stylefusion.networks.model_files import ARCHITECTURES, build_network, save_model  # noqa: E402
from stylefusion.run.video import VideoConfig, stylize_video  # noqa: E402

SIZES = ((640, 360), (1920, 1080))


def networks(compact_width: int | None = None) -> dict[str, torch.nn.Module]:
    """Both architectures with seeded random weights (the speed does not depend on the weights)."""
    torch.manual_seed(0)
    return {arch: build_network(arch, compact_width=compact_width).eval().requires_grad_(False)
            for arch in ARCHITECTURES}


def macs_table(nets: dict[str, torch.nn.Module]) -> None:
    macs = {arch: multiply_adds_per_pixel(net) for arch, net in nets.items()}
    print(f"{'network':<10} {'MAC/px':>9} {'ratio':>7}")
    for arch, value in macs.items():
        print(f"{arch:<10} {value:>9.0f} {macs['standard'] / value:>6.1f}x")


def _onnx_runner(net: torch.nn.Module, folder: Path, arch: str):
    """A function running one (1, 3, H, W) frame through onnxruntime, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch's runs get
    session = ort.InferenceSession(str(export_model(net, folder / f"{arch}.onnx")), options,
                                   providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": (x * 255).numpy()})


def forward_table(nets: dict[str, torch.nn.Module], sizes: list[tuple[int, int]], reps: int, folder: Path) -> None:
    """ms per frame of every (size, arch, engine), the minimum of `reps` interleaved repetitions."""
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    runners: dict[tuple, object] = {}
    for arch, net in nets.items():
        for precision in precisions:
            runners[(arch, f"pytorch {precision}")] = Stylizer(net, "cpu", precision)
        onnx = _onnx_runner(net, folder, arch)
        if onnx is not None:
            runners[(arch, "onnxruntime fp32")] = onnx
    print(f"{'size':<10} {'network':<10} {'engine':<17} {'ms/frame':>9} {'frames/s':>9} {'CPU ms':>9} "
          f"{'vs standard':>12}")
    for width, height in sizes:
        x = torch.rand(1, 3, height, width)
        best = {key: float("inf") for key in runners}
        cpu = {key: float("inf") for key in runners}
        for key, run in runners.items():  # warm-up: oneDNN / onnxruntime pick their kernels for this size
            run(x)
        for _ in range(reps):
            for key, run in runners.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                run(x)
                best[key] = min(best[key], time.perf_counter() - started)
                cpu[key] = min(cpu[key], time.process_time() - cpu_started)
        for (arch, engine), seconds in best.items():
            ratio = best[("standard", engine)] / seconds
            print(f"{width}x{height:<5} {arch:<10} {engine:<17} {seconds * 1000:>9.1f} {1 / seconds:>9.2f} "
                  f"{cpu[(arch, engine)] * 1000:>9.1f} {ratio:>11.1f}x", flush=True)


def _run_video(model: Path, clip: Path, target: Path, precision: str = "auto") -> tuple[int, float, float]:
    """(frames, wall s, CPU s of this process's threads) of one video run with --mode video's defaults."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = stylize_video(VideoConfig(video_input=clip, video_output=target, model_path=model, precision=precision))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    target.unlink()
    return result.frames, wall, cpu


def video_table(nets: dict[str, torch.nn.Module], sizes: list[tuple[int, int]], frames: dict[str, int],
                reps: int, folder: Path, precision: str = "auto") -> None:
    """End-to-end video frames/s of both networks at every size (best of `reps`, interleaved)."""
    models = {}
    for arch, net in nets.items():
        models[arch] = folder / f"{arch}.pth"
        save_model(net, models[arch])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"{'size':<10} {'network':<10} {'frames':>6} {'wall s':>8} {'frames/s':>9} {'CPU s':>8} "
          f"{'CPU-bound frames/s':>19} {'vs standard':>12}")
    for width, height in sizes:
        clips = {arch: make_clip(folder / f"clip_{arch}_{width}.mp4", width, height, n) for arch, n in frames.items()}
        best = {arch: (float("inf"), float("inf")) for arch in nets}
        for rep in range(reps):
            for arch in nets:
                count, wall, cpu = _run_video(models[arch], clips[arch], folder / f"out_{arch}_{rep}.mp4", precision)
                assert count == frames[arch], (arch, count)
                best[arch] = (min(best[arch][0], wall), min(best[arch][1], cpu))
        for arch, (wall, cpu) in best.items():
            # CPU-bound: the frame rate if this run had every core to itself (its CPU seconds spread over them).
            bound = frames[arch] / (cpu / cores)
            ratio = (frames[arch] / wall) / (frames["standard"] / best["standard"][0])
            print(f"{width}x{height:<5} {arch:<10} {frames[arch]:>6} {wall:>8.1f} {frames[arch] / wall:>9.2f} "
                  f"{cpu:>8.1f} {bound:>19.2f} {ratio:>11.1f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 160x96, one repetition, short clips")
    parser.add_argument("--sections", nargs="+", default=["macs", "forward", "video"],
                        choices=["macs", "forward", "video"])
    parser.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for w, h in SIZES], help="WIDTHxHEIGHT ...")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (the minimum is kept)")
    parser.add_argument("--video_reps", type=int, default=1, help="repetitions of each --mode video run")
    parser.add_argument("--frames", type=int, default=48, help="frames of the compact network's clips")
    parser.add_argument("--precision", default="auto",
                        help="video section: --mode video's --precision (auto: bf16 where the CPU has it; fp32 "
                             "for the issue's AVX2 targets)")
    parser.add_argument("--compact_width", type=int, default=None, help="the compact network's width (default: 32)")
    parser.add_argument("--standard_frames", type=int, default=4, help="frames of the standard network's clips")
    args = parser.parse_args()
    sizes = [(160, 96)] if args.quick else [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    if args.quick:
        args.reps, args.frames, args.standard_frames = 1, 8, 4
    retain_freed_memory()  # as the CLIs do
    nets = networks(args.compact_width)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    simd = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16") if re.search(rf"\b{f}\b", flags))
    print(f"compact vs standard network, CPU ({os.cpu_count()} cores, {simd or 'no AVX'}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if "macs" in args.sections:
            macs_table(nets)
        if "forward" in args.sections:
            forward_table(nets, sizes, args.reps, Path(tmp))
        if "video" in args.sections:
            frames = {"standard": args.standard_frames, "compact": args.frames}
            video_table(nets, sizes, frames, args.video_reps, Path(tmp), args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
