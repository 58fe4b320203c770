"""Fast (feed-forward) style transfer, Johnson et al. 2016: train a network per style, then stylise
images, folders and videos in one pass.

    python fast_style_transfer.py --mode train --style_image data/udnie.jpg --content_dataset data/train2014 \
        --model_save_path models/new_model.pth --epochs 10
    python fast_style_transfer.py --mode image --input_images_dir data/train2014/default_class \
        --output_images_dir output/images_generated --model_path models/udnie.pth
    python fast_style_transfer.py --mode video --video_input data/maigua.mp4 \
        --video_output output/videos/maigua_udnie.mp4 --model_path models/udnie.pth
    python fast_style_transfer.py --mode webcam --camera 0 --model_path models/udnie.pth models/candy.pth \
        --max_size 640
    python fast_style_transfer.py --mode export --model_path models/udnie.pth --export_path udnie.onnx
    python fast_style_transfer.py --mode download

This module (run as fast_style_transfer.py or the `fast-style-transfer` command) only parses arguments, shows
progress and reports errors; the work is in stylefusion/.
"""

from __future__ import annotations

import argparse
import sys

from .common import (HelpFormatter, OneLineParser, add_live_args, add_version_arg, apply_pixel_limit, in_range, info,
                     is_main_process, live_unused, positive_int, require_model, run_cli, start_live, mask_warnings,
                     first_frame_warnings, WeightList)
from .paintings import (add_painting_args, add_sheet_args, paintings_or_model, run_sheet, say_paintings,
                        style_size)
from .common import output_file, output_path
from .common import positive_float as positive_float_arg
from .common import seed as seed_arg

MODES = ("train", "image", "video", "webcam", "export", "sheet", "download")

_TRAIN_ONLY = ("content_dataset", "model_save_path", "epochs", "max_steps", "image_size", "lr", "style_norm_lr_scale",
               "content_weight", "style_weight", "tv_weight", "stability_weight", "content_layers", "style_layers",
               "vgg_weights", "arch", "compact_width", "pretrained_model_path", "checkpoint_dir",
               "checkpoint_interval", "preview_interval", "resume", "num_workers", "seed")
# Which modes read each option (argparse dest -> modes). An option given to another mode is warned about.
MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "model_path": ("image", "video", "webcam", "export", "sheet"),
    "style_image": ("train", "image", "video", "webcam", "export", "sheet"),
    "style_size": ("train", "image", "video", "webcam", "export", "sheet"),
    "stroke_scale": ("image", "video", "webcam", "sheet"),
    "batch_size": ("train", "image", "video"),
    "max_size": ("image", "video", "webcam", "sheet"),
    "max_memory": ("image", "video"),
    "tile_size": ("image", "video"),
    "max_pixels": ("train", "image", "video", "webcam", "export", "sheet"),
    "preserve_color": ("image", "video", "webcam"),
    "device": ("train", "image", "video", "webcam", "sheet"),
    "precision": ("train", "image", "video", "webcam", "sheet"),
    **{dest: ("train",) for dest in _TRAIN_ONLY},
    "input_images_dir": ("image", "sheet"),
    "sheet_output": ("sheet",),
    "output_images_dir": ("image",),
    "video_input": ("video",),
    "video_output": ("video", "webcam"),
    "camera": ("webcam",),
    "no_window": ("webcam",),
    "max_frames": ("webcam",),
    "snapshot_dir": ("webcam",),
    "live": ("train",),
    "live_port": ("train",),
    "live_host": ("train",),
    "start": ("video",),
    "duration": ("video",),
    "crf": ("video",),
    "export_path": ("export",),
    "models_dir": ("download",),
    "models_url": ("download",),
    "strength": ("image", "video"),
    "mask": ("image", "video"),
    "feather": ("image", "video"),
    "style": ("image", "video", "export"),
    "style_weights": ("image", "video", "export"),
}

EPILOG = ("Each option's help starts with the [modes] that read it; given to another mode it is ignored with a "
          "warning. Sizes, in px: --max_size caps the longest side of each input (image, video, webcam); "
          "--image_size (alias --crop_size) is the side of the square training crops; --style_size the longest "
          "side of the style image in training (stylefusion.py: --image_size is the longest side of its result, "
          "--style_scale a ratio). Status lines and progress bars go to stderr; stdout stays empty.")


