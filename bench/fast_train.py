#!/usr/bin/env python3
"""Training step time of the fast style transfer network: a straightforward loop vs ours (seconds per step).

    python bench/fast_train.py                 # 256x256 crops, batch 4 (Johnson et al.'s setting)
    python bench/fast_train.py --quick         # smoke test: 64x64, batch 1, 2 timed steps

Rows:
- straightforward (the reference): what a first implementation does. The whole VGG-19 feature stack (to
  relu5_4) is the loss network and is left trainable, so autograd records every VGG pass and backward also
  computes VGG weight gradients; the content target is not detached, and the style image goes through VGG
  every step to get its Gram matrices.
- pytorch/examples-like (for context): whole frozen VGG-19, content pass without a graph, style Grams once.
- ours: stylefusion.training.loop.train_step: content target under no_grad and only up to relu2_2, VGG frozen and
  truncated at relu4_3, style Grams once; optionally channels_last and bf16/fp16 autocast (where supported).
Target: ours (fp32) at most 0.6x the straightforward step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylefusion.core.device import check_precision, needs_grad_scaler, resolve_device  # noqa: E402
from stylefusion.core.errors import DeviceError  # noqa: E402
from stylefusion.core.losses import PerceptualLoss, content_loss, gram_matrix, style_grams, style_loss  # noqa: E402
from stylefusion.training.loop import TrainConfig, train_step  # noqa: E402
from stylefusion.networks.transformer import TransformerNet  # noqa: E402
from stylefusion.core.vgg import load_vgg19  # noqa: E402

CONTENT = {"relu2_2": 1.0}
STYLE = dict.fromkeys(TrainConfig.style_layers.split(","), 1.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per call of `step` after warm-up."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline(device: torch.device, batch: torch.Tensor, style: torch.Tensor, args, trainable: bool,
             style_every_step: bool) -> float:
    """A loop on the whole VGG-19 (to relu5_4); `trainable`: VGG weights require grad, so every pass is recorded."""
    vgg = load_vgg19([*CONTENT, *STYLE, "relu5_4"], args.vgg_weights).to(device).requires_grad_(trainable)
    layers = [*CONTENT, *STYLE, "relu5_4"]  # every pass runs the whole feature stack
    fixed_grams = None if style_every_step else {n: gram_matrix(f).detach() for n, f in vgg(style, layers).items()}
    torch.manual_seed(0)
    net = TransformerNet().to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    weights = TrainConfig  # the default loss weights (class attributes)

    def step() -> None:
        grams = fixed_grams or {n: gram_matrix(f) for n, f in vgg(style, layers).items()}
        y = net(batch * 255.0) / 255.0
        fy, fx = vgg(y, layers), vgg(batch, layers)  # the content target is not detached
        loss = weights.content_weight * content_loss(fy["relu2_2"], fx["relu2_2"])
        loss = loss + weights.style_weight * sum(style_loss(fy[n], grams[n]) for n in STYLE)
        optimizer.zero_grad()
        vgg.zero_grad()
        loss.backward()
        optimizer.step()
    return _time(step, device, args.warmup, args.steps)


def ours(device: torch.device, batch: torch.Tensor, style: torch.Tensor, args, precision: str = "fp32",
         channels_last: bool = False, stability_weight: float = 0.0) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    vgg = load_vgg19([*CONTENT, *STYLE], args.vgg_weights).to(device).to(memory_format=fmt)
    weights = TrainConfig  # the default loss weights (class attributes)
    loss_fn = PerceptualLoss(vgg, CONTENT, STYLE, weights.content_weight, weights.style_weight, weights.tv_weight)
    grams = style_grams(vgg, [style], None, STYLE)
    torch.manual_seed(0)
    net = TransformerNet().to(device).to(memory_format=fmt).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, precision))
    x = batch.contiguous(memory_format=fmt)
    generator = torch.Generator().manual_seed(0)
    return _time(lambda: train_step(net, loss_fn, grams, x, optimizer, scaler, precision, stability_weight,
                                    generator), device, args.warmup, args.steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vgg_weights", default="caffe")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64x64, batch 1, 1 warm-up, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.batch_size, args.steps, args.warmup = 64, 1, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    batch = torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=gen).to(device)
    style = torch.rand(1, 3, args.image_size, args.image_size, generator=gen).to(device)

    rows = [("straightforward (full VGG-19, trainable, content pass with grad, style Grams every step)",
             baseline(device, batch, style, args, trainable=True, style_every_step=True)),
            ("pytorch/examples-like (full VGG-19, frozen, style Grams once)",
             baseline(device, batch, style, args, trainable=False, style_every_step=False))]
    rows.append(("ours fp32", ours(device, batch, style, args)))
    rows.append(("ours fp32 channels_last", ours(device, batch, style, args, channels_last=True)))
    for precision in ("bf16", "fp16"):
        try:
            check_precision(precision, device)
        except DeviceError:
            continue
        rows.append((f"ours {precision}", ours(device, batch, style, args, precision=precision)))
    rows.append(("ours fp32 + stability term (2x forward)", ours(device, batch, style, args, stability_weight=1.0)))

    base = rows[0][1]
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"\nTraining step, {args.image_size}x{args.image_size}, batch {args.batch_size}, {device}{threads}, "
          f"median of {args.steps} steps after {args.warmup} warm-up\n")
    print("| loop | s/step | vs straightforward |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} | {seconds / base:.2f}x |")
    ratio = rows[2][1] / base
    print(f"\nours fp32 / straightforward = {ratio:.2f} (target <= 0.60): {'PASS' if ratio <= 0.6 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
