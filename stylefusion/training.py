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
import csv
import math
import os
import random
import re
import shutil
import time
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .dataset import ContentImages, EpochSampler, collate, find_images, ignore_stop_signals
from .device import autocast, check_precision, needs_grad_scaler, resolve_device, training_precision
from .distributed import DistContext, any_process, all_reduce_sum, barrier, gather_ints, process_group
from .errors import ConfigError, DeviceError, ModelError, OutputError
from .images import (atomic_path, ensure_not_input, first_missing, load_image, load_pil, prepare_output_dir,
                     remove_empty_tree, save_image, write_failure)
from .losses import PerceptualLoss, check_weight, parse_layer_weights, style_grams
from .memory import check_fits
from .transformer import TransformerNet, clean_state_dict, load_model, load_weights, save_model
from .vgg import load_vgg19

if TYPE_CHECKING:
    from .stability import CompoundRegularization

CHECKPOINT_FORMAT = "stylefusion-train-checkpoint-v1"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_step_(\d+)\.pt$")
# Training crops must reach relu4_3 (behind three 2x poolings) with at least 4x4 activations.
MIN_IMAGE_SIDE = 32
# A lower bound on training memory per crop pixel (network + VGG activations and gradients): measured about
# 5.5 KB per pixel per image on the CPU at 256 px, so sizes refused with this bound can never fit.
TRAIN_BYTES_PER_PIXEL = 4096
STYLE_BYTES_PER_PIXEL = 512  # the style image's VGG pass: at least two 64-channel fp32 activations per pixel
LOG_COLUMNS = ("step", "epoch", "content", "style", "tv", "stability", "total")


@dataclass
class TrainConfig:
    """Everything a training run needs; the CLI fills it from argparse, library users directly."""
    style_image: str | os.PathLike
    content_dataset: str | os.PathLike
    model_save_path: str | os.PathLike
    epochs: int = 2                      # Johnson et al.: 2 epochs of COCO (40k steps at batch 4)
    max_steps: int | None = None         # stop after this many steps in total (across resumes)
    batch_size: int = 4                  # per process
    image_size: int = 256                # side of the square training crops
    style_size: int | None = None        # longest side of the style image; None: image_size (Johnson et al.)
    lr: float = 1e-3
    # Relative losses (see losses.py), so these are ratios, not pytorch/examples' 1e5 / 1e10. Measured with
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
    network: TransformerNet


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
    for name in ("content_weight", "style_weight", "tv_weight", "stability_weight"):
        check_weight(name, getattr(config, name))
    if not config.dist_timeout_s > 0:
        raise ConfigError(f"dist_timeout_s must be > 0, got {config.dist_timeout_s}")
    return (parse_layer_weights(config.content_layers, "content_layers"),
            parse_layer_weights(config.style_layers, "style_layers"))


def check_training_memory(config: TrainConfig, device: torch.device) -> None:
    """Refuse a crop size / batch size whose training step cannot fit in the device's free memory."""
    images = config.batch_size * (2 if config.stability_weight > 0 else 1)  # the stability term doubles the batch
    style_side = config.style_size or config.image_size  # its Gram matrices come from one VGG pass (no gradients)
    needed = images * config.image_size ** 2 * TRAIN_BYTES_PER_PIXEL + style_side ** 2 * STYLE_BYTES_PER_PIXEL
    sizes = f"--image_size {config.image_size}" + (f", --style_size {config.style_size}" if config.style_size else "")
    check_fits(needed, device, f"training at {sizes} with --batch_size {config.batch_size}",
               "lower --image_size" + (", --style_size" if config.style_size else "") + " or --batch_size")


def _check_model_path(config: TrainConfig, paths: TrainPaths) -> None:
    """Refuse a model path that is a folder or one of the inputs."""
    if paths.model.is_dir():
        raise OutputError(f"--model_save_path is a directory, expected a file name: {paths.model}")
    inputs = [config.style_image] + ([config.pretrained_model_path] if config.pretrained_model_path else [])
    ensure_not_input(paths.model, inputs)


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


