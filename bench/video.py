#!/usr/bin/env python3
"""Benchmark of video stylisation on the CPU: a plain frame loop vs the stylefusion.run.video pipeline (frames/s).

    python bench/video.py                # 640x360, 48 frames, 2 interleaved repetitions
    python bench/video.py --quick        # smoke run: 160x96, 8 frames, 1 repetition
    python bench/video.py --model_path models/udnie.pth   # default: a random network (same speed)

Rows:
- plain loop (the reference): decode one frame, run the fp32 network on it (NCHW, eager), encode it, repeat;
  one thread of control, nothing overlaps.
- pipeline variants: stylefusion.run.video.stylize_video, i.e. a decoder thread, batched stylisation through
  stylize.Stylizer (channels_last on the CPU), an encoder thread, bounded queues; with batch size, precision
  and channels_last varied to show where the speed comes from.
Target: the pipeline at >= 1.5x the plain loop's frames/s at 640x360. Each variant's time is the minimum over
--reps interleaved repetitions (the variants take turns, so a busy machine slows all of them alike).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from stylefusion.core.device import cpu_supports_bf16  # noqa: E402
from stylefusion.networks.transformer import TransformerNet  # noqa: E402
from stylefusion.networks.model_files import load_model
from stylefusion.run.video import VideoConfig, stylize_video  # noqa: E402


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 24) -> Path:
    """A moving textured clip (H.264, no audio): smooth noise panned a few pixels per frame."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height // 8 + 2, (width + frames * 3) // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.ascontiguousarray(big[:height, i * 3:i * 3 + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def plain_loop(network: TransformerNet, source: Path, target: Path) -> int:
    """Read one, stylise one (fp32, NCHW), write one: what a first implementation does."""
    count = 0
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        video_in = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=video_in.average_rate)
        stream.width, stream.height, stream.pix_fmt = video_in.width, video_in.height, "yuv420p"
        for frame in inp.decode(video_in):
            x = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float()
            with torch.no_grad():
                y = network(x)  # 640x360 sides are multiples of 4: no padding needed
            image = y[0].clamp(0, 255).round().byte().permute(1, 2, 0).contiguous().numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
            count += 1
        for packet in stream.encode():
            out.mux(packet)
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny clip, one repetition")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--model_path", default=None, help="a model file (default: random weights, same speed)")
    args = parser.parse_args()
    if args.quick:
        args.width, args.height, args.frames, args.reps = 160, 96, 8, 1

    if args.model_path:
        network, _ = load_model(args.model_path)
    else:
        torch.manual_seed(0)
        network = TransformerNet().eval().requires_grad_(False)
    bf16 = cpu_supports_bf16()
    variants: list[tuple[str, dict | None]] = [
        ("plain loop: fp32, 1 frame at a time, sequential", None),
        ("pipeline: fp32, batch 1, channels_last", {"batch_size": 1, "precision": "fp32"}),
        ("pipeline: fp32, batch 4, NCHW", {"batch_size": 4, "precision": "fp32", "channels_last": False}),
        ("pipeline: fp32, batch 4, channels_last", {"batch_size": 4, "precision": "fp32"}),
    ]
    if bf16:
        variants += [("pipeline: bf16, batch 1, channels_last", {"batch_size": 1, "precision": "bf16"})]
    variants += [(f"pipeline: CLI default (batch 4, --precision auto = {'bf16' if bf16 else 'fp32'})",
                  {"batch_size": 4, "precision": "auto"})]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = make_clip(folder / "clip.mp4", args.width, args.height, args.frames)
        with torch.no_grad():  # warm up oneDNN's kernels for this size once, for every variant alike
            network(torch.rand(1, 3, args.height, args.width) * 255)
        best = {name: float("inf") for name, _ in variants}
        for rep in range(args.reps):
            for name, options in variants:
                target = folder / f"out_{len(name)}_{rep}.mp4"
                started = time.perf_counter()
                if options is None:
                    frames = plain_loop(network, source, target)
                else:
                    config = VideoConfig(source, target, device="cpu", measure_flicker=False, **options)
                    frames = stylize_video(config, network=network).frames
                best[name] = min(best[name], time.perf_counter() - started)
                assert frames == args.frames, (name, frames)
                target.unlink()

    reference = args.frames / best[variants[0][0]]
    print(f"video stylisation, {args.width}x{args.height}, {args.frames} frames, CPU ({os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 "
          f"{'native' if bf16 else 'not supported'}), best of {args.reps}")
    print(f"{'variant':<62} {'seconds':>8} {'frames/s':>9} {'speed-up':>9}")
    for name, _ in variants:
        fps = args.frames / best[name]
        print(f"{name:<62} {best[name]:>8.2f} {fps:>9.2f} {fps / reference:>8.2f}x")
    print("target: pipeline >= 1.5x the plain loop at 640x360")
    return 0


if __name__ == "__main__":
    sys.exit(main())
