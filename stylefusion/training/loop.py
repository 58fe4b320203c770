"""Training of the Johnson et al. (2016) transformer network for one style, with exact resume and DDP.

One step: stylise a batch of content crops, score the result with the perceptual loss (content at relu2_2,
style Grams at relu1_2..relu4_3, as Johnson et al.) and take an Adam step. Speed comes from doing only what
the loss needs: the content target is computed without gradients and only up to the content layer, VGG is
truncated at the deepest layer used and frozen, and the style Grams are computed once.

Everything a run needs to continue bit-for-bit lives in its checkpoints: weights, optimiser, grad scaler,
epoch, position within the epoch's seeded permutation, step and RNG states. Under torchrun (WORLD_SIZE > 1)
the network is wrapped in DistributedDataParallel, each rank takes its slice of the same permutation, and
only rank 0 writes files; checkpoints hold the unwrapped network, so they resume with any process count.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core.device import autocast, check_precision, needs_grad_scaler, resolve_device, training_precision
from ..core.distributed import DistContext, any_process, all_reduce_sum, barrier, gather_ints, process_group
from ..core.errors import ConfigError, DeviceError, ModelError, OutputError, not_found, resolved
from ..core.images import (ensure_not_input, first_missing, load_image, load_pil, prepare_output_dir, remove_empty_tree,
                           save_image, scaled_size)
from ..core.losses import PerceptualLoss, check_weight, parse_layer_weights, style_grams
from ..core.losslog import LossLog
from ..core.memory import check_fits
from ..core.vgg import load_vgg19
from ..core.weights import load_weights, sha256_of
from ..networks.cin import conditional_norms, make_conditional, select_style, state_style_count
from ..networks.compact import MAX_COMPACT_CHANNELS, compact_channels
from ..networks.model_files import ARCHITECTURES, architecture_of, build_network, load_model, save_model
from ..networks.transformer import MODEL_FORMAT, clean_state_dict
from .checkpoint import (CHECKPOINT_FORMAT, TrainState, checkpoint_file, find_checkpoints,  # noqa: F401 (API)
                         find_latest_checkpoint, load_checkpoint, load_latest_checkpoint, prune_checkpoints, rng_state,
                         save_checkpoint, set_rng_state)
from .dataset import ContentImages, EpochSampler, collate, find_images, ignore_stop_signals

if TYPE_CHECKING:
    from .stability import CompoundRegularization

# What --model_save_path may end in: a model file's names (ONNX and TorchScript come from --mode export).
MODEL_SUFFIXES = (".pth", ".pt")
# Training crops must reach relu4_3 (behind three 2x poolings) with at least 4x4 activations.
MIN_IMAGE_SIDE = 32
# A lower bound on training memory per crop pixel (network + VGG activations and gradients): measured about
# 5.5 KB per pixel per image on the CPU at 256 px, so sizes refused with this bound can never fit.
TRAIN_BYTES_PER_PIXEL = 4096
STYLE_BYTES_PER_PIXEL = 512  # the style image's VGG pass: at least two 64-channel fp32 activations per pixel
LOG_COLUMNS = ("step", "epoch", "content", "style", "tv", "stability", "total")
# Several styles: learning-rate factor of the per-style norm parameters (see TrainConfig.style_norm_lr_scale).
# Measured (bench/RESULTS.md "Several styles"): 48 steps at 64 px part the test's two styles by 0.3 % (x1), 3 %
# (x10), 7 % (x30), 19 % (x100); over 400 steps x30 ends at the lowest loss (x100 and x300 above it); at 128 px,
# 400 steps per style, every style of a 2- or 4-style network ends at 0.87-0.99x its single-style network's
# style error and nearest its own painting.
NORM_LR_SCALE = 30.0


@dataclass
class TrainConfig:
    """Everything a training run needs; the CLI fills it from argparse, library users directly."""
    style_image: str | os.PathLike | Sequence[str | os.PathLike]  # several: one network, one norm set per style
    content_dataset: str | os.PathLike
    model_save_path: str | os.PathLike
    epochs: int = 2                      # Johnson et al.: 2 epochs of COCO (40k steps at batch 4)
    max_steps: int | None = None         # stop after this many steps in total (across resumes)
    batch_size: int = 4                  # per process
    image_size: int = 256                # side of the square training crops
    style_size: int | None = None        # longest side of the style image; None: image_size (Johnson et al.)
    lr: float = 1e-3
    # Several styles: the per-style norm tables (cin.py's gamma/beta) learn at lr x this, so each style parts from
    # the shared average within its 1/N of the steps (measured in bench/RESULTS.md "Several styles in one
    # network"); no effect on a single-style network.
    style_norm_lr_scale: float = NORM_LR_SCALE
    # Relative losses (see core/losses.py), so these are ratios, not pytorch/examples' 1e5 / 1e10. Measured with
    # udnie: optimising one image for this loss keeps its content at 1:1-1:10 and breaks it at 1:100; a trained
    # network (1000 steps, 64 px) keeps content and clearly shows the style at 1:1, loses much content at 1:3.
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0               # Johnson et al. used a small TV term; the upsample+conv decoder needs none
    stability_weight: float = 0.0        # Wang et al. (AAAI 2020) compound regularisation against video flicker
    stability_settings: CompoundRegularization | None = None  # its perturbation; None: stability.py's defaults
    content_layers: str = "relu2_2"
    style_layers: str = "relu1_2,relu2_2,relu3_3,relu4_3"
    pretrained_model_path: str | os.PathLike | None = None
    # The network: "standard" (Johnson et al.) or "compact" (networks/compact.py, for video on a CPU).
    arch: str = "standard"
    # The compact network's residual-stack width; None: compact.COMPACT_CHANNELS, or a fine-tuned or resumed
    # network's own. Wider is slower and closer to the standard network's quality (see networks/compact.py).
    compact_width: int | None = None
    checkpoint_dir: str | os.PathLike | None = None   # None: <model stem>_checkpoints next to the model
    checkpoint_interval: int = 1000      # steps between checkpoints; 0: only at the end or on a stop
    keep_checkpoints: int = 2            # older checkpoints are deleted
    preview_interval: int = 500          # steps between preview images; 0: none
    resume: bool = False
    seed: int = 42
    num_workers: int = 0
    device: str = "auto"
    precision: str = "auto"             # auto: fp32 for training (device.training_precision)
    vgg_weights: str = "caffe"
    channels_last: bool = False          # NHWC tensors: faster convolutions on recent GPUs
    dist_timeout_s: float = 600.0        # a peer silent for this long is an error, not a hang


@dataclass
class StopFlag:
    """Set by a signal handler or a callback; training stops after the current step and saves a checkpoint."""
    requested: bool = False
    reason: str = ""

    def request(self, reason: str = "stop requested") -> None:
        self.requested = True
        self.reason = self.reason or reason


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every step (losses are weighted, averaged over processes); paths when files were written."""
    step: int
    total_steps: int
    epoch: int                 # 0-based epoch of this step
    epochs: int
    content: float
    style: float
    tv: float
    stability: float
    total: float
    images_per_s: float
    checkpoint: Path | None = None
    preview: Path | None = None


