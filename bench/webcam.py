#!/usr/bin/env python3
"""Benchmark of the live webcam mode on the CPU: end-to-end frames/s and capture-to-stylised latency.

    python bench/webcam.py                   # 640x360 "camera" at 30 fps, 20 s per row
    python bench/webcam.py --quick           # smoke run: 160x96, 4 s per row
    python bench/webcam.py --model_path models/udnie.pth   # default: a random network (same speed)

No camera is needed: a generated 30 fps clip is opened as the camera, and stylefusion.run.webcam paces a file to
its frame rate like a real camera (frames the network cannot keep up with are dropped). Rows: headless without
and with recording, and with torch limited to one thread. The first 3 frames (oneDNN warm-up) are left out of
the latency and network-time columns; frames/s counts every frame over the whole run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402,F401  (before av, as in stylefusion.run.webcam)
import av  # noqa: E402,F401  (imported as stylefusion.run.webcam imports it: the same load order)
import torch  # noqa: E402

from bench.video import make_clip  # noqa: E402  (the same panned-noise clip as the video benchmark)
from stylefusion.networks.transformer import TransformerNet  # noqa: E402
from stylefusion.networks.model_files import save_model
from stylefusion.run.webcam import WebcamConfig, WebcamFrame, run_webcam  # noqa: E402

WARMUP_FRAMES = 3
FPS = 30


def run_row(config: WebcamConfig, seconds: float) -> dict[str, float]:
    """One run for `seconds`: frames/s, latency and network time per frame, share of camera frames dropped."""
    latencies: list[float] = []
    network: list[float] = []
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)

    def on_frame(frame: WebcamFrame) -> None:
        if frame.index > WARMUP_FRAMES:
            latencies.append(frame.latency_s)
            network.append(frame.stylise_s)

    timer.start()
    try:
        result = run_webcam(config, on_frame, stop)
    finally:
        timer.cancel()
    ordered = sorted(latencies) or [float("nan")]
    return {"frames": result.frames, "fps": result.fps, "latency": statistics.fmean(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "network": statistics.fmean(network) if network else float("nan"),
            "dropped": result.dropped / max(result.captured, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small frames, short rows")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each row")
    parser.add_argument("--model_path", default=None, help="a model file (default: random weights, same speed)")
    args = parser.parse_args()
    if args.quick:
        args.width, args.height, args.seconds = 160, 96, 4.0
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model_path
        if model is None:
            torch.manual_seed(0)
            model = folder / "random.pth"
            save_model(TransformerNet(), model)
        camera = make_clip(folder / "camera.mp4", args.width, args.height, int(FPS * (args.seconds + 5)), FPS)
        base = dict(camera=str(camera), model_paths=[model], max_size=max(args.width, args.height), device="cpu")
        rows = [(f"headless, no recording ({threads} torch threads)", WebcamConfig(**base), threads),
                (f"headless, recording H.264 veryfast ({threads} torch threads)",
                 WebcamConfig(**base, video_output=folder / "rec.mp4"), threads),
                ("headless, no recording (1 torch thread)", WebcamConfig(**base), 1)]
        print(f"camera: {args.width}x{args.height} at {FPS} fps (a file paced like a camera), "
              f"{args.seconds:g} s per row, device cpu, precision auto\n")
        print("| variant | frames | frames/s | latency mean ms | latency p95 ms | network ms/frame | camera frames "
              "dropped |")
        print("|---|---|---|---|---|---|---|")
        for name, config, n in rows:
            torch.set_num_threads(n)
            r = run_row(config, args.seconds)
            print(f"| {name} | {r['frames']} | {r['fps']:.2f} | {r['latency'] * 1000:.0f} | {r['p95'] * 1000:.0f} "
                  f"| {r['network'] * 1000:.0f} | {r['dropped']:.0%} |", flush=True)
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
