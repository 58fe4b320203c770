#!/usr/bin/env python3
"""Experiment: does the compound regularisation (stability.py, Wang et al. AAAI 2020) reduce video flicker?

    python bench/flicker.py                      # 128 px crops, 300 steps per model, weights 0 and 2000
    python bench/flicker.py --quick              # smoke run: 64 px, 10 steps
    python bench/flicker.py --stability_weights 0,1000,3000 --image_size 64 --precision bf16

Trains one model per --stability_weights entry with stylefusion.training.train (same data, steps and seed;
only the weight differs), then stylises a generated panning clip (a smooth random texture translated a few
pixels per frame) with each and reports:
- flicker: the flow-free score mean|O_t - O_(t-1)| / mean|I_t - I_(t-1)| (flicker.py), lower is steadier;
- warping error: mean|O_t - warp(O_(t-1))| with the input's optical flow (RAFT if its weights are cached
  locally, else OpenCV Farneback);
- style and content loss (unweighted, relative, as in training) of each model's outputs on the training images
  and the clip frames, so a steadier model that simply stylises less is visible.
Target: >= 30 % lower flicker than the weight-0 model at a style loss within 10 % of it.
Data: data/train2014 (content) and data/udnie.jpg (style) from the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stylefusion.dataset import ContentImages, find_images  # noqa: E402
from stylefusion.flicker import flicker_score, warping_error  # noqa: E402
from stylefusion.images import load_image  # noqa: E402
from stylefusion.losses import PerceptualLoss, parse_layer_weights, style_grams  # noqa: E402
from stylefusion.stylize import Stylizer  # noqa: E402
from stylefusion.training import TrainConfig, train  # noqa: E402
from stylefusion.vgg import load_vgg19  # noqa: E402


def panning_clip(size: int, frames: int, shift: int, seed: int = 0) -> torch.Tensor:
    """(T, 3, size, size) in [0, 1]: a multi-scale random texture, translated `shift` px right per frame."""
    generator = torch.Generator().manual_seed(seed)
    width = size + shift * frames
    texture = torch.zeros(1, 3, size, width)
    for cells, amplitude in ((4, 0.5), (12, 0.3), (40, 0.2)):  # coarse shapes + mid detail + fine grain
        noise = torch.rand(1, 3, cells, max(2, cells * width // size), generator=generator)
        texture += amplitude * F.interpolate(noise, size=(size, width), mode="bicubic", align_corners=False)
    texture = texture.clamp(0, 1)
    return torch.cat([texture[..., i * shift:i * shift + size] for i in range(frames)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 10 steps")
    parser.add_argument("--stability_weights", default="0,2000",
                        help="comma-separated --stability_weight values; the first is the baseline")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--clip_frames", type=int, default=12)
    parser.add_argument("--shift", type=int, default=3, help="clip motion in px per frame")
    parser.add_argument("--style_image", default=str(REPO / "data" / "udnie.jpg"))
    parser.add_argument("--content_dataset", default=str(REPO / "data" / "train2014"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", default="fp32", help="training autocast: fp32 or bf16 (faster on CPUs "
                                                            "with native bf16)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.image_size, args.clip_frames = 10, 64, 6
    weights = [float(w) for w in args.stability_weights.split(",")]

    defaults = TrainConfig("", "", "")
    clip = panning_clip(args.image_size, args.clip_frames, args.shift)
    dataset = ContentImages(find_images(args.content_dataset), args.image_size)
    eval_images = torch.stack([dataset.load(i) for i in range(len(dataset))])
    content_layers = parse_layer_weights(defaults.content_layers, "content layers")
    style_layers = parse_layer_weights(defaults.style_layers, "style layers")
    vgg = load_vgg19(list(dict.fromkeys([*content_layers, *style_layers])))
    style = load_image(args.style_image, args.image_size).unsqueeze(0)
    grams = style_grams(vgg, [style], None, style_layers)
    measure = PerceptualLoss(vgg, content_layers, style_layers, content_weight=1.0, style_weight=1.0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for weight in weights:
            config = TrainConfig(style_image=args.style_image, content_dataset=args.content_dataset,
                                 model_save_path=Path(tmp) / f"model_{weight:g}.pth", epochs=10 ** 6,
                                 max_steps=args.steps, batch_size=args.batch_size, image_size=args.image_size,
                                 stability_weight=weight, seed=args.seed, device="cpu", precision=args.precision,
                                 checkpoint_interval=0, preview_interval=0)
            started = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - started
            stylizer = Stylizer(result.network.float(), "cpu")
            with torch.no_grad():
                outputs = stylizer(clip)
                evaluated = stylizer(eval_images)
                on_images = measure(evaluated, measure.content_targets(eval_images), grams)
                on_clip = measure(outputs, measure.content_targets(clip), grams)
            warp = warping_error(clip, outputs)
            rows.append((weight, flicker_score(clip, outputs), warp, on_images, on_clip, seconds))
            print(f"trained stability weight {weight:g} in {seconds:.0f} s", file=sys.stderr, flush=True)

    base = rows[0]
    print(f"compound regularisation experiment: {args.steps} steps, {args.image_size} px, batch "
          f"{args.batch_size}, {args.precision}, seed {args.seed}; clip {args.clip_frames} frames panning {args.shift} px/frame; "
          f"warping error by {base[2].method} flow")
    print(f"{'stability weight':>16} {'flicker':>8} {'vs base':>8} {'warp err':>9} {'vs base':>8} "
          f"{'style (imgs)':>12} {'vs base':>8} {'style (clip)':>12} {'content':>8} {'train s':>8}")
    for weight, score, warp, on_images, on_clip, seconds in rows:
        print(f"{weight:>16g} {score:>8.3f} {score / base[1] - 1:>+8.1%} {warp.value:>9.4f} "
              f"{warp.value / base[2].value - 1:>+8.1%} {on_images.style.item():>12.4f} "
              f"{on_images.style.item() / base[3].style.item() - 1:>+8.1%} {on_clip.style.item():>12.4f} "
              f"{on_images.content.item():>8.3f} {seconds:>8.1f}")
    print("target: flicker >= 30 % lower than the baseline with the style loss (on the images) within 10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
