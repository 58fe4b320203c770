"""Iterative neural style transfer (Gatys et al. 2016): optimise an image so its VGG-19 features match a
content image and its Gram matrices match one or more style images. Saves an image after each epoch.

    python stylefusion.py                      # demo on the sample images in data/
    python stylefusion.py --content_image data/city.jpg --style_image data/udnie.jpg \
        --output_dir output/iterative_style_transfer --epochs 20 --steps_per_epoch 100

This module (run as stylefusion.py or the `stylefusion` command) only parses arguments, shows progress and
reports errors; the work is in stylefusion/iterative/gatys.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (HelpFormatter, OneLineParser, add_live_args, add_version_arg, apply_pixel_limit, fraction, info,
                     non_negative_float, non_negative_int, output_path, positive_float, positive_int, run_cli,
                     start_live, mask_warnings, first_frame_warnings, in_range, live_unused, seed, WeightList)

if TYPE_CHECKING:
    from stylefusion.iterative.gatys import IterativeProgress

# The demo images travel with the package (copies of data/city.jpg and data/udnie.jpg), so the installed
# `stylefusion` command finds them from any folder.
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_CONTENT = DEMO_DIR / "city.jpg"
DEMO_STYLE = DEMO_DIR / "udnie.jpg"
# The demo (no --content_image/--style_image) is shorter than a normal run so a newcomer sees a result within two
# minutes on a 2-core CPU without bf16 (bench/RESULTS.md: "The demo"); it starts from Magenta's rendering, already
# stylised, so 40 steps refine it. At 384 px, not the normal 512: at 512 an fp32 step took 3.8 s on a 2-core Intel
# Xeon restricted to AVX2 (the demo 2 min 42 s to 3 min 14 s there), at 384 2.0 s (1 min 31 s to 1 min 42 s).
# Explicit options override it.
DEMO_EPOCHS = 4
DEMO_STEPS_PER_EPOCH = 10
DEMO_IMAGE_SIZE = 384

EPILOG = ("Sizes, in px: --image_size is the longest side of the result; --style_scale sizes the style images as a "
          "ratio of it (fast_style_transfer.py: --max_size caps the longest side of each input, --image_size is "
          "the side of the square training crops, --style_size the style image's longest side in px). The "
          "progress bar and status lines go to stderr; stdout stays empty.")


def build_parser() -> argparse.ArgumentParser:
    from stylefusion.iterative.gatys import (ARBITRARY_STYLE_LAYERS, RAW_STYLE_LAYERS, RELATIVE_STYLE_LAYERS,
                                             STYLE_BALANCES)
    from stylefusion.iterative.gatys import IterativeConfig as C  # defaults live in one place: the config

    p = OneLineParser(description=__doc__.split("\n\n")[0], epilog=EPILOG, formatter_class=HelpFormatter)
    add_version_arg(p)
    io = p.add_argument_group("images")
    io.add_argument("--content_image", default=None,
                    help="content photo (default: the demo photo, the same as data/city.jpg)")
    io.add_argument("--style_image", nargs="+", action="extend", default=None, metavar="IMAGE",
                    help="one or more style images (default: the demo style, the same as data/udnie.jpg)")
    io.add_argument("--style_blend_weights", action=WeightList, type=non_negative_float, default=None, metavar="W",
                    help="one weight per style image, e.g. 0.7 0.3 or 0.7,0.3 (default: equal); with --style_masks "
                         "it scales that style's region (default 1 each)")
    io.add_argument("--style_masks", nargs="+", action="extend", default=None, metavar="MASK",
                    help="one greyscale mask per style image: that style only where the mask is white, partly "
                         "where grey, not where black or transparent (uncovered areas keep the content; "
                         "overlaps mix). Any "
                         "size, stretched to the content image, but its aspect ratio must match the content's "
                         "within 2%%. Gatys et al. 2017 guided Gram matrices")
    io.add_argument("--output_dir", default="output/demo", type=output_path,
                    help="where epoch images, final image and loss log go")
    io.add_argument("--output_format", default=C.output_format, choices=("jpg", "png"), help="image file format")
    io.add_argument("--image_size", type=positive_int, default=None,
                    help=f"longest side of the result, px (the image is scaled up or down to it; default "
                         f"{C.image_size}, the demo {DEMO_IMAGE_SIZE})")
    io.add_argument("--style_scale", type=positive_float, default=C.style_scale,
                    help="longest side of each style image as a ratio of the working image's (1: the same; "
                         "smaller: larger brush strokes)")

    _add_optimisation_args(p, C)

    loss = p.add_argument_group("losses")
    loss.add_argument("--content_weight", type=non_negative_float, default=C.content_weight,
                      help="weight of the content loss (relative feature MSE)")
    loss.add_argument("--style_weight", type=non_negative_float, default=C.style_weight,
                      help="weight of the style loss (relative Gram MSE): higher means stronger style")
    loss.add_argument("--tv_weight", type=non_negative_float, default=C.tv_weight,
                      help="total-variation smoothing weight")
    loss.add_argument("--content_layers", default=C.content_layers,
                      help="comma-separated VGG-19 layers, optional :weight each (e.g. relu4_2 or relu3_1:0.5,relu4_2)")
    loss.add_argument("--style_layers", default=C.style_layers,
                      help="comma-separated VGG-19 layers, optional :weight each (e.g. relu1_1:2,relu2_1) "
                           f"(default: {RAW_STYLE_LAYERS} with --style_balance raw, {ARBITRARY_STYLE_LAYERS} "
                           f"when that run starts from Magenta's rendering, {RELATIVE_STYLE_LAYERS} with relative)")
    loss.add_argument("--style_balance", default=C.style_balance, choices=STYLE_BALANCES,
                      help="raw: scale each style layer's weight for this image pair as the unnormalised loss "
                           "of Gatys et al. and neural-style-pt does; relative: each layer's loss divided by its "
                           "target's size, weights as given (the earlier default)")
    loss.add_argument("--preserve_color", default=C.preserve_color,
                      help="none, luminance (style on luminance only, keep the content's colours) or histogram "
                           "(recolour the style image to the content's colour statistics) - Gatys et al. 2017")

    net = p.add_argument_group("network and hardware")
    net.add_argument("--vgg_weights", default=C.vgg_weights,
                     help="caffe (bundled original VGG-19, offline), torchvision (downloads IMAGENET1K_V1) "
                          "or a path to a VGG-19 state-dict file")
    net.add_argument("--pooling", default=C.pooling, choices=("max", "avg"),
                     help="VGG pooling: max (as trained) or avg (smoother, suggested by Gatys et al.)")
    net.add_argument("--device", default=C.device, help="auto, cpu, cuda, cuda:N or mps")
    net.add_argument("--precision", default=C.precision,
                     help="auto, fp32, bf16 or fp16 (autocast); auto is bf16 where the CPU/GPU computes it natively, "
                          "else fp32")
    net.add_argument("--max_memory", type=positive_float, default=None, metavar="GB",
                     help="memory the run may use, in GB, at most what is available at the start; larger images run "
                          "VGG on tiles (exact gradients) and a shorter L-BFGS history to fit (default: half of the "
                          "memory available at the start)")
    net.add_argument("--tile_size", type=positive_int, default=None, metavar="PX",
                     help="force VGG tiles of this core size (default: only when over --max_memory)")
    net.add_argument("--max_pixels", type=positive_float, default=None, metavar="MP",
                     help="refuse to open images above this many megapixels, the guard against decompression bombs "
                          "(default: Pillow's, about 179 MP); raise it for huge photos you trust")
    net.add_argument("--quiet", action="store_true", help="no progress bar (status lines still go to stderr)")
    add_live_args(p)
    return p


def _add_optimisation_args(p: argparse.ArgumentParser, C: type) -> None:
    """The "optimisation" group: steps, optimiser, start image, scales, convergence stop."""
    from stylefusion.iterative.content_boost import STYLE_PER_CONTENT
    from stylefusion.iterative.gatys import (ARBITRARY_BOOST_SHARE, ARBITRARY_BOOST_STEPS, ARBITRARY_PYRAMID_LEVELS,
                                             ARBITRARY_STEPS, AUTO_PYRAMID_LEVELS, DEFAULT_STEPS, TOL_WINDOW)

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=epochs_arg, default=None,
                     help=f"an image is saved after each epoch (default: {C.epochs}; the demo: {DEMO_EPOCHS})")
    opt.add_argument("--steps_per_epoch", type=positive_int, default=None,
                     help=f"optimisation steps per epoch; given, the run does exactly epochs x this many "
                          f"(default: a budget split over the epochs in equal whole steps, rounded up, so "
                          f"--epochs 7 runs 7 x 15: {ARBITRARY_STEPS} steps from the arbitrary "
                          f"start, a fifth of neural-style-pt's 500 and by then at or near its quality on eight "
                          f"measured pairs; "
                          f"{DEFAULT_STEPS} from any other; the demo: {DEMO_STEPS_PER_EPOCH})")
    opt.add_argument("--optimizer", default=C.optimizer, help="lbfgs or adam")
    opt.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: 1.0 lbfgs, 0.02 adam)")
    opt.add_argument("--lbfgs_history", type=positive_int, default=C.lbfgs_history,
                     help="L-BFGS memory: past steps kept (each costs two image-sized buffers)")
    opt.add_argument("--pyramid_levels", type=positive_int, default=C.pyramid_levels,
                     help="L-BFGS optimises a Laplacian pyramid of the image with this many levels, which "
                          "settles large shapes and colours in fewer steps; 1: the pixels, as Gatys et al. "
                          f"(L-BFGS only; default: {ARBITRARY_PYRAMID_LEVELS} with an arbitrary start, "
                          f"{AUTO_PYRAMID_LEVELS} with a recolored one, else 1)")
    opt.add_argument("--init", default=C.init,
                     help="start image: auto (arbitrary for a plain L-BFGS run: measured on eight pairs, its mean "
                          "style error passes neural-style-pt's 500-step result within 10-50 steps, where a photo "
                          "start needs 80 to over 200; with Adam or without Magenta's weights: recolored where the "
                          "photo's relu1_1 Gram matrix, colour and fine texture, is far from the style's, else "
                          "content; with masks or --preserve_color: content), arbitrary (Magenta's one-pass rendering "
                          "of the content in the style images with the photo's edges and half its own fine texture "
                          "put back, recoloured to their palette; not with --style_masks), recolored (the content in "
                          "the style's colours), content, noise, style or an image PATH of the photo's aspect ratio "
                          "(an earlier result, say)")
    opt.add_argument("--content_boost_steps", type=non_negative_int, default=None, metavar="N",
                     help="the content weight starts raised, as far as the start's style loss outweighs its "
                          f"content loss more than {STYLE_PER_CONTENT:g} times, and falls back to --content_weight "
                          "over N steps, so the first steps keep the start's layout while the style closes; 0: off "
                          f"(default: {ARBITRARY_BOOST_STEPS}, at most {ARBITRARY_BOOST_SHARE * 100:.0f} %% of the "
                          "run, from an arbitrary start with L-BFGS, else off; --tol waits for its end)")
    opt.add_argument("--stroke_steps", type=non_negative_int, default=C.stroke_steps, metavar="N",
                     help="before the run's steps, N steps on the style of the layers up to relu3_1 alone (the "
                          "painting's fine strokes), each about 0.4 of a step's time; the run's steps then win "
                          "back the content they cost; the content boost is set by the start. Measured from the "
                          "arbitrary start (40 before 90 steps): parity with neural-style-pt sooner on nine of 15 "
                          "pairs, the same 13 at the stop, 6 %% more time (bench/RESULTS.md); 0: none (default)")
    opt.add_argument("--seed", type=seed, default=C.seed, help="random seed (noise init); same seed, same result")
    opt.add_argument("--multiscale", default="on" if C.multiscale else "off", choices=("on", "off"),
                     help="coarse-to-fine: optimise at ~128 px, upsample x2, continue (off by default: at 512 px "
                          "it reached a higher loss than single-scale in the same time; see bench/RESULTS.md)")
    opt.add_argument("--num_scales", type=positive_int, default=None,
                     help="number of scales, each twice the previous (default: start near 128 px)")
    opt.add_argument("--scale_steps", type=step_list, default=None, metavar="N,N,...",
                     help="steps per scale, coarse to fine, sizes doubling up to --image_size (e.g. 300,100,50,30 "
                          "with --image_size 4096: 512, 1024, 2048, 4096 px); replaces --epochs/--steps_per_epoch")
    opt.add_argument("--tol", type=fraction, default=None, metavar="REL",
                     help="stop a size early once the loss falls by less than this fraction per step (mean over "
                          f"the last {TOL_WINDOW} steps), e.g. 0.001; its remaining steps are skipped (default: off)")


def epochs_arg(text: str) -> int:
    """argparse type: --epochs, 1 to the library's MAX_EPOCHS (an image is saved after each)."""
    from stylefusion.iterative.gatys import MAX_EPOCHS

    return int(in_range(text, 1, MAX_EPOCHS, int))