class ModeHelpFormatter(HelpFormatter):
    """Starts each option's help with the [modes] that read it, from MODE_OPTIONS: the table is the one source."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action)
        modes = MODE_OPTIONS.get(action.dest)
        return f"[{', '.join(modes)}] {text}".rstrip() if modes and action.option_strings else text


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by several modes (defaults from the config dataclasses: one place)."""
    from stylefusion.run.folder import ImageConfig
    # not run/video.py here: PyAV loaded before OpenCV's window hangs it
    from stylefusion.training.loop import TrainConfig as T

    g = parser.add_argument_group("common")
    g.add_argument("--mode", required=True, choices=MODES,
                   help="train a model; stylise images, a video or a camera with a model or any painting; export "
                        "a network; compare styles on one photo (sheet); download models")
    g.add_argument("--model_path", nargs="+", action="extend", default=None, metavar="PATH",
                   help="trained model file (.pth); webcam and sheet take several (webcam keys switch between "
                        "them); with --mask, one per mask")
    g.add_argument("--batch_size", type=positive_int, default=None,
                   help=f"images per batch (train default {T.batch_size}; image/video default "
                        f"{ImageConfig.batch_size})")
    g.add_argument("--max_size", type=positive_int, default=None,
                   help="downscale each input so its longest side is at most N px (default: keep size; sheet: 384)")
    g.add_argument("--max_memory", type=positive_float_arg, default=None, metavar="GB",
                   help="memory the network may use, in GB, at most what is free at the start; a larger image "
                        "runs in tiles with the same result as one pass (default: half of the memory free at the "
                        "start)")
    g.add_argument("--tile_size", type=positive_int, default=None, metavar="N",
                   help="run every image in tiles of about N x N pixels (default: tiles only "
                        "when an image would not fit --max_memory)")
    g.add_argument("--max_pixels", type=positive_float_arg, default=None, metavar="MP",
                   help="refuse to open images (photos, paintings, masks) above this many megapixels, the guard "
                        "against decompression bombs (default: Pillow's, about 179 MP); raise it for huge images you "
                        "trust")
    g.add_argument("--preserve_color", default="none", choices=("none", "luminance", "histogram"),
                   help="keep the input's colours (luminance: keep its chroma; histogram: match "
                        "colour statistics)")
    g.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default: auto)")
    g.add_argument("--precision", default="auto",
                   help="auto|fp32|bf16|fp16. auto: image/video/webcam use bf16 where the CPU/GPU computes it "
                        "natively "
                        "(about 2.5x faster on AVX512-BF16 CPUs; against fp32 PSNR about 55 dB for trained models, "
                        "47 dB for paintings), else fp32; "
                        "training uses fp32 unless asked (default: auto)")
    g.add_argument("--seed", type=seed_arg, default=None, help=f"random seed (train default {T.seed})")


# ---------------------------------------------------------------------------------------- shared checks
def gigabytes(value: float | None) -> int | None:
    """--max_memory in bytes (None stays None: the library's default budget)."""
    return None if value is None else int(value * 2**30)


# ------------------------------------------------------------------------------------------------- train
def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode train."""
    import os

    from .common import non_negative_float, non_negative_int, positive_float
    from stylefusion.training.loop import TrainConfig as T

    g = parser.add_argument_group("train (also under torchrun --nproc_per_node N for several GPUs/processes)")
    g.add_argument("--content_dataset", default="data/train2014", type=dataset_folder,
                   help="folder of training images, searched recursively (flat, nested or ImageFolder layout "
                        "such as train2014/default_class); unreadable files are skipped and counted")
    g.add_argument("--model_save_path", default="models/new_model.pth", type=output_file,
                   help="where to write the trained model (.pth or .pt; --mode export converts it to ONNX); its "
                        "loss log (.csv), loss curve (.png) and previews go next to it")
    g.add_argument("--epochs", type=positive_int, default=T.epochs, help="passes over the content dataset")
    g.add_argument("--max_steps", type=positive_int, default=None,
                   help="stop after this many optimisation steps in total, counting resumed ones (unset: no limit)")
    g.add_argument("--image_size", "--crop_size", type=positive_int, default=T.image_size, dest="image_size",
                   help="side of the square training crops, px (a multiple of 4, at least 32)")
    g.add_argument("--lr", type=positive_float, default=T.lr, help="Adam learning rate")
    g.add_argument("--style_norm_lr_scale", type=positive_float, default=T.style_norm_lr_scale, metavar="X",
                   help="several --style_image: the per-style instance-norm scales and shifts learn at --lr x X "
                        f"(default {T.style_norm_lr_scale:g}), the shared convolutions at --lr. Each style's own "
                        "parameters get only 1/N of the steps; at x1 a short run leaves the styles looking alike. "
                        "Chosen by measurement: at 64 px, after 48 steps the styles part by 0.3 %% at x1, 7 %% at "
                        "x30; over 400 steps x30 reaches the lowest loss, x100-x300 less well. No effect with one "
                        "style")
    g.add_argument("--content_weight", type=non_negative_float, default=T.content_weight,
                   help="weight of the content loss (relative feature MSE)")
    g.add_argument("--style_weight", type=non_negative_float, default=T.style_weight,
                   help="weight of the style loss (relative Gram MSE): higher means stronger style")
    g.add_argument("--tv_weight", type=non_negative_float, default=T.tv_weight,
                   help="weight of the total-variation smoothness loss")
    g.add_argument("--stability_weight", type=non_negative_float, default=T.stability_weight,
                   help="weight of the temporal stability term (Wang et al. 2020) that reduces video flicker")
    g.add_argument("--content_layers", default=T.content_layers, help="VGG-19 content layers, as layer[:weight],...")
    g.add_argument("--style_layers", default=T.style_layers,
                   help="VGG-19 style layers, as layer[:weight],...")
    g.add_argument("--vgg_weights", default=T.vgg_weights,
                   help="VGG-19 weights for the loss: caffe (bundled, offline), torchvision, or a file")
    g.add_argument("--arch", choices=("standard", "compact"), default=T.arch,
                   help="network to train: standard (Johnson et al., as pytorch/examples) or compact (~23x "
                        "fewer multiply-adds: real-time video on a CPU); model files record it")
    g.add_argument("--compact_width", type=positive_int, default=None, metavar="N",
                   help="--arch compact's residual-stack width (default 32; even, up to 128): wider is slower and "
                        "closer to the standard network's quality (56: about 2.4x the time per frame)")
    g.add_argument("--pretrained_model_path", default=None,
                   help="fine-tune from this model (ours or a pytorch/examples release) instead of starting from "
                        "random weights")
    g.add_argument("--checkpoint_dir", default=None, type=output_path,
                   help="where checkpoints go and --resume looks (unset: <model name>_checkpoints next to "
                        "--model_save_path)")
    g.add_argument("--checkpoint_interval", type=non_negative_int, default=T.checkpoint_interval,
                   help="steps between checkpoints (0: only at the end or when stopped); the last 2 are kept")
    g.add_argument("--preview_interval", type=non_negative_int, default=T.preview_interval,
                   help="steps between preview images of a fixed content image (0: none)")
    g.add_argument("--resume", action="store_true",
                   help="continue exactly from the latest checkpoint in --checkpoint_dir (the same style images, "
                        "photos and loss options); a model at --model_save_path is replaced only if that run wrote it")
    g.add_argument("--num_workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="image-loading worker processes")
    add_live_args(parser)


def dataset_folder(text: str) -> str:
    """argparse type of --content_dataset: not empty, which would read the current folder (an unset shell
    variable), every image under it a training image."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give the folder of training images")
    return text