@dataclass(frozen=True)
class TrainPaths:
    """Where a run writes: the model, and next to it the loss log, loss curve, previews and checkpoints."""
    model: Path
    checkpoint_dir: Path
    loss_log: Path
    loss_curve: Path
    preview_dir: Path


@dataclass(frozen=True)
class TrainResult:
    """What a run did. `model_path` is None when it stopped early (then `checkpoint` holds its state)."""
    model_path: Path | None
    step: int
    epoch: int
    stopped: bool
    stop_reason: str
    checkpoint: Path | None
    resumed_from: Path | None
    paths: TrainPaths
    skipped_files: tuple[Path, ...]
    network: nn.Module


class StepLosses(NamedTuple):
    """Weighted loss terms of one training step (scalar tensors)."""
    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    stability: torch.Tensor
    total: torch.Tensor


def train_paths(config: TrainConfig) -> TrainPaths:
    """The files a run writes, derived from --model_save_path and --checkpoint_dir."""
    model = Path(config.model_save_path)
    stem = model.stem or "model"
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else model.parent / f"{stem}_checkpoints"
    return TrainPaths(model=model, checkpoint_dir=checkpoint_dir, loss_log=model.parent / f"{stem}_loss.csv",
                      loss_curve=model.parent / f"{stem}_loss.png", preview_dir=model.parent / f"{stem}_previews")


# ------------------------------------------------------------------------------------------- validation

def style_images(config: TrainConfig) -> list[Path]:
    """The style image(s) of a run: one, or several for a multi-style network (networks/cin.py)."""
    styles = config.style_image
    return [Path(styles)] if isinstance(styles, (str, os.PathLike)) else [Path(s) for s in styles]


def _check_style_image(path: Path, side: int) -> None:
    """Fail early on a missing or unreadable style image, or one so thin that at `side` (its longest side, as it
    is read) VGG-19's poolings would leave nothing of its short side."""
    width, height = load_pil(path).size
    h, w = scaled_size(height, width, side)
    if min(h, w) < MIN_IMAGE_SIDE:
        wanted = math.ceil(max(width, height) * MIN_IMAGE_SIDE / min(width, height))
        raise ConfigError(f"the style image {path} ({width}x{height}) is too thin for --style_size {side}: it would "
                          f"be {w}x{h} and VGG-19 needs {MIN_IMAGE_SIDE} px on its short side; crop it or give "
                          f"--style_size {wanted}")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"--{name} must be an integer >= {minimum}, got {value}")
    return value


def validate_config(config: TrainConfig) -> tuple[dict[str, float], dict[str, float]]:
    """Check every option before any slow work; returns the parsed (content_layers, style_layers)."""
    _check_int("batch_size", config.batch_size, 1)
    _check_int("epochs", config.epochs, 1)
    if config.max_steps is not None:
        _check_int("max_steps", config.max_steps, 1)
    for name in ("checkpoint_interval", "preview_interval", "num_workers"):
        _check_int(name, getattr(config, name), 0)
    _check_int("keep_checkpoints", config.keep_checkpoints, 1)
    if config.arch not in ARCHITECTURES:
        raise ConfigError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {config.arch!r}")
    if config.compact_width is not None:
        if config.arch != "compact":
            raise ConfigError(f"--compact_width applies to --arch compact, not --arch {config.arch}")
        _check_int("compact_width", config.compact_width, 2)
        if config.compact_width > MAX_COMPACT_CHANNELS or config.compact_width % 2:
            raise ConfigError(f"--compact_width must be an even number from 2 to {MAX_COMPACT_CHANNELS}, "
                              f"got {config.compact_width}")
    _check_int("seed", config.seed, -(2 ** 62))
    for name in ("image_size", "style_size"):
        value = getattr(config, name)
        if value is None and name == "style_size":
            continue
        _check_int(name, value, 1)
        if value < MIN_IMAGE_SIDE:
            raise ConfigError(f"--{name} must be at least {MIN_IMAGE_SIDE} px (VGG's relu4_3 sits behind three "
                              f"2x poolings), got {value}")
    if config.image_size % 4:
        raise ConfigError(f"--image_size must be a multiple of 4 (the network halves the size twice), "
                          f"got {config.image_size}")
    if not (check_weight("lr", config.lr) > 0):
        raise ConfigError(f"--lr must be > 0, got {config.lr}")
    if not (check_weight("style_norm_lr_scale", config.style_norm_lr_scale) > 0):
        raise ConfigError(f"--style_norm_lr_scale must be > 0, got {config.style_norm_lr_scale}")
    for name in ("content_weight", "style_weight", "tv_weight", "stability_weight"):
        check_weight(name, getattr(config, name))
    if not config.dist_timeout_s > 0:
        raise ConfigError(f"dist_timeout_s must be > 0, got {config.dist_timeout_s}")
    content_layers = parse_layer_weights(config.content_layers, "content_layers")
    style_layers = parse_layer_weights(config.style_layers, "style_layers")
    _check_some_loss(config, content_layers, style_layers)
    return content_layers, style_layers