def scale_steps_overrides(args: argparse.Namespace) -> list[str]:
    """A warning for options --scale_steps replaces (it sets every scale's steps: one epoch each), or for
    --num_scales without the multi-scale run it sets."""
    given = [flag for flag, value in (("--epochs", args.epochs), ("--steps_per_epoch", args.steps_per_epoch),
                                      ("--num_scales", args.num_scales)) if value is not None]
    given += ["--multiscale on"] if args.multiscale == "on" else []
    if args.scale_steps is None:
        if args.num_scales is not None and args.multiscale != "on":
            return ["warning: --num_scales applies only with --multiscale on: ignored"]
        return []
    if not given:
        return []
    return [f"warning: {', '.join(given)} not used: --scale_steps sets the scales and their steps (one epoch each)"]


def _default(value: int | None, demo: bool, normal: int, for_demo: int) -> int:
    """An option's value: as given, else the demo's or the normal default."""
    return value if value is not None else (for_demo if demo else normal)


def step_list(text: str) -> list[int]:
    """argparse type: comma-separated step counts, each >= 1."""
    return [positive_int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_pixel_limit(args.max_pixels)
    from tqdm import tqdm

    from stylefusion.core.images import first_missing, remove_empty_tree
    from stylefusion.iterative.gatys import (INITS, IterativeConfig, IterativeProgress, multiscale_unused,
                                             strokes_unused, style_upscale, stylize)
    from stylefusion.live import report_iterative

    demo = args.content_image is None and args.style_image is None
    config = IterativeConfig(
        content_image=args.content_image or DEMO_CONTENT,
        style_images=args.style_image or [DEMO_STYLE],
        output_dir=args.output_dir,
        style_blend_weights=args.style_blend_weights, style_masks=args.style_masks,
        epochs=_default(args.epochs, demo, IterativeConfig.epochs, DEMO_EPOCHS),
        steps_per_epoch=_default(args.steps_per_epoch, demo, IterativeConfig.steps_per_epoch, DEMO_STEPS_PER_EPOCH),
        image_size=_default(args.image_size, demo, IterativeConfig.image_size, DEMO_IMAGE_SIZE),
        style_scale=args.style_scale, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, content_layers=args.content_layers, style_layers=args.style_layers,
        style_balance=args.style_balance,
        optimizer=args.optimizer, lr=args.lr, lbfgs_history=args.lbfgs_history, init=args.init, seed=args.seed,
        content_boost_steps=args.content_boost_steps, stroke_steps=args.stroke_steps,
        pyramid_levels=args.pyramid_levels,
        multiscale=args.multiscale == "on", num_scales=args.num_scales, preserve_color=args.preserve_color,
        pooling=args.pooling, vgg_weights=args.vgg_weights, device=args.device, precision=args.precision,
        output_format=args.output_format, scale_steps=args.scale_steps, max_memory=args.max_memory,
        tile_size=args.tile_size, tol=args.tol)
    unused, upscale, strokes = multiscale_unused(config), style_upscale(config), strokes_unused(config)
    init = [config.init] if config.init not in INITS else []  # an image's path
    warnings = (first_frame_warnings([config.content_image, *config.style_images, *(config.style_masks or ()), *init])
                + mask_warnings(config.style_masks or ())
                + [f"warning: --{line}" for line in (unused, upscale, strokes) if line] + scale_steps_overrides(args)
                + live_unused(args))
    if demo:
        info(f"demo: {config.content_image} in the style of {config.style_images[0]} -> {config.output_dir}")
    output_dir = Path(config.output_dir)
    created = first_missing(output_dir)
    saved: list[Path] = []

    bars: list = []  # made at the first step, so an error before any work prints only its one line
    live = start_live(args, f"StyleFusion: {Path(config.content_image).name} (iterative)")

    def on_progress(p: IterativeProgress) -> None:
        if live is not None:
            report_iterative(live, p)
        if not bars:  # the first step: the run has passed its checks
            for line in warnings:
                info(line)
            bars.append(tqdm(total=p.total_steps, unit="step", disable=args.quiet, dynamic_ncols=True))
        show_progress(bars[0], p, args.tol, saved)

    try:
        result = stylize(config, on_progress)
        if live is not None:
            live.finish()  # an open page shows "finished", not "connection lost"
    except BaseException:
        if not saved:  # nothing to show for the run: leave nothing behind (the library removed its log)
            remove_empty_tree(created)
        raise
    finally:
        for bar in bars:
            bar.close()
        if live is not None:
            live.close()
    info(f"final image: {result.final_path} (loss log: {result.loss_log})")
    stale = earlier_images(Path(output_dir), {Path(p).name for p in [*saved, result.final_path]})
    if stale:
        info(f"note: {len(stale)} image(s) in {output_dir} are from an earlier run, not this one "
             f"({stale[0]}{' ... ' + stale[-1] if len(stale) > 1 else ''})")
    return 0


def show_progress(bar: Any, p: "IterativeProgress", tol: float | None, saved: list[Path]) -> None:
    """One progress report on the tqdm bar: a stroke step or tile pass (so a long one does not look frozen), a
    --tol stop, a saved epoch image (appended to `saved`) or a step's losses."""
    phase = (f"stroke step {p.strokes[0]}/{p.strokes[1]}" if p.strokes is not None else  # before the first step
             f"tile pass {p.tile[0]}/{p.tile[1]}" if p.tile is not None else None)  # within a tiled step
    if phase is not None:
        bar.set_postfix_str(f"{phase}, size={p.size[1]}x{p.size[0]}")
        return
    if p.converged:
        bar.total = p.total_steps
        bar.write(f"step {p.step}: the loss changed by less than --tol {tol} a step: skipping the rest "
                  f"of {p.size[1]}x{p.size[0]}", file=sys.stderr)
    if p.saved is not None:
        saved.append(p.saved)
        bar.write(f"epoch {p.epoch}/{p.epochs} ({p.size[1]}x{p.size[0]}): saved {p.saved}", file=sys.stderr)
        return
    bar.update(p.step - bar.n)
    bar.set_postfix(content=f"{p.content_loss:.3g}", style=f"{p.style_loss:.3g}", total=f"{p.total_loss:.3g}",
                    size=f"{p.size[1]}x{p.size[0]}", refresh=False)


def earlier_images(output_dir: Path, written: set[str]) -> list[str]:
    """Names of epoch_NNN and final images in output_dir this run did not write: a longer earlier run's, or one in
    the other --output_format, left beside its."""
    found = [*output_dir.glob("epoch_[0-9][0-9][0-9]*.*"), *output_dir.glob("final.*")]
    return sorted(p.name for p in found if p.suffix.lower() in (".jpg", ".png") and p.name not in written)


def command() -> int:
    """Console command `stylefusion`: the same as running stylefusion.py."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(command())