def _load_pretrained(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights of an existing model (ours or pytorch/examples') to fine-tune from."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"pretrained model not found: {path} (fetch the released models with --mode download, "
                         "or leave out --pretrained_model_path to train from scratch)")
    network, _ = load_model(path)  # ModelError for another architecture or a corrupt file
    return network.state_dict()


# ------------------------------------------------------------------------------------------------- step

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

def find_latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `directory`, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return max(found)[1] if found else None


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state as tensors and plain numbers, so the checkpoint loads with weights_only=True."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": version, "python": torch.tensor(internal, dtype=torch.int64), "python_gauss": gauss,
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss), "numpy_cached": float(np_cached),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically (temporary name, then rename); OutputError, in one line, when it fails."""
    try:
        with atomic_path(path) as tmp:
            torch.save(dict(state), tmp)
    except (OSError, RuntimeError) as exc:  # a full disk surfaces from torch.save as RuntimeError
        raise OutputError(f"cannot write checkpoint {path}: {write_failure(path, exc)}") from None
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with weights_only=True; ModelError, saying what is wrong, when it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc.strerror or 'not accessible'}") from None
    if size == 0:
        raise ModelError(f"checkpoint {path} is empty (0 bytes): it was cut off while being written")
    try:
        state = load_weights(path, map_location)
    except Exception as exc:  # truncated zip, refused globals, ... (torch's own text is no help to a user)
        what = ("holds objects other than plain weights" if "Unsupported global" in str(exc)
                else "is truncated or damaged (not a readable PyTorch archive)")
        raise ModelError(f"checkpoint {path} {what}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a StyleFusion training checkpoint")
    return state


def find_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoints in `directory`, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_latest_checkpoint(directory: str | os.PathLike, warn: Callable[[str], None] | None = None
                           ) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint that reads; unreadable newer ones are passed over with a warning."""
    unreadable: list[ModelError] = []
    for path in find_checkpoints(directory):
        try:
            state = load_checkpoint(path)
        except ModelError as exc:
            unreadable.append(exc)
            continue
        if unreadable and warn is not None:
            newer = f"{len(unreadable)} newer checkpoints are" if len(unreadable) > 1 else "the newer checkpoint is"
            warn(f"resuming from {path.name} (step {int(state['step'])}) because {newer} unreadable: "
                 f"{unreadable[0]}")
        return path, state
    if unreadable:
        raise ModelError(f"--resume: no readable checkpoint in {directory}; the newest {unreadable[0]}")
    raise ConfigError(f"--resume: no checkpoint found in {directory}; run without --resume to start")


def _prune_checkpoints(directory: Path, keep: int) -> None:
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name)))
    for _, old in found[:-keep]:
        old.unlink(missing_ok=True)


def _resume_signature(config: TrainConfig, content_layers: dict, style_layers: dict, dataset_size: int
                      ) -> dict[str, Any]:
    """Options that must not change when resuming, or the continued run would be a different training."""
    return {"style_image": Path(config.style_image).name, "image_size": config.image_size,
            "style_size": config.style_size or config.image_size, "content_layers": content_layers,
            "style_layers": style_layers, "content_weight": config.content_weight,
            "style_weight": config.style_weight, "tv_weight": config.tv_weight,
            "stability_weight": config.stability_weight, "seed": config.seed, "dataset_size": dataset_size,
            "vgg_weights": Path(str(config.vgg_weights)).name}


# --------------------------------------------------------------------------------------------- loss log