def _check_some_loss(config: TrainConfig, content_layers: dict[str, float], style_layers: dict[str, float]) -> None:
    """Refuse a run in which every loss term weighs 0: the loss would not depend on the network (autograd fails on
    the first step) or every step would leave it as it is. A term weighs 0 by its option or by all its layers'."""
    def zero(name: str, weight: float, layers: dict[str, float] | None = None) -> str:
        if weight == 0 or layers is None:
            return f"--{name}_weight {weight:g}"
        return f"--{name}_layers " + ",".join(f"{layer}:{w:g}" for layer, w in layers.items())

    content = config.content_weight * sum(content_layers.values())
    style = config.style_weight * sum(style_layers.values())
    if content > 0 or style > 0 or config.tv_weight > 0 or config.stability_weight > 0:
        return
    terms = [zero("content", config.content_weight, content_layers), zero("style", config.style_weight, style_layers),
             zero("tv", config.tv_weight), zero("stability", config.stability_weight)]
    raise ConfigError(f"every loss weight is 0 ({', '.join(terms)}): nothing to train; give --content_weight, "
                      "--style_weight, --tv_weight or --stability_weight a weight > 0")


def check_training_memory(config: TrainConfig, device: torch.device) -> None:
    """Refuse a crop size / batch size whose training step cannot fit in the device's free memory."""
    images = config.batch_size * (2 if config.stability_weight > 0 else 1)  # the stability term doubles the batch
    style_side = config.style_size or config.image_size  # its Gram matrices come from one VGG pass (no gradients)
    needed = images * config.image_size ** 2 * TRAIN_BYTES_PER_PIXEL + style_side ** 2 * STYLE_BYTES_PER_PIXEL
    sizes = f"--image_size {config.image_size}" + (f", --style_size {config.style_size}" if config.style_size else "")
    check_fits(needed, device, f"training at {sizes} with --batch_size {config.batch_size}",
               "lower --image_size" + (", --style_size" if config.style_size else "") + " or --batch_size")


def _check_model_path(config: TrainConfig, paths: TrainPaths) -> None:
    """Refuse a model path that is a folder, inside the dataset, one of the inputs, or not a .pth/.pt name."""
    if paths.model.is_dir():
        raise OutputError(f"--model_save_path is a directory, expected a file name: {paths.model}")
    dataset = resolved(config.content_dataset)
    if dataset.is_dir() and resolved(paths.model.parent).is_relative_to(dataset):
        raise OutputError(f"--model_save_path {paths.model} is inside --content_dataset {config.content_dataset}: "
                          f"the run's previews and loss curve would become training images; save it elsewhere")
    inputs = [*style_images(config)] + ([config.pretrained_model_path] if config.pretrained_model_path else [])
    ensure_not_input(paths.model, inputs)
    _check_by_products(config, paths, inputs)
    if paths.model.suffix.lower() not in MODEL_SUFFIXES:  # after the checks above: their messages say more
        raise ConfigError(f"--model_save_path must end in {' or '.join(MODEL_SUFFIXES)} (a PyTorch model file), got "
                          f"{paths.model.name}: for ONNX, train to a .pth, then convert it with --mode export "
                          f"--export_path NAME.onnx")


# Files a run writes inside its folders: previews in the previews folder, checkpoints in the checkpoint folder.
_PREVIEW_NAME = re.compile(r"step_\d+\.jpg", re.IGNORECASE)
_CHECKPOINT_FILE = re.compile(r"checkpoint_step_\d+\.pt", re.IGNORECASE)


def _check_by_products(config: TrainConfig, paths: TrainPaths, inputs: list[str | os.PathLike]) -> None:
    """Refuse an input (style image, pretrained model) that a run would overwrite or delete: its loss log, loss
    curve, a preview or a checkpoint (the model itself is checked by _check_model_path)."""
    files = {resolved(paths.loss_log): "loss log", resolved(paths.loss_curve): "loss curve"}
    folders = [(resolved(paths.checkpoint_dir), _CHECKPOINT_FILE, "checkpoint")]
    if config.preview_interval:
        folders.append((resolved(paths.preview_dir), _PREVIEW_NAME, "preview"))
    for item in inputs:
        path = resolved(item)
        what = files.get(path) or next((name for folder, pattern, name in folders
                                        if path.parent == folder and pattern.fullmatch(path.name)), None)
        if what is not None:
            raise OutputError(f"refusing to overwrite an input file: {item} is where this run writes its {what}; "
                              f"move it or choose another --model_save_path"
                              + (" or --checkpoint_dir" if what == "checkpoint" else ""))


def _check_model_not_there(paths: TrainPaths, checkpoint: Mapping[str, Any] | None) -> None:
    """Refuse to replace a finished model (one shipped, or hours of one's own training) unless it is the one the
    resumed run (`checkpoint`'s) wrote: --resume with another run's --checkpoint_dir must not replace it either."""
    if not paths.model.exists() or (checkpoint is not None and _written_by_run(paths.model, checkpoint)):
        return
    if checkpoint is None:
        raise OutputError(f"{paths.model} exists and training would replace it: give another --model_save_path, "
                          f"remove it first, or --resume to continue the run that wrote it")
    raise OutputError(f"{paths.model} exists and was not written by the run in {paths.checkpoint_dir}: resuming "
                      f"would replace it; give another --model_save_path or remove it first")


# Settings that a run keeps over its resumes: a model file that agrees on all of them with a checkpoint that
# records no run id (written before run ids) counts as that run's.
_RUN_SETTINGS = ("style_image", "content_dataset", "content_weight", "style_weight", "tv_weight", "stability_weight",
                 "content_layers", "style_layers", "image_size", "style_size", "vgg_weights", "seed", "arch")