def train_config_from(args: argparse.Namespace) -> "TrainConfig":  # noqa: F821 (imported inside: lazy)
    """The library's training settings from --mode train's options."""
    from stylefusion.training.loop import TrainConfig

    return TrainConfig(
        style_image=args.style_image[0] if len(args.style_image) == 1 else args.style_image,
        content_dataset=args.content_dataset, model_save_path=args.model_save_path,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size or TrainConfig.batch_size,
        image_size=args.image_size,
        style_size=args.style_size, lr=args.lr, style_norm_lr_scale=args.style_norm_lr_scale,
        content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, stability_weight=args.stability_weight, content_layers=args.content_layers,
        style_layers=args.style_layers, arch=args.arch, compact_width=args.compact_width,
        pretrained_model_path=args.pretrained_model_path,
        checkpoint_dir=args.checkpoint_dir, checkpoint_interval=args.checkpoint_interval,
        preview_interval=args.preview_interval, resume=args.resume,
        seed=TrainConfig.seed if args.seed is None else args.seed, num_workers=args.num_workers, device=args.device,
        precision=args.precision, vgg_weights=args.vgg_weights)  # auto precision: fp32 (TrainConfig's policy)


def run_train(args: argparse.Namespace) -> int:
    """--mode train."""
    import signal
    import time
    from pathlib import Path

    from stylefusion.core.errors import ConfigError

    if not args.style_image:  # before the slow imports
        raise ConfigError("--mode train needs --style_image (the style to learn)")

    from tqdm import tqdm

    from .common import Interrupted, stop_signals
    from stylefusion.core.distributed import distributed_context
    from stylefusion.live import report_training
    from stylefusion.training.loop import StopFlag, TrainProgress, train

    config = train_config_from(args)
    main_rank = distributed_context()[0] == 0
    stop = StopFlag()
    first_signal: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        if first_signal:
            raise Interrupted(signum)  # a second stop: abort now (checkpoints on disk are complete)
        first_signal.append(time.monotonic())
        stop.request(signal.Signals(signum).name)
        if main_rank:  # a second one, after stop_signals' 2 s window, aborts
            again = ("press Ctrl-C again" if signum == signal.SIGINT
                     else f"send {signal.Signals(signum).name} again")
            tqdm.write(f"stopping after this step and saving a checkpoint ({again} to abort)", file=sys.stderr)

    bar: list[tqdm] = []
    live = start_live(args, f"StyleFusion: training {Path(config.model_save_path).name}") if main_rank else None

    def on_progress(p: TrainProgress) -> None:
        if live is not None:
            report_training(live, p)
        if not bar:
            bar.append(tqdm(total=p.total_steps, initial=p.step - 1, unit="step", dynamic_ncols=True,
                            desc="train"))
        bar[0].set_postfix_str(f"content {p.content:.3g} style {p.style:.3g} total {p.total:.3g} "
                               f"{p.images_per_s:.1f} img/s", refresh=False)
        bar[0].update(1)

    try:
        with stop_signals(on_signal):  # repeats within 2 s (terminal + torchrun forwarding) are ignored
            result = train(config, on_progress if main_rank else None, stop,
                           warn=(lambda message: tqdm.write(f"warning: {message}", file=sys.stderr))
                           if main_rank else None,
                           note=(lambda message: tqdm.write(f"note: {message}", file=sys.stderr))
                           if main_rank else None)
        if live is not None and not result.stopped:
            live.finish()  # an open page shows "finished", not "connection lost"
    finally:
        if bar:
            bar[0].close()
        if live is not None:
            live.close()
    if not main_rank:
        return 0 if not result.stopped else 128 + int(getattr(signal, result.stop_reason, signal.SIGINT))
    if result.skipped_files:
        info(f"skipped {len(result.skipped_files)} unreadable image file(s) in the content dataset, "
             f"e.g. {result.skipped_files[0]}")
    if result.stopped:
        info(f"stopped at step {result.step}: checkpoint saved to {result.checkpoint}; "
             "run the same command with --resume to continue")
        return 128 + int(getattr(signal, result.stop_reason, signal.SIGINT))
    paths = result.paths
    info(f"saved model to {result.model_path} after {result.step} step{'s' * (result.step != 1)}; "
         f"loss log {paths.loss_log}, loss curve {paths.loss_curve}"
         + (f", previews in {paths.preview_dir}" if config.preview_interval else ""))
    return 0