class _LossLog:
    """The per-step loss CSV (rank 0). On resume, rows after the checkpoint's step are dropped first.

    Values are also kept in memory, one compact float array per column, to draw the loss curve.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.columns = {k: array("d") for k in LOG_COLUMNS}
        if resume_step is not None and path.exists():
            try:
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        try:
                            values = [float(row[k]) for k in LOG_COLUMNS]
                        except (KeyError, TypeError, ValueError):
                            continue  # a half-written last line
                        if values[0] <= resume_step:
                            self._keep(values)
            except OSError:
                self.columns = {k: array("d") for k in LOG_COLUMNS}
        try:
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(LOG_COLUMNS)
                writer.writerows(self._format(values) for values in zip(*self.columns.values()))
            self.file = open(path, "a", newline="")
        except OSError as exc:
            raise OutputError(f"cannot write loss log {path}: {exc.strerror or exc}") from None
        self.writer = csv.writer(self.file)

    def _keep(self, values: list[float]) -> None:
        for column, value in zip(self.columns.values(), values):
            column.append(value)

    @staticmethod
    def _format(values: Sequence[float]) -> list[str]:
        return [str(int(v)) if k in ("step", "epoch") else f"{v:.6g}" for k, v in zip(LOG_COLUMNS, values)]

    def add(self, row: Mapping[str, float]) -> None:
        values = [float(row[k]) for k in LOG_COLUMNS]
        self._keep(values)
        try:
            self.writer.writerow(self._format(values))
        except OSError as exc:
            raise OutputError(f"cannot write loss log {self.path}: {write_failure(self.path, exc)}") from None

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write loss log {self.path}: {write_failure(self.path, exc)}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a failed flush was reported already
            self.file.close()

    def draw(self, path: Path) -> Path:
        from .plotting import draw_loss_curve  # Pillow drawing, only needed when writing the PNG
        series = {k: self.columns[k] for k in ("total", "content", "style", "tv", "stability")
                  if any(v > 0 for v in self.columns[k])}
        return draw_loss_curve([int(s) for s in self.columns["step"]], series, path,
                               title=f"training loss: {self.path.stem}")


# -------------------------------------------------------------------------------------------- training

def _preview(network: TransformerNet, image: torch.Tensor, path: Path, precision: str) -> Path:
    """Stylise the fixed preview image with the current network and save it."""
    with torch.no_grad(), autocast(image.device, precision):
        out = network(image.unsqueeze(0) * 255.0)
    return save_image((out.float() / 255.0).clamp(0, 1)[0].cpu(), path)


def train(config: TrainConfig, callback: Callable[[TrainProgress], None] | None = None,
          stop: StopFlag | None = None, warn: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume, or fine-tune) a transformer network for one style and save it with its settings.

    `callback` receives a TrainProgress after every step on rank 0. Setting `stop` (from a signal handler or
    the callback) ends the run after the current step with a checkpoint, as does reaching `max_steps`.
    `warn` receives one-line warnings (e.g. resuming from an older checkpoint because the newest is unreadable).
    """
    stop = stop if stop is not None else StopFlag()
    config = replace(config, precision=training_precision(config.precision))
    content_layers, style_layers = validate_config(config)
    paths = train_paths(config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    check_training_memory(config, device)

    load_pil(config.style_image)  # fail early on a missing or unreadable style image
    dataset = ContentImages(find_images(config.content_dataset), config.image_size)
    preview_index = dataset.first_readable()
    _check_model_path(config, paths)
    checkpoint_path, checkpoint = None, None
    if config.resume:
        checkpoint_path, checkpoint = load_latest_checkpoint(paths.checkpoint_dir, warn)
    elif find_latest_checkpoint(paths.checkpoint_dir) is not None:
        raise ConfigError(f"{paths.checkpoint_dir} already holds checkpoints of an earlier run: pass --resume to "
                          "continue it, or choose another --checkpoint_dir")
    signature = _resume_signature(config, content_layers, style_layers, len(dataset))
    if checkpoint is not None:
        for key, value in signature.items():
            old = (checkpoint.get("signature") or {}).get(key)
            if old != value:
                raise ConfigError(f"cannot resume from {checkpoint_path}: it was trained with {key}={old}, now "
                                  f"{value}; use the same options or another --checkpoint_dir")
    pretrained = _load_pretrained(config.pretrained_model_path) \
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


def _run(config: TrainConfig, paths: TrainPaths, ctx: DistContext, dataset: ContentImages, preview_index: int,
         vgg: nn.Module, content_layers: dict[str, float], style_layers: dict[str, float], signature: dict[str, Any],
         checkpoint: dict[str, Any] | None, checkpoint_path: Path | None,
         pretrained: dict[str, torch.Tensor] | None, callback: Callable[[TrainProgress], None] | None,
         stop: StopFlag) -> TrainResult:
    device = ctx.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    vgg = vgg.to(device).to(memory_format=memory_format)
    loss_fn = PerceptualLoss(vgg, content_layers, style_layers, config.content_weight, config.style_weight,
                             config.tv_weight)
    style = load_image(config.style_image, config.style_size or config.image_size).unsqueeze(0).to(device)
    grams = style_grams(vgg, [style], None, style_layers)  # once, not per step

    torch.manual_seed(config.seed)
    network = TransformerNet().to(device)
    if pretrained is not None:
        network.load_state_dict(pretrained)
    network = network.to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, config.precision))

    n = len(dataset)
    step = epoch = position = images_seen = 0
    skipped: set[int] = set()
    if checkpoint is not None:
        network.load_state_dict(clean_state_dict(checkpoint["model"]))
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr  # the learning rate may change on resume
        if scaler.is_enabled() and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        step, epoch, position = int(checkpoint["step"]), int(checkpoint["epoch"]), int(checkpoint["position"])
        skipped = {int(i) for i in checkpoint["skipped"].tolist()}
        images_seen = int(checkpoint.get("images_seen", 0))
        _set_rng_state(checkpoint["rng"], device)

    model: nn.Module = network
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)

    batch, world = config.batch_size, ctx.world_size

    def batches_left(start: int) -> int:
        return -(-(-(-(n - start) // world)) // batch)

    total_steps = step
    if epoch < config.epochs:
        total_steps += batches_left(position) + (config.epochs - epoch - 1) * batches_left(0)
    if config.max_steps is not None:
        total_steps = min(total_steps, max(step, config.max_steps))

    log = _LossLog(paths.loss_log, step if checkpoint is not None else None) if ctx.is_main else None
    preview_image = dataset.load(preview_index).to(device) if ctx.is_main and config.preview_interval else None
    settings = {"style_image": signature["style_image"], "content_dataset": Path(config.content_dataset).name,
                "content_weight": config.content_weight, "style_weight": config.style_weight,
                "tv_weight": config.tv_weight, "stability_weight": config.stability_weight,
                "content_layers": config.content_layers, "style_layers": config.style_layers,
                "image_size": config.image_size, "style_size": signature["style_size"],
                "batch_size": batch, "world_size": world, "lr": config.lr, "vgg_weights": signature["vgg_weights"],
                "pretrained_model": Path(config.pretrained_model_path).name if config.pretrained_model_path else None,
                "seed": config.seed, "precision": config.precision}

    def write_checkpoint() -> Path | None:
        merged = gather_ints(skipped, ctx)  # every rank takes part; only rank 0 writes
        if not ctx.is_main:
            return None
        state = {"format": CHECKPOINT_FORMAT, "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                 "step": step, "epoch": epoch, "position": position, "world_size": world, "images_seen": images_seen,
                 "skipped": torch.tensor(sorted(merged), dtype=torch.int64), "rng": _rng_state(device),
                 "signature": signature, "settings": settings}
        path = save_checkpoint(paths.checkpoint_dir / f"checkpoint_step_{step:08d}.pt", state)
        _prune_checkpoints(paths.checkpoint_dir, config.keep_checkpoints)
        log.flush()
        log.draw(paths.loss_curve)
        return path

    stopped, saved_at = False, (step if checkpoint is not None else -1)
    last_checkpoint = checkpoint_path if checkpoint is not None else None
    step_time, images_per_s, last_end = None, 0.0, time.perf_counter()
    try:
        while epoch < config.epochs and step < total_steps and not stopped:
            if position >= n:
                epoch, position = epoch + 1, 0
                continue
            sampler = EpochSampler(n, config.seed, epoch, position, ctx.rank, world)
            loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=config.num_workers,
                                collate_fn=collate, pin_memory=device.type == "cuda",
                                worker_init_fn=ignore_stop_signals if config.num_workers else None,
                                # Own generator: creating a loader must not consume the global RNG (exact resume).
                                generator=torch.Generator().manual_seed((config.seed + epoch) % 2 ** 63))
            for images, bad in loader:
                skipped.update(bad)
                images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                generator = None
                if config.stability_weight > 0:
                    generator = torch.Generator().manual_seed(_step_seed(config.seed, step, ctx.rank))
                try:
                    losses = train_step(model, loss_fn, grams, images, optimizer, scaler, config.precision,
                                        config.stability_weight, generator, config.stability_settings)
                except torch.OutOfMemoryError:
                    raise DeviceError(f"out of memory on {device}: lower --batch_size or --image_size") from None
                values = all_reduce_sum(torch.stack([t.float() for t in losses]), ctx) / world
                content, style_, tv, stability, total = values.tolist()  # one sync per step
                if not math.isfinite(total):
                    raise ConfigError(f"the loss became NaN/inf at step {step + 1}: lower --lr or the loss weights, "
                                      "or use --precision fp32")
                step += 1
                position = min(n, position + batch * world)
                images_seen += len(images) * world
                now = time.perf_counter()  # throughput includes waiting for data
                step_time = now - last_end if step_time is None else 0.9 * step_time + 0.1 * (now - last_end)
                last_end = now
                images_per_s = len(images) * world / max(step_time, 1e-9)

                written_checkpoint = written_preview = None
                if ctx.is_main:
                    log.add({"step": step, "epoch": epoch, "content": content, "style": style_, "tv": tv,
                             "stability": stability, "total": total})
                    if config.preview_interval and step % config.preview_interval == 0:
                        written_preview = _preview(network, preview_image,
                                                   paths.preview_dir / f"step_{step:08d}.jpg", config.precision)
                if config.checkpoint_interval and step % config.checkpoint_interval == 0:
                    written_checkpoint = last_checkpoint = write_checkpoint()
                    saved_at = step
                if ctx.is_main and callback is not None:
                    callback(TrainProgress(step, total_steps, epoch, config.epochs, content, style_, tv, stability,
                                           total, images_per_s, written_checkpoint, written_preview))
                if any_process(stop.requested, ctx) and step < total_steps:  # all ranks stop at the same step
                    stopped = True
                    stop.request("stop requested on another process")
                if stopped or step >= total_steps:
                    break
            if position >= n:
                epoch, position = epoch + 1, 0

        if saved_at != step:  # the end of the run, or a stop between checkpoints
            last_checkpoint = write_checkpoint()
        merged = gather_ints(skipped, ctx)
        model_path = None
        if ctx.is_main:
            log.flush()
            log.draw(paths.loss_curve)
            if not stopped:
                if preview_image is not None and step % config.preview_interval:
                    _preview(network, preview_image, paths.preview_dir / f"step_{step:08d}.jpg", config.precision)
                settings.update(steps=step, epochs=epoch + position / n, images_seen=images_seen)
                try:
                    save_model(network, paths.model, settings)
                except (OSError, RuntimeError) as exc:
                    raise OutputError(f"cannot write model {paths.model}: {write_failure(paths.model, exc)}"
                                      ) from None
                model_path = paths.model
        barrier(ctx)  # the other ranks wait until rank 0's files are complete
    finally:
        if log is not None:
            log.close()
    return TrainResult(model_path=model_path if not stopped else None, step=step, epoch=epoch, stopped=stopped,
                       stop_reason=stop.reason if stopped else "", checkpoint=last_checkpoint,
                       resumed_from=checkpoint_path if checkpoint is not None else None, paths=paths,
                       skipped_files=tuple(dataset.files[i] for i in sorted(merged)), network=network)