def _written_by_run(model: Path, checkpoint: Mapping[str, Any]) -> bool:
    """Whether the model file was saved by the run `checkpoint` belongs to: the same run id in both settings (for
    checkpoints from before run ids: the same run settings, and no run id in the model's)."""
    try:
        data = load_weights(model)
    except Exception:  # unreadable, truncated, not a weights file: not this run's model
        return False
    saved = data.get("settings") if isinstance(data, dict) and data.get("format") == MODEL_FORMAT else None
    recorded = checkpoint.get("settings")
    if not isinstance(saved, Mapping) or not isinstance(recorded, Mapping):
        return False
    if recorded.get("run_id") is not None:
        return saved.get("run_id") == recorded["run_id"]
    return "run_id" not in saved and all(saved.get(key) == recorded.get(key) for key in _RUN_SETTINGS)


def _new_outputs(config: TrainConfig, paths: TrainPaths) -> list[Path]:
    """The files and folders a run will create that do not exist yet, outermost folder first."""
    folders = (paths.model.parent, paths.checkpoint_dir, *([paths.preview_dir] if config.preview_interval else []))
    created = list(dict.fromkeys(m for f in folders if (m := first_missing(f)) is not None))
    return created + [p for p in (paths.loss_log, paths.loss_curve) if not p.exists()]


def _remove_unfinished(paths: TrainPaths, created: list[Path]) -> None:
    """After a failed fresh run with no checkpoint: remove the log, curve, previews and folders it made."""
    if find_latest_checkpoint(paths.checkpoint_dir) is not None:
        return  # a complete checkpoint: keep it and its log, --resume continues from there
    if any(p == paths.preview_dir or p in paths.preview_dir.parents for p in created):
        shutil.rmtree(paths.preview_dir, ignore_errors=True)  # only this run's previews: the folder is new
    for path in reversed(created):
        if path.is_dir():
            remove_empty_tree(path)
        else:
            with contextlib.suppress(OSError):  # e.g. a "folder" that is a file: nothing was made there
                path.unlink(missing_ok=True)


def _prepare_outputs(config: TrainConfig, paths: TrainPaths) -> None:
    """Create the output folders and check they are writable (after every input check passed)."""
    prepare_output_dir(paths.model.parent)
    prepare_output_dir(paths.checkpoint_dir)
    if config.preview_interval:
        prepare_output_dir(paths.preview_dir)


def _new_network(arch: str, styles: int, pretrained: dict[str, torch.Tensor] | None,
                 like: Mapping[str, torch.Tensor] | None = None, compact_width: int | None = None) -> nn.Module:
    """A fresh `arch` network (from the seeded RNG) for `styles` styles, starting from `pretrained` when given.

    Shaped like `pretrained`, else like `like` (a resumed checkpoint's weights), else `compact_width` wide
    (a compact network).
    A single-style pretrained model starts every style from its norm parameters; a multi-style one must hold
    the same number of styles.
    """
    network = build_network(arch, pretrained if pretrained is not None else like, compact_width)
    pretrained_styles = state_style_count(pretrained) if pretrained is not None else 1
    if pretrained is not None and pretrained_styles == 1:
        network.load_state_dict(pretrained)
    if styles > 1 or pretrained_styles > 1:
        make_conditional(network, styles)
    if pretrained is not None and pretrained_styles > 1:
        if pretrained_styles != styles:
            raise ConfigError(f"--pretrained_model_path holds {pretrained_styles} styles, but {styles} style "
                              "image(s) were given")
        network.load_state_dict(pretrained)
    return network


def _load_pretrained(path: str | os.PathLike, arch: str, width: int | None = None) -> dict[str, torch.Tensor]:
    """Weights of an existing model (ours or pytorch/examples') to fine-tune from, of architecture `arch` (and
    compact `width`, when given)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(not_found("pretrained model", path, " (fetch the released models with --mode download, or "
                                   "leave out --pretrained_model_path to train from scratch)"))
    network, _ = load_model(path)  # ModelError for another architecture or a corrupt file
    if network.ARCH not in ARCHITECTURES:  # Magenta's arbitrary network: its weights are not trained here
        raise ConfigError(f"--pretrained_model_path {path} is an any-painting ({network.ARCH}) network, which is not "
                          f"trained here: give a {' or '.join(ARCHITECTURES)} model, or leave the option out")
    if network.ARCH != arch:
        raise ConfigError(f"--pretrained_model_path {path} is a {network.ARCH} network and this run trains "
                          f"--arch {arch}: pass --arch {network.ARCH} or another model")
    state = network.state_dict()
    if arch == "compact" and width is not None and compact_channels(state) != width:
        raise ConfigError(f"--pretrained_model_path {path} is a compact network {compact_channels(state)} wide and "
                          f"this run asks for --compact_width {width}: leave out --compact_width or use another model")
    return state


# ------------------------------------------------------------------------------------------------- step

def optimizer_groups(network: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: everything at --lr, except a multi-style network's per-style norm tables."""
    tables = {id(p) for norm in conditional_norms(network) for p in (norm.gamma, norm.beta)}
    shared = [p for p in network.parameters() if id(p) not in tables]
    if not tables:
        return [{"params": shared, "lr": config.lr}]
    # Dumoulin et al. (2017) trained every parameter at one rate for 40k steps. Here each style's (scale, shift)
    # gets only 1/N of a short run's steps to move away from the shared start, which at Adam's ~lr per step
    # leaves the styles nearly alike, so the tables learn faster; the shared convolutions keep --lr.
    norms = [p for p in network.parameters() if id(p) in tables]
    return [{"params": shared, "lr": config.lr},
            {"params": norms, "lr": config.lr * config.style_norm_lr_scale}]