# ------------------------------------------------------------------------------------------------- image
def add_image_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode image."""
    g = parser.add_argument_group("image mode")
    g.add_argument("--input_images_dir", default=None,
                   help="image file, or folder of images (searched recursively; sub-folders are mirrored in "
                        "the output); sheet mode: one photo")
    g.add_argument("--output_images_dir", default="output/images_generated", type=output_path,
                   help="folder for the stylised images: same relative paths and extensions as the inputs (a "
                        "format it cannot write, such as GIF or PGM, becomes PNG: x.gif -> x.png). Transparent "
                        "pixels of a photo are stylised as white; the results have no alpha")


def run_image(args: argparse.Namespace) -> int:
    """--mode image: stylise a file or a folder tree with a trained model."""
    import os

    from tqdm import tqdm

    from stylefusion.core.errors import ConfigError
    from stylefusion.run.folder import ImageConfig, ImageProgress, ImageStart, stylize_folder
    from stylefusion.run.tiling import TileProgress

    if args.input_images_dir is None:
        raise ConfigError("--mode image needs --input_images_dir (an image file or a folder of images)")
    paintings, model = paintings_or_model(args, "image")
    config = ImageConfig(input=args.input_images_dir, output=args.output_images_dir, model_path=model,
                         style_images=paintings, style_size=style_size(args), stroke_scale=args.stroke_scale,
                         batch_size=args.batch_size or ImageConfig.batch_size, max_size=args.max_size,
                         preserve_color=args.preserve_color, device=args.device, precision=args.precision,
                         max_memory=gigabytes(args.max_memory), tile_size=args.tile_size,
                         control=control_from(args))
    bars: list[tqdm] = []

    warnings = (first_frame_warnings([args.input_images_dir]) + mask_warnings(config.control.masks)
                if is_main_process() else [])

    if is_main_process():
        say_paintings(paintings, args)

    def on_start(start: ImageStart) -> None:
        # How the model was trained, when its file records it (a file with only its architecture: no line).
        if set(start.model_settings or {}) - {"arch", "paintings"} and start.rank == 0:
            info("model settings: " + ", ".join(f"{k}={v}" for k, v in start.model_settings.items()))
        desc = (f"stylising (process {start.rank + 1}/{start.world_size})" if start.world_size > 1
                else "stylising")
        bars.append(tqdm(total=start.total, unit="img", desc=desc, disable=None))
        bars.append(tqdm(unit="tile", desc="tiles", leave=False, disable=None, position=1))
        for _, reason in start.unreadable:  # sub-folders that could not be listed: reported like files
            bars[0].write(f"skipped: {reason}", file=sys.stderr)
        if start.note:
            bars[0].write(f"note: {start.note}", file=sys.stderr)

    def on_progress(progress: ImageProgress) -> None:
        while warnings and progress.error is None:  # after the first image done: the masks fit the images
            bars[0].write(warnings.pop(0), file=sys.stderr)
        bars[0].update(1)
        if progress.error:
            bars[0].write(f"skipped: {progress.error}", file=sys.stderr)

    def on_tile(progress: TileProgress) -> None:  # a large image is many tiles: show them, not silence
        if bars[1].total != progress.total:
            bars[1].reset(progress.total)
        bars[1].update(progress.done - bars[1].n)

    try:
        summary = stylize_folder(config, on_progress, on_tile, on_start)
    finally:
        for bar in reversed(bars):
            bar.close()
    failed = summary.failed + len(summary.unreadable)
    info(f"{summary.stylised} stylised, {failed} failed (output: {os.path.normpath(config.output)})")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------- video
def add_video_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode video."""
    from .common import non_negative_float, positive_float

    g = parser.add_argument_group("video mode")
    g.add_argument("--video_input", default=None, help="video file to stylise (its audio track is kept)")
    g.add_argument("--video_output", default=None, type=output_file,
                   help="video: the stylised video, .mp4/.m4v/.mov (H.264) or .mkv (default "
                        "output/videos/<input>_<model>.mp4, paintings: <input>_<painting>_painting.mp4); webcam: "
                        "record the stream here (default: none)")
    g.add_argument("--start", type=non_negative_float, default=None,
                   help="start this many seconds into the input (audio is cut to match)")
    g.add_argument("--duration", type=positive_float, default=None,
                   help="stylise only this many seconds (default: to the end)")
    def crf(text: str) -> int:
        return int(in_range(text, 0, 51, int))

    g.add_argument("--crf", type=crf, default=18,
                   help="H.264 quality, 0 lossless .. 51 worst (18: visually transparent)")