def _regroup(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer, network: nn.Module) -> dict[str, Any]:
    """An optimiser state saved with every parameter in one group (multi-style runs before the tables had their
    own learning rate), laid out in `optimizer`'s groups so that such a checkpoint still resumes."""
    position = {id(p): i for i, p in enumerate(network.parameters())}  # the one group's order
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    state = {new: saved["state"][position[id(p)]] for new, p in enumerate(flat) if position[id(p)] in saved["state"]}
    groups, start = [], 0
    for group in optimizer.param_groups:
        groups.append({**saved["param_groups"][0], "params": list(range(start, start + len(group["params"])))})
        start += len(group["params"])
    return {"state": state, "param_groups": groups}


def train_step(model: nn.Module, loss_fn: PerceptualLoss, grams: Mapping[str, torch.Tensor],
               batch: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               precision: str = "fp32", stability_weight: float = 0.0,
               generator: torch.Generator | None = None,
               stability_settings: CompoundRegularization | None = None) -> StepLosses:
    """One optimisation step on a batch (B, 3, S, S) RGB [0, 1] already on the device; returns the loss terms."""
    device = batch.device
    x255 = batch * 255.0  # the network works in the 0-255 range, VGG on [0, 1]
    with autocast(device, precision):
        targets = loss_fn.content_targets(batch)  # no_grad, stops at the content layer
        if stability_weight > 0:
            from .stability import DEFAULT_REGULARIZATION, consistency, perturb  # imported only when used
            perturbed, warp = perturb(x255, generator, stability_settings or DEFAULT_REGULARIZATION)
            # One forward for both halves: DistributedDataParallel allows one forward per backward.
            y_all = model(torch.cat([x255, perturbed.to(x255.dtype)]))
            y255, y_perturbed = y_all.chunk(2)
            stability = consistency(y255, y_perturbed, warp) * stability_weight
        else:
            y255 = model(x255)
            stability = batch.new_zeros((), dtype=torch.float32)
        terms = loss_fn(y255 / 255.0, targets, grams)
        total = terms.total + stability
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    return StepLosses(terms.content.detach(), terms.style.detach(), terms.tv.detach(), stability.detach(),
                      total.detach())


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the stability term's noise for one step on one rank: no RNG state to carry across a resume."""
    return ((seed * 1_000_003 + step) * 4099 + rank) % (2 ** 63)


# ------------------------------------------------------------------------------------------- checkpoints

def _resume_signature(config: TrainConfig, content_layers: dict, style_layers: dict, files: Sequence[Path]
                      ) -> dict[str, Any]:
    """Options that must not change when resuming, or the continued run would be a different training.

    Besides the names, digests tell another painting saved under the same name (its bytes) and another photo
    folder of the same size (its sorted relative file names: cheap, no photo is read).
    """
    names = [path.name for path in style_images(config)]  # one style: a plain name, as before (old checkpoints)
    root = Path(config.content_dataset)
    listing = "\n".join(Path(f).relative_to(root).as_posix() for f in files)
    return {"style_image": names[0] if len(names) == 1 else names, "image_size": config.image_size,
            "style_size": config.style_size or config.image_size, "content_layers": content_layers,
            "style_layers": style_layers, "content_weight": config.content_weight,
            "style_weight": config.style_weight, "tv_weight": config.tv_weight,
            "stability_weight": config.stability_weight, "seed": config.seed, "dataset_size": len(files),
            "vgg_weights": Path(str(config.vgg_weights)).name,
            "style_digest": [sha256_of(path) for path in style_images(config)],
            "dataset_digest": hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()}


# Signature entries that checkpoints written before they existed lack: then not compared.
_DIGESTS = ("style_digest", "dataset_digest")


def _check_signature(checkpoint: Mapping[str, Any], path: Path | None, signature: Mapping[str, Any]) -> None:
    """Refuse, in one line naming what changed, to resume a checkpoint trained with other options or inputs."""
    recorded = checkpoint.get("signature") or {}
    for key, value in signature.items():
        old = recorded.get(key)
        if old == value or (key in _DIGESTS and old is None):
            continue
        if key == "style_digest":  # the names matched (checked before): the same name, other contents
            names = signature["style_image"]
            names = [names] if isinstance(names, str) else names
            changed = [name for name, now, then in zip(names, value, old) if now != then] or names
            raise ConfigError(f"cannot resume from {path}: the style image {', '.join(changed)} is not the one it "
                              "was trained with (same name, other contents); use that image or another "
                              "--checkpoint_dir")
        if key == "dataset_digest":
            raise ConfigError(f"cannot resume from {path}: --content_dataset holds other files than the ones it was "
                              "trained with (as many, other names); use the same photos or another --checkpoint_dir")
        raise ConfigError(f"cannot resume from {path}: it was trained with {key}={old}, now {value}; use the same "
                          "options or another --checkpoint_dir")


def _check_resume_arch(checkpoint: Mapping[str, Any], path: Path | None, arch: str, width: int | None = None
                       ) -> None:
    """Refuse to resume a checkpoint of another architecture or compact width, in one line (its weights tell)."""
    model = checkpoint.get("model")
    old = architecture_of(model) if isinstance(model, Mapping) else None
    if old is not None and old != arch:  # None: not a network's weights, which restoring them reports
        raise ConfigError(f"cannot resume from {path}: it trains a {old} network, this run --arch {arch}; pass "
                          f"--arch {old} or use another --checkpoint_dir")
    held = compact_channels(clean_state_dict(model)) if old == "compact" and width is not None else width
    if held != width:
        raise ConfigError(f"cannot resume from {path}: it trains a compact network {held} wide, this run "
                          f"--compact_width {width}; leave out --compact_width or use another --checkpoint_dir")


# -------------------------------------------------------------------------------------------- training

def _preview(network: nn.Module, image: torch.Tensor, path: Path, precision: str) -> Path:
    """Stylise the fixed preview image with the current network and save it."""
    with torch.no_grad(), autocast(image.device, precision):
        out = network(image.unsqueeze(0) * 255.0)
    return save_image((out.float() / 255.0).clamp(0, 1)[0].cpu(), path)


def resume_changes(config: TrainConfig, settings: Mapping[str, Any] | None) -> str | None:
    """One line naming the options a resumed run may change but changes (learning rate, batch size) against a
    checkpoint's `settings`, or None when it changes none (or the checkpoint does not record them)."""
    options = ["lr", "batch_size"] + (["style_norm_lr_scale"] if len(style_images(config)) > 1 else [])
    recorded = {name: settings.get(name) for name in options} if isinstance(settings, Mapping) else {}
    changed = [(name, getattr(config, name), old) for name, old in recorded.items()
               if isinstance(old, (int, float)) and not isinstance(old, bool) and old != getattr(config, name)]
    if not changed:
        return None
    now = " and ".join(f"--{name} {new:g}" for name, new, _ in changed)
    then = ", ".join(f"{name} {old:g}" for name, _, old in changed)
    return f"resuming with {now}; the checkpoint was trained with {then}"


def _resume_notes(config: TrainConfig, checkpoint: Mapping[str, Any], dataset_size: int) -> list[str]:
    """One-line notes on a resume: another --lr or --batch_size; --max_steps or --epochs already reached (no step
    is trained); a --pretrained_model_path, which the checkpoint's weights override."""
    settings = checkpoint.get("settings") if isinstance(checkpoint.get("settings"), Mapping) else {}
    changes = resume_changes(config, settings)
    notes = [changes] if changes is not None else []
    done, epoch = int(checkpoint.get("step", 0)), int(checkpoint.get("epoch", 0))
    if config.max_steps is not None and done >= config.max_steps:
        notes.append(f"the checkpoint is at step {done}, at or past --max_steps {config.max_steps}: no step is "
                     "trained; the model is saved from it")
    elif epoch + (int(checkpoint.get("position", 0)) >= dataset_size) >= config.epochs:
        notes.append(f"the checkpoint is at step {done}, the end of --epochs {config.epochs}: no step is trained; "
                     "the model is saved from it (raise --epochs to train on)")
    if config.pretrained_model_path and Path(config.pretrained_model_path).name != settings.get("pretrained_model"):
        started = (f", which started from {settings['pretrained_model'] or 'random weights'}"
                   if "pretrained_model" in settings else "")
        notes.append(f"--pretrained_model_path {config.pretrained_model_path} is ignored: a resumed run continues "
                     f"from its checkpoint{started}")
    return notes