def run_video(args: argparse.Namespace) -> int:
    """--mode video: stylise a video with a trained model, keeping its frame rate, size and audio."""
    import threading

    from tqdm import tqdm

    from .common import Interrupted, stop_signals
    from stylefusion.core.errors import ConfigError, Stopped
    from stylefusion.core.images import temp_files_of
    from stylefusion.run.video import VideoConfig, VideoProgress, stylize_video

    if args.video_input is None:
        raise ConfigError("--mode video needs --video_input (a video file)")
    paintings, models = paintings_or_model(args, "video")
    output = args.video_output or default_video_output(args.video_input, paintings, models)
    say_paintings(paintings, args)
    config = VideoConfig(video_input=args.video_input, video_output=output, model_path=models,
                         style_images=paintings, style_size=style_size(args), stroke_scale=args.stroke_scale,
                         batch_size=args.batch_size or VideoConfig.batch_size, max_size=args.max_size,
                         preserve_color=args.preserve_color, device=args.device, precision=args.precision,
                         start=args.start, duration=args.duration, crf=args.crf,
                         max_memory=gigabytes(args.max_memory), tile_size=args.tile_size,
                         control=control_from(args))
    stop, stopped_by = threading.Event(), []

    def on_signal(signum: int, frame: object) -> None:
        if stopped_by:
            raise Interrupted(signum)  # a second stop, 2 s or more later: abort now
        stopped_by.append(signum)
        stop.set()  # the pipeline stops at its next frame, never inside FFmpeg

    with tqdm(unit="frame", desc="stylising", dynamic_ncols=True, disable=None) as bar, stop_signals(on_signal):
        warnings = mask_warnings(config.control.masks)

        def on_progress(progress: VideoProgress) -> None:
            while warnings:  # at the first frame: the run has passed its checks
                bar.write(warnings.pop(0), file=sys.stderr)
            if progress.total_frames is not None and bar.total != progress.total_frames:
                bar.total = progress.total_frames
            bar.update(progress.frames_done - bar.n)

        try:
            result = stylize_video(config, on_progress, stop=stop)
        except Stopped:
            raise Interrupted(stopped_by[0]) from None
    flicker = f", flicker score {result.flicker:.3f}" if result.flicker is not None else ""
    info(f"wrote {result.output}: {result.frames} frame{'s' * (result.frames != 1)}, {result.width}x{result.height} at "
          f"{float(result.fps):.4g} fps, audio {result.audio}, {result.elapsed_s:.1f} s "
          f"({result.frames / max(result.elapsed_s, 1e-9):.2f} frames/s){flicker}")
    if result.undecodable_packets:
        info(damaged_input_warning(result))
    left = temp_files_of(result.output)
    if left:  # ours was renamed onto the output: these are another run's, or a killed run's
        info(f"note: {len(left)} temporary file(s) next to the output, e.g. {left[0].name}, are from another run "
             "in progress or one that was killed; delete them if no other run is writing")
    if result.pix_fmt != "yuv420p":
        info(f"note: the frame size is odd, so the video is H.264 {result.pix_fmt} (High 4:4:4 profile), which "
             "browsers and QuickTime cannot play; use --max_size for an even size in plain 4:2:0")
    return 0


def default_video_output(video: str, paintings: list[str] | None, models: str | list[str] | None) -> str:
    """output/videos/<input>_<model>.mp4, or for paintings <input>_<painting>[+<painting>...]_painting.mp4: a blend
    names all its paintings, and a painting named like a model (udnie.jpg, udnie.pth) does not replace its video."""
    from pathlib import Path

    if paintings:
        name = "+".join(Path(p).stem for p in paintings) + "_painting"
    else:
        name = Path(models[0] if isinstance(models, list) else models).stem
    return str(Path("output") / "videos" / f"{Path(video).stem}_{name}.mp4")


def damaged_input_warning(result: "VideoResult") -> str:  # noqa: F821 (imported inside run_video: lazy)
    """The warning line for a video whose decoder rejected packets: frames are missing, the run still succeeded."""
    bad = result.undecodable_packets
    packets = f"{bad} video packet{'s' * (bad != 1)}"
    if result.input_frames is not None and result.input_frames > result.frames:  # the container states its count
        return (f"warning: {result.input_frames - result.frames} of {result.input_frames} frames could not be "
                f"decoded and were skipped (the input is damaged: {packets} failed to decode)")
    return f"warning: {packets} of the input failed to decode: the output lacks their frames (the input is damaged)"