def train(config: TrainConfig, callback: Callable[[TrainProgress], None] | None = None,
          stop: StopFlag | None = None, warn: Callable[[str], None] | None = None,
          note: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume, or fine-tune) a transformer network for one style (or several: networks/cin.py) and save it.

    `callback` receives a TrainProgress after every step on rank 0. Setting `stop` (from a signal handler or
    the callback) ends the run after the current step with a checkpoint, as does reaching `max_steps`.
    `warn` receives one-line warnings (e.g. resuming from an older checkpoint because the newest is unreadable);
    `note` one-line notes before training starts (e.g. a resumed run that changes --lr or --batch_size).
    """
    stop = stop if stop is not None else StopFlag()
    config = replace(config, precision=training_precision(config.precision))
    content_layers, style_layers = validate_config(config)
    paths = train_paths(config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    check_training_memory(config, device)

    if not style_images(config):
        raise ConfigError("--style_image needs at least one image")
    for path in style_images(config):
        _check_style_image(path, config.style_size or config.image_size)
    dataset = ContentImages(find_images(config.content_dataset), config.image_size)
    preview_index = dataset.first_readable()
    _check_model_path(config, paths)
    checkpoint_path, checkpoint = None, None
    if config.resume:
        checkpoint_path, checkpoint = load_latest_checkpoint(paths.checkpoint_dir, warn)
    elif find_latest_checkpoint(paths.checkpoint_dir) is not None:
        raise ConfigError(f"{paths.checkpoint_dir} already holds checkpoints of an earlier run: pass --resume to "
                          "continue it, or choose another --checkpoint_dir")
    _check_model_not_there(paths, checkpoint)  # after the checkpoints: their message names the run to resume
    signature = _resume_signature(config, content_layers, style_layers, dataset.files)
    if checkpoint is not None:
        _check_resume_arch(checkpoint, checkpoint_path, config.arch, config.compact_width)
        _check_signature(checkpoint, checkpoint_path, signature)
        for line in _resume_notes(config, checkpoint, len(dataset)):
            if note is not None:
                note(line)
    pretrained = _load_pretrained(config.pretrained_model_path, config.arch, config.compact_width) \
        if config.pretrained_model_path and checkpoint is None else None
    # Truncated at the deepest layer used; loaded before any output folder is made (WeightsError).
    vgg = load_vgg19(list(dict.fromkeys([*content_layers, *style_layers])), config.vgg_weights)
    created = _new_outputs(config, paths)
    try:
        _prepare_outputs(config, paths)
        with process_group(device, config.dist_timeout_s) as ctx:
            return _run(config, paths, ctx, dataset, preview_index, vgg, content_layers, style_layers, signature,
                        checkpoint, checkpoint_path, pretrained, callback, stop)
    except BaseException:
        if checkpoint is None:  # a fresh run that failed before its first checkpoint leaves nothing behind
            _remove_unfinished(paths, created)
        raise


class _Run:
    """One training run on one process, in the order it happens: set up -> restore -> step -> checkpoint -> finish."""

    def __init__(self, config: TrainConfig, paths: TrainPaths, ctx: DistContext, dataset: ContentImages,
                 vgg: nn.Module, content_layers: dict[str, float], style_layers: dict[str, float],
                 signature: dict[str, Any], pretrained: dict[str, torch.Tensor] | None,
                 like: Mapping[str, torch.Tensor] | None = None) -> None:
        """Set up: loss network and style targets, the transformer (seeded, shaped like `like` when given: a
        resumed checkpoint's weights), optimiser and grad scaler."""
        self.config, self.paths, self.ctx, self.dataset = config, paths, ctx, dataset
        device = self.device = ctx.device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        vgg = vgg.to(device).to(memory_format=self.memory_format)
        self.loss_fn = PerceptualLoss(vgg, content_layers, style_layers, config.content_weight, config.style_weight,
                                      config.tv_weight)
        styles = [load_image(path, config.style_size or config.image_size).unsqueeze(0).to(device)
                  for path in style_images(config)]
        self.grams = [style_grams(vgg, [style], None, style_layers) for style in styles]  # once, not per step
        torch.manual_seed(config.seed)
        network = _new_network(config.arch, len(styles), pretrained, like, config.compact_width).to(device)
        self.network = network.to(memory_format=self.memory_format).train()
        self.style_names = [path.name for path in style_images(config)]
        # Recorded in the settings of its checkpoints and model: a resume replaces only a model file of its own run.
        # From os.urandom, so no RNG state of the training changes.
        self.run_id = secrets.token_hex(8)
        self.pretrained_model = Path(config.pretrained_model_path).name if config.pretrained_model_path else None
        self.optimizer = torch.optim.Adam(optimizer_groups(self.network, config), lr=config.lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, config.precision))
        self.signature = signature
        self.state = TrainState()
        self.log: LossLog | None = None
        self.stopped = False

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue exactly where a checkpoint left off: weights, optimiser, scaler, counters and RNG states."""
        self.network.load_state_dict(clean_state_dict(checkpoint["model"]))
        saved = checkpoint["optimizer"]
        if len(saved["param_groups"]) == 1 < len(self.optimizer.param_groups):
            saved = _regroup(saved, self.optimizer, self.network)
        self.optimizer.load_state_dict(saved)
        for group, fresh in zip(self.optimizer.param_groups, optimizer_groups(self.network, self.config)):
            group["lr"] = fresh["lr"]  # the learning rates may change on resume
        if self.scaler.is_enabled() and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainState.from_dict(checkpoint)
        set_rng_state(checkpoint["rng"], self.device)
        settings = checkpoint.get("settings")
        if isinstance(settings, Mapping):  # the same run, started from the same model (not --pretrained_model_path)
            self.run_id = settings.get("run_id") or self.run_id
            self.pretrained_model = settings.get("pretrained_model", self.pretrained_model)

    def total_steps(self) -> int:
        """Steps this run ends at: the rest of the epochs from the current position, capped by max_steps."""
        config, state, n, world = self.config, self.state, len(self.dataset), self.ctx.world_size

        def batches_left(start: int) -> int:
            return -(-(-(-(n - start) // world)) // config.batch_size)

        total = state.step
        if state.epoch < config.epochs:
            total += batches_left(state.position) + (config.epochs - state.epoch - 1) * batches_left(0)
        if config.max_steps is not None:
            total = min(total, max(state.step, config.max_steps))
        return total

    def settings(self) -> dict[str, Any]:
        """How the model was trained, saved with it and in checkpoints."""
        config, signature = self.config, self.signature
        return {"style_image": signature["style_image"], "content_dataset": Path(config.content_dataset).name,
                "content_weight": config.content_weight, "style_weight": config.style_weight,
                "tv_weight": config.tv_weight, "stability_weight": config.stability_weight,
                "content_layers": config.content_layers, "style_layers": config.style_layers,
                "image_size": config.image_size, "style_size": signature["style_size"],
                "batch_size": config.batch_size, "world_size": self.ctx.world_size, "lr": config.lr,
                "vgg_weights": signature["vgg_weights"], "pretrained_model": self.pretrained_model,
                "seed": config.seed, "precision": config.precision, "arch": config.arch, "run_id": self.run_id,
                **({"styles": self.style_names, "style_norm_lr_scale": config.style_norm_lr_scale}
                   if len(self.style_names) > 1 else {})}

    def step(self, model: nn.Module, images: torch.Tensor) -> tuple[float, ...]:
        """One optimisation step on this process's batch; the loss terms averaged over processes."""
        config, ctx = self.config, self.ctx
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        # Dumoulin et al.: one style per batch; rotating by step keeps every process on the same style, and a
        # resumed run on the same schedule.
        style = self.state.step % len(self.grams)
        select_style(self.network, style)
        generator = None
        if config.stability_weight > 0:
            generator = torch.Generator().manual_seed(_step_seed(config.seed, self.state.step, ctx.rank))
        try:
            losses = train_step(model, self.loss_fn, self.grams[style], images, self.optimizer, self.scaler,
                                config.precision, config.stability_weight, generator, config.stability_settings)
        except torch.OutOfMemoryError:
            raise DeviceError(f"out of memory on {self.device}: lower --batch_size or --image_size") from None
        values = all_reduce_sum(torch.stack([t.float() for t in losses]), ctx) / ctx.world_size
        content, style, tv, stability, total = values.tolist()  # one sync per step
        if not math.isfinite(total):
            raise ConfigError(f"the loss became NaN/inf at step {self.state.step + 1}: lower --lr or the loss "
                              "weights, or use --precision fp32")
        return content, style, tv, stability, total

    def checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0; every rank takes part in gathering the unreadable files)."""
        merged = gather_ints(self.state.skipped, self.ctx)
        if not self.ctx.is_main:
            return None
        state = {"format": CHECKPOINT_FORMAT,
                 "model": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                 **self.state.to_dict(merged), "world_size": self.ctx.world_size, "rng": rng_state(self.device),
                 "signature": self.signature, "settings": self.settings()}
        path = save_checkpoint(checkpoint_file(self.paths.checkpoint_dir, self.state.step), state)
        prune_checkpoints(self.paths.checkpoint_dir, self.config.keep_checkpoints)
        self._draw()
        return path

    def _draw(self) -> None:
        """Flush the loss log and redraw the loss curve (rank 0)."""
        self.log.flush()
        self.log.draw(self.paths.loss_curve, ("total", "content", "style", "tv", "stability"),
                      f"training loss: {self.paths.loss_log.stem}")

    def loader(self) -> DataLoader:
        """This process's batches for the rest of the current epoch, in the seeded order."""
        config, state = self.config, self.state
        sampler = EpochSampler(len(self.dataset), config.seed, state.epoch, state.position, self.ctx.rank,
                               self.ctx.world_size)
        return DataLoader(self.dataset, batch_size=config.batch_size, sampler=sampler,
                          num_workers=config.num_workers, collate_fn=collate, pin_memory=self.device.type == "cuda",
                          worker_init_fn=ignore_stop_signals if config.num_workers else None,
                          # Own generator: creating a loader must not consume the global RNG (exact resume).
                          generator=torch.Generator().manual_seed((config.seed + state.epoch) % 2 ** 63))

    def finish(self, preview_image: torch.Tensor | None) -> Path | None:
        """Save the model (rank 0, unless stopped) once every process is done; the model path or None."""
        config, state = self.config, self.state
        model_path = None
        if self.ctx.is_main:
            self._draw()
            if not self.stopped:
                if preview_image is not None and state.step % config.preview_interval:
                    _preview(self.network, preview_image, self.paths.preview_dir / f"step_{state.step:08d}.jpg",
                             config.precision)
                settings = self.settings()
                settings.update(steps=state.step, epochs=state.epoch + state.position / len(self.dataset),
                                images_seen=state.images_seen)
                save_model(self.network, self.paths.model, settings)  # OutputError in one line when it fails
                model_path = self.paths.model
        barrier(self.ctx)  # the other ranks wait until rank 0's files are complete
        return model_path