# ------------------------------------------------------------------------------------------------ webcam
def add_webcam_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode webcam (it also takes --video_output to record, and --max_size for the working size)."""
    g = parser.add_argument_group("webcam mode (keys: n/p or 1-9 model, s side-by-side, space snapshot, q/Esc quit)")
    g.add_argument("--camera", default="0", help="camera device index, or a video file / stream URL OpenCV opens")
    g.add_argument("--no_window", action="store_true", help="no window (record with --video_output)")
    g.add_argument("--max_frames", type=positive_int, default=None,
                   help="stop after this many stylised frames (default: until q/Esc or Ctrl-C)")
    g.add_argument("--snapshot_dir", default="output/snapshots", type=output_path,
                   help="where the space key saves frames")


def _check_window() -> None:
    """Open and close an OpenCV window in a child process first: on a display that is gone (a stale DISPLAY after
    ssh -X, WAYLAND_DISPLAY without X) Qt aborts the whole process with a page of messages, which no handler can
    turn into one line."""
    import os
    import subprocess

    from stylefusion.core.errors import ConfigError

    probe = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the default"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        reason = next(iter(done.stderr.strip().splitlines()), "") if done is not None else "no answer in 30 s"
        raise ConfigError(f"cannot open the webcam window on display {display} ({reason or 'it failed'}): use "
                          f"--no_window --video_output PATH")


def run_webcam(args: argparse.Namespace) -> int:
    """--mode webcam: stylise a camera live in a window and/or into a recording."""
    import os
    import signal
    import threading

    from stylefusion.core.errors import ConfigError, require_file

    if args.no_window and not args.video_output:
        raise ConfigError("--no_window needs --video_output (otherwise nothing is shown or saved)")
    # OpenCV's FFmpeg writes its own lines to stderr for a damaged file ("No JPEG data found"); our error says it
    # once. Read when OpenCV first opens a capture; a value the user set is kept.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if not args.no_window and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                                         or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("no display for the webcam window (DISPLAY is unset): use --no_window --video_output PATH")
    if not args.no_window:
        _check_window()
    models, paintings = args.model_path or [], list(args.style_image or [])
    if not models and not paintings:
        raise ConfigError("--mode webcam needs --model_path (one or more, e.g. models/udnie.pth from --mode "
                          "download) or --style_image (paintings: the keys switch between them)")
    for path in models:
        args.model_path = path
        require_model(args, "webcam")
    for path in paintings:
        require_file(path, "style image", ConfigError)
    from stylefusion.run.webcam import WebcamConfig, WebcamFrame, command_for_key, run_webcam as run

    config = WebcamConfig(camera=args.camera, model_paths=models, style_images=paintings,
                          style_size=style_size(args), stroke_scale=args.stroke_scale, max_size=args.max_size,
                          video_output=args.video_output, snapshot_dir=args.snapshot_dir,
                          max_frames=args.max_frames, preserve_color=args.preserve_color, device=args.device,
                          precision=args.precision)
    stop, stopped_by = threading.Event(), []
    title = "StyleFusion webcam (n/p model, s side-by-side, space snapshot, q quit)"

    def on_signal(signum: int, frame: object) -> None:
        if stopped_by:
            raise KeyboardInterrupt  # a second Ctrl-C: abort (the recording is discarded)
        stopped_by.append(signum)
        stop.set()

    def on_frame(frame: WebcamFrame) -> str | int | None:
        import cv2

        if frame.snapshot is not None:
            info(f"saved snapshot {frame.snapshot}")
        if args.no_window:
            return None
        cv2.imshow(title, frame.display_bgr())
        key = cv2.waitKey(1)
        if frame.index > 1 and cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
            return "quit"  # the window was closed
        return command_for_key(key) if key >= 0 else None

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = run(config, on_frame, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if not args.no_window:
            import cv2

            cv2.destroyAllWindows()
    if stopped_by and result.frames == 0:  # a stop before the first frame: nothing to report but the stop
        from .common import Interrupted

        raise Interrupted(stopped_by[0])
    recorded = f"; recorded to {result.output}" if result.output else ""
    info(f"{result.frames} frame{'' if result.frames == 1 else 's'} at {result.width}x{result.height}, "
         f"{result.fps:.2f} frames/s, latency "
         f"{result.latency_mean_s * 1000:.0f} ms mean, {result.dropped} of {result.captured} camera frames "
         f"dropped ({result.stop_reason}){recorded}")
    return 128 + stopped_by[0] if stopped_by else 0


# ------------------------------------------------------------------------------------------------ export
def add_export_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode export."""
    g = parser.add_argument_group("export mode")
    g.add_argument("--export_path", default=None, type=output_file,
                   help="file to write: .onnx (ONNX, dynamic batch/height/width) or .pt (TorchScript); the "
                        "exported network takes (B, 3, H, W) RGB in 0-255 and returns the same shape on the 0-255 "
                        "scale, not clamped (clamp to 0-255 before saving; docs/fast.md)")


def run_export(args: argparse.Namespace) -> int:
    """--mode export: write the model as ONNX or TorchScript."""
    from stylefusion.core.errors import ConfigError
    from stylefusion.core.images import ensure_not_input
    from stylefusion.networks.cin import active_style, choose_style
    from stylefusion.networks.export import export_format, export_model
    from stylefusion.networks.model_files import load_model
    from stylefusion.run.sources import check_no_style_index

    if args.export_path is None:
        raise ConfigError("--mode export needs --export_path (a .onnx or .pt file)")
    fmt = export_format(args.export_path)
    if args.style_image:  # a painting: the arbitrary network with its style vector baked in
        check_no_style_index(args.style)  # as image and video modes
        return export_painting(args, fmt)
    require_model(args, "export", "the .pth model to export, or --style_image to export a painting's network")
    ensure_not_input(args.export_path, [args.model_path])
    network, settings = load_model(args.model_path)
    weights = tuple(args.style_weights) if args.style_weights is not None else None
    choose_style(network, args.style, weights, settings.get("styles"), str(args.model_path))
    export_model(network, args.export_path)
    which = active_style(network, settings.get("styles"))  # a multi-style model exports one style, or a blend
    hint = " (--style N or --style_weights choose another)" if which and args.style is None and weights is None else ""
    info(f"exported {args.model_path}{f', {which},' if which else ''} as {fmt} to {args.export_path}{hint}")
    return 0


def export_painting(args: argparse.Namespace, fmt: str) -> int:
    """--mode export --style_image P: the arbitrary network with P's style vector (or the blend) baked in."""
    from pathlib import Path

    from stylefusion.core.errors import ConfigError
    from stylefusion.core.images import ensure_not_input
    from stylefusion.networks.export import export_model
    from stylefusion.run.painting import Paintings, painting_network

    if args.model_path is not None:
        raise ConfigError("give --style_image (any painting, now) or --model_path (a trained model), not both")
    ensure_not_input(args.export_path, list(args.style_image))
    weights = tuple(args.style_weights) if args.style_weights is not None else None
    network = painting_network(Paintings(tuple(args.style_image), weights, style_size(args)))
    export_model(network, args.export_path)
    names = ", ".join(Path(p).name for p in args.style_image)
    info(f"exported the arbitrary-style network with the style of {names} baked in, as {fmt}, to {args.export_path}")
    return 0


# ---------------------------------------------------------------------------------------------- download
def add_download_args(parser: argparse.ArgumentParser) -> None:
    """Options of --mode download."""
    g = parser.add_argument_group("download mode")
    g.add_argument("--models_dir", default="models",
                   help="folder for pytorch/examples' released models (candy, mosaic, rain_princess, udnie)")
    g.add_argument("--models_url", default=None,
                   help="where to get saved_models.zip: a URL, file:// URL or local path (default: the "
                        "pytorch/examples download link)")


def run_download(args: argparse.Namespace) -> int:
    """--mode download: fetch pytorch/examples' four released models, each checked before it is installed.

    A different file at a released model's name (our shipped models/udnie.pth) is kept: that model is saved as
    <name>_released.pth, said in one status line.
    """
    from tqdm import tqdm

    from stylefusion.networks.released import (RELEASED_MODELS_URL, DownloadProgress, download_released_models,
                                               installed_models, missing_models, model_paths)

    if not missing_models(args.models_dir):
        info(f"the released models are already in {args.models_dir}: "
             + ", ".join(str(p) for p in installed_models(args.models_dir).values()))
        return 0
    url = args.models_url or RELEASED_MODELS_URL
    with tqdm(unit="B", unit_scale=True, desc="downloading", disable=None) as bar:
        def on_progress(progress: DownloadProgress) -> None:
            bar.total = progress.total_bytes
            bar.update(progress.done_bytes - bar.n)

        paths = download_released_models(args.models_dir, url, callback=on_progress,
                                         offline_hint="offline? download saved_models.zip elsewhere and pass "
                                                      "it with --models_url PATH")
    info("installed (each loads with weights_only=True and runs): " + ", ".join(str(p) for p in paths))
    renamed = [f"kept {default} ({_what_is_kept(default)}): the released {name} is saved as {path}"
               for (name, default), path in zip(model_paths(args.models_dir).items(), paths) if path != default]
    if renamed:
        info("; ".join(renamed))
    return 0


def _what_is_kept(path: "Path") -> str:  # noqa: F821 (a pathlib.Path)
    """What the file at a released model's name is, for the download's note: a model, or a damaged leftover."""
    from stylefusion.core.errors import StyleFusionError
    from stylefusion.networks.model_files import load_model

    try:
        load_model(path)
    except StyleFusionError:
        return "not a readable model: a partial or damaged file? remove it and run again to install the released " \
               "one there"
    return "a different model, e.g. StyleFusion's own"