def _run(config: TrainConfig, paths: TrainPaths, ctx: DistContext, dataset: ContentImages, preview_index: int,
         vgg: nn.Module, content_layers: dict[str, float], style_layers: dict[str, float], signature: dict[str, Any],
         checkpoint: dict[str, Any] | None, checkpoint_path: Path | None,
         pretrained: dict[str, torch.Tensor] | None, callback: Callable[[TrainProgress], None] | None,
         stop: StopFlag) -> TrainResult:
    """Set up, restore, then step and checkpoint until the run ends or is stopped, then finish."""
    like = clean_state_dict(checkpoint["model"]) if checkpoint is not None else None  # resumed: keep its shape
    run = _Run(config, paths, ctx, dataset, vgg, content_layers, style_layers, signature, pretrained, like)
    if checkpoint is not None:
        run.restore(checkpoint)
    model: nn.Module = run.network
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            run.network, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    state, total_steps = run.state, run.total_steps()
    run.log = LossLog(paths.loss_log, LOG_COLUMNS, state.step if checkpoint is not None else None) \
        if ctx.is_main else None
    preview_image = dataset.load(preview_index).to(ctx.device) if ctx.is_main and config.preview_interval else None
    saved_at = state.step if checkpoint is not None else -1
    last_checkpoint = checkpoint_path if checkpoint is not None else None
    meter = _Throughput()
    try:
        while state.epoch < config.epochs and state.step < total_steps and not run.stopped:
            if state.position < len(dataset):
                for images, bad in run.loader():
                    state.skipped.update(bad)
                    content, style, tv, stability, total = run.step(model, images)
                    state.step += 1
                    state.position = min(len(dataset), state.position + config.batch_size * ctx.world_size)
                    state.images_seen += len(images) * ctx.world_size
                    images_per_s = meter.update(len(images) * ctx.world_size)
                    written_checkpoint = written_preview = None
                    if ctx.is_main:
                        run.log.add({"step": state.step, "epoch": state.epoch, "content": content, "style": style,
                                     "tv": tv, "stability": stability, "total": total})
                        if config.preview_interval and state.step % config.preview_interval == 0:
                            written_preview = _preview(run.network, preview_image, paths.preview_dir
                                                       / f"step_{state.step:08d}.jpg", config.precision)
                    if config.checkpoint_interval and state.step % config.checkpoint_interval == 0:
                        written_checkpoint = last_checkpoint = run.checkpoint()
                        saved_at = state.step
                    if ctx.is_main and callback is not None:
                        callback(TrainProgress(state.step, total_steps, state.epoch, config.epochs, content, style,
                                               tv, stability, total, images_per_s, written_checkpoint,
                                               written_preview))
                    if any_process(stop.requested, ctx) and state.step < total_steps:  # all ranks stop together
                        run.stopped = True
                        stop.request("stop requested on another process")
                    if run.stopped or state.step >= total_steps:
                        break
            if state.position >= len(dataset):
                state.epoch, state.position = state.epoch + 1, 0
        if saved_at != state.step:  # the end of the run, or a stop between checkpoints
            last_checkpoint = run.checkpoint()
        merged = gather_ints(state.skipped, ctx)
        model_path = run.finish(preview_image)
    finally:
        if run.log is not None:
            run.log.close()
    return TrainResult(model_path=model_path if not run.stopped else None, step=state.step, epoch=state.epoch,
                       stopped=run.stopped, stop_reason=stop.reason if run.stopped else "", checkpoint=last_checkpoint,
                       resumed_from=checkpoint_path if checkpoint is not None else None, paths=paths,
                       skipped_files=tuple(dataset.files[i] for i in sorted(merged)), network=run.network)


class _Throughput:
    """Images per second, smoothed over steps; the time includes waiting for data."""

    def __init__(self) -> None:
        self.step_time: float | None = None
        self.last_end = time.perf_counter()

    def update(self, images: int) -> float:
        """Record a step that processed `images` images; the current rate."""
        now = time.perf_counter()
        elapsed = now - self.last_end
        self.step_time = elapsed if self.step_time is None else 0.9 * self.step_time + 0.1 * elapsed
        self.last_end = now
        return images / max(self.step_time, 1e-9)