# ----------------------------------------------------------------------------------------------- control
def add_control_args(parser: argparse.ArgumentParser) -> None:
    """Creative control of image and video mode: strength, masked regions (stylefusion/run/control.py)."""
    from stylefusion.run.control import DEFAULT_FEATHER

    g = parser.add_argument_group("control (image and video modes)")
    g.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="0 = the input unchanged .. 1 = the model's full style (default); in between, the "
                        "stylised output is blended with the input pixel by pixel (a trained network has no "
                        "content-only point in its feature space to interpolate towards). With --style_image the "
                        "style vector moves from the painting's towards the photo's own (Magenta's identity "
                        "interpolation): 0 renders the photo in its own style, a restyled photo, not a copy")
    g.add_argument("--mask", nargs="+", action="extend", default=None, metavar="PATH",
                   help="greyscale image(s), white = stylise: only these regions get the style, the rest stays "
                        "the input exactly; a transparent pixel counts as black. Give --model_path once per mask "
                        "for a style per region (later masks over earlier ones). A mask is resized to each image; "
                        "another aspect ratio is an error")
    g.add_argument("--feather", type=float, default=DEFAULT_FEATHER, metavar="PX",
                   help=f"width of the soft edge inside each mask, in pixels of the image (default "
                        f"{DEFAULT_FEATHER}; 0: hard edge)")
    g.add_argument("--style", type=int, default=None, metavar="N",
                   help="a multi-style model's style N (0-based; default 0; the model file lists their names)")
    g.add_argument("--style_weights", action=WeightList, default=None, metavar="W",
                   help="blend a multi-style model's styles, e.g. 0.3,0.7,0 (or 0.3 0.7 0): one weight per style, "
                        "normalised to sum 1; the instance-norm scales and shifts are interpolated (Dumoulin et al. "
                        "2017). With several --style_image: one weight per painting, their style vectors blended")


def control_from(args: argparse.Namespace) -> "Control":  # noqa: F821 (imported below: heavy imports stay lazy)
    """The strength/mask settings of image and video mode, checked (one line for a bad value)."""
    from stylefusion.run.control import Control

    weights = tuple(args.style_weights) if args.style_weights is not None else None
    control = Control(strength=args.strength, masks=tuple(args.mask or ()), feather=args.feather, style=args.style,
                      style_weights=weights)
    control.validate(len(args.model_path) if isinstance(args.model_path, list) else 1)
    return control


def build_parser() -> argparse.ArgumentParser:
    """The fast CLI's parser: every mode's options, grouped by mode."""
    parser = OneLineParser(description=__doc__.split("\n\n")[0], epilog=EPILOG, formatter_class=ModeHelpFormatter)
    add_version_arg(parser)
    add_common_args(parser)
    add_train_args(parser)
    add_image_args(parser)
    add_video_args(parser)
    add_webcam_args(parser)
    add_export_args(parser)
    add_sheet_args(parser)
    add_download_args(parser)
    add_painting_args(parser)
    add_control_args(parser)
    return parser


def ignored_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The options set away from their default that --mode args.mode does not read, as --flags."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    return [flags[dest] for dest, modes in MODE_OPTIONS.items()
            if args.mode not in modes and getattr(args, dest, None) != parser.get_default(dest)]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ignored = ignored_options(parser, args)
    if ignored and is_main_process():  # under torchrun: said once
        info(f"warning: {', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to --mode "
             f"{args.mode} and {'is' if len(ignored) == 1 else 'are'} ignored")
    for line in live_unused(args) if args.mode in MODE_OPTIONS["live"] and is_main_process() else ():
        info(line)
    painting_only = [flag for flag, dest in (("--style_size", "style_size"), ("--stroke_scale", "stroke_scale"))
                     if getattr(args, dest) != parser.get_default(dest)]
    if args.mode != "train" and args.model_path is not None and not args.style_image and painting_only:
        info(f"warning: {', '.join(painting_only)} {'sets' if len(painting_only) == 1 else 'set'} how a painting "
             f"(--style_image) is read and rendered, not a --model_path: ignored")
    apply_pixel_limit(args.max_pixels)  # every mode that opens an image: photos, paintings, masks, datasets
    if args.model_path is not None and args.mode not in ("webcam", "sheet"):  # one, except webcam, sheet, masks
        masked = args.mode in ("image", "video") and args.mask  # elsewhere --mask was ignored above
        if len(args.model_path) > 1 and not (masked and len(args.model_path) == len(args.mask)):
            parser.error(f"--mode {args.mode} takes one --model_path" + (" (or one per --mask)" if masked else "")
                         + f", got {len(args.model_path)}")
        if len(args.model_path) == 1:
            args.model_path = args.model_path[0]
    runner = {"train": run_train, "image": run_image, "video": run_video, "webcam": run_webcam,
              "export": run_export, "sheet": run_sheet, "download": run_download}[args.mode]
    return runner(args)


def command() -> int:
    """Console command `fast-style-transfer`: the same as running fast_style_transfer.py."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(command())
