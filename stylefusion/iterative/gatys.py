"""Iterative style transfer (Gatys et al. 2016): optimise an image's pixels against VGG-19 feature targets.

Coarse-to-fine: the image is first optimised at a small size, then upsampled and refined at the next
size, as in neural-style's multires recipe; the coarse steps are cheap and fix the large-scale layout.
Progress is reported through a callback with an IterativeProgress; the CLI turns it into a tqdm bar.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ..core import color
from ..core.device import autocast, check_precision, needs_grad_scaler, resolve_device, resolve_precision
from ..core.errors import ConfigError, InputImageError, OutputError, check_non_negative, shown
from ..core.guided_filter import box_mean, guided_filter
from ..core.images import (check_output_folder, ensure_not_input, load_image, path_list, prepare_output_dir,
                           resize_to, save_image, scaled_size)
from ..core.losses import (GuidedPerceptualLoss, LossTerms, PerceptualLoss, check_blend_weights, check_weight,
                           gram_loss, gram_matrix, parse_layer_weights, raw_layer_weights, region_style_grams,
                           style_grams)
from ..core.losslog import LossLog
from ..core.masks import MASK_RATIO_TOLERANCE, check_mask_count, load_masks
from ..core.memory import memory_budget
from ..core.vgg import VGG19Features, load_vgg19
from ..networks import magenta_weights
from ..networks.arbitrary import arbitrary_network
from .content_boost import ContentBoost, content_boost
from .memory_plan import GB, MemoryPlan, plan_memory
from .pyramid import ImagePyramid
from .strokes import STROKE_DEPTH, stroke_layers, stroke_loss
from .tiled_features import tiled_content_targets, tiled_loss, tiled_region_style_grams, tiled_style_grams

OPTIMIZERS = ("lbfgs", "adam")
STYLE_BALANCES = ("raw", "relative")
# The default style layers of each balance. Relative: equal weights, as Gatys et al. Raw: these differ from
# neural-style-pt's equal layers: in its balance relu5_1 weighs 1e-4 of relu4_1, and a run from the photo matches
# its 500-step result on relu1_1, relu2_1 and relu4_1 long before relu3_1, relu5_1 and the content, unless those
# count more (with losses.RAW_STYLE_PER_CONTENT; bench/RESULTS.md).
RELATIVE_STYLE_LAYERS = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"
RAW_STYLE_LAYERS = "relu1_1,relu2_1,relu3_1:2,relu4_1,relu5_1:10"
# Raw, from Magenta's rendering (L-BFGS): that start already holds the style, and within the 100-step budget the
# content lags (bench/RESULTS.md "Time to quality"). Measured on eight pairs at 384 px against the weights above:
# the content counted ARBITRARY_CONTENT_FACTOR times more (written as every style weight divided by it: the same
# objective), relu1_1 (far ahead on every pair) at half and relu3_1 (the layer that falls behind when the content
# counts more) at 3 brought 5 of 8 pairs to neural-style-pt's 500-step result within 100 steps instead of 3.
ARBITRARY_CONTENT_FACTOR = 1.2
ARBITRARY_STYLE_LAYERS = ",".join(f"{name}:{weight / ARBITRARY_CONTENT_FACTOR:.4g}" for name, weight in (
    ("relu1_1", 0.5), ("relu2_1", 1.0), ("relu3_1", 3.0), ("relu4_1", 1.0), ("relu5_1", 10.0)))
# The start from Magenta's rendering gets the photo's edges back through a guided filter of this radius (px) and
# regularisation (core/guided_filter.py), then this share of the rendering's own fine texture (what differs from its
# window mean), which the filter drops where the photo is flat; measured on the eight pairs (bench/RESULTS.md "Time
# to quality").
ARBITRARY_EDGE_RADIUS = 2
ARBITRARY_EDGE_EPS = 1e-3
ARBITRARY_DETAIL = 0.5
# From the rendering the content weight starts raised and falls back over this many steps (content_boost.py), or
# over this share of a shorter run: over the whole default run, so it reaches the run's own weights at its end. A fall
# over 70 of the 100 steps let the content drift away again after it (tubingen x Starry Night at 512 px: content
# error 0.868 at step 60, 0.883 at 70, 0.873 at 100 against the reference's 0.870; over 100 steps 0.859).
ARBITRARY_BOOST_STEPS = 100
ARBITRARY_BOOST_SHARE = 1.0
MAX_PYRAMID_LEVELS = 12
MAX_EPOCHS = 100_000
INITS = ("auto", "content", "recolored", "arbitrary", "noise", "style")
# --init auto: Magenta's one-pass rendering (arbitrary, recoloured, on the pyramid) where its weights are installed
# and the run is a plain one (no masks, no colour preservation, a style loss, L-BFGS); otherwise, as before it, the
# content recoloured to the styles' palette on a pyramid where the photo's relu1_1 Gram matrix (colour and fine
# texture) is further than AUTO_PYRAMID_DISTANCE from the styles' (first_layer_distance), else the content on the
# pixels. Not in Gatys et al. Measured at 384 px against neural-style-pt's 500-step result on eight pairs
# (bench/RESULTS.md "Time to quality"): from the rendering the mean style error passes the reference's within
# 10-50 steps on every pair and the content error is the one that lags (with ARBITRARY_STYLE_LAYERS, the photo's
# edges put back, ARBITRARY_PYRAMID_LEVELS and the content boost of content_boost.py, at 100 steps at parity on all
# eight pairs, on five of seven pairs added as checks, and on both pairs at 512 px); from the photo, relu1_1 weighs
# almost nothing in the raw balance and closes slowly: at 512 px golden_gate x The Scream and hoovertowernight x
# Shipwreck took 80 and 180 steps recoloured on the pyramid, amber x Shipwreck was not there in 200.
AUTO_PYRAMID_DISTANCE = 0.8
AUTO_DISTANCE_SIDE = 512  # the distance is taken at this longest side (at most the result's)
AUTO_PYRAMID_LEVELS = 4
# From Magenta's rendering the layout and palette are already there and what is left is fine: the strokes at
# relu2_1/relu3_1 and the photo's edges. 4 levels weigh the coarse ones too much there: measured on the pairs of
# bench/RESULTS.md "Time to quality" at 100 steps, 3 levels close Starry Night's strokes and its content sooner
# (tubingen x Starry Night at parity from step 70 instead of 100, at 512 px relu2_1 1.00x the reference's instead of
# 1.10x) and lose no pair; 2 lose golden_gate x The Scream's palette (relu1_1 23 % over).
ARBITRARY_PYRAMID_LEVELS = 3
# The default step budget (steps_per_epoch None), split over the epochs. From Magenta's rendering (L-BFGS): a fifth
# of neural-style-pt's 500 steps of equal cost, by then at or near its quality on the measured pairs (see above).
ARBITRARY_STEPS = 100
# From any other start, the budget of the design before the rendering existed (10 epochs x 30 steps).
DEFAULT_STEPS = 300
# The network sees at least this many pixels on the short side: below it relu5_1 is smaller than 2x2.
MIN_WORKING_SIDE = 32
# A content, style or start image with a shorter side under this holds too little to stylise or to take a style from
# (a 1x1 photo would come out as a flat 512 px square): refused, as the fast modes refuse such paintings.
MIN_IMAGE_SIDE = 16
# The coarsest scale of the multi-scale schedule (longest side, px).
MIN_SCALE = 128
# loss_log.csv: one row per optimisation step (the file name and columns are part of the CLI's output).
# --tol compares the loss with the loss this many steps earlier: one noisy step neither stops nor delays a run.
TOL_WINDOW = 10
LOG_COLUMNS = ("step", "epoch", "height", "width", "content", "style", "tv", "total", "seconds")


@dataclass
class IterativeConfig:
    """Everything the optimisation needs; the CLI fills it from argparse, library users directly."""
    content_image: str | os.PathLike
    style_images: Sequence[str | os.PathLike]
    output_dir: str | os.PathLike
    style_blend_weights: Sequence[float] | None = None
    # One greyscale mask per style (Gatys et al. 2017 spatial control); with masks the blend weights scale
    # each region's style loss instead of mixing the styles' Grams. None: every style everywhere, blended.
    style_masks: Sequence[str | os.PathLike] | None = None
    epochs: int = 10
    # None: the default budget for the start (default_steps: ARBITRARY_STEPS from Magenta's rendering, else
    # DEFAULT_STEPS) split over the epochs in equal whole steps, rounded up (at least 1 each); a number: exactly
    # epochs x steps_per_epoch steps.
    steps_per_epoch: int | None = None
    image_size: int = 512          # longest side of the result
    style_scale: float = 1.0       # style image size relative to the working image
    # Relative losses (see core/losses.py), so these are ratios, not Gatys' 1e-3 alpha/beta. With style_balance
    # "raw", style_weight 3 is neural-style-pt's 100 against content 5; with "relative" (measured, bench/RESULTS.md)
    # 1 keeps fine content detail, 20 nearly erases it, 3 gives a clearly styled image whose layout stays readable.
    content_weight: float = 1.0
    style_weight: float = 3.0
    tv_weight: float = 0.0
    # Gatys et al.: content conv4_2, style conv1_1..conv5_1; we take the ReLU outputs as neural-style does.
    content_layers: str = "relu4_2"
    # None: the style balance's default, RAW_STYLE_LAYERS (each then scaled for the image pair; from Magenta's
    # rendering ARBITRARY_STYLE_LAYERS) or RELATIVE_STYLE_LAYERS.
    style_layers: str | None = None
    # raw: the style_layers weights scaled per image pair to neural-style-pt's unnormalised balance (core/losses.py),
    # which reaches its quality (bench/RESULTS.md); relative: used as given on the relative losses.
    style_balance: str = "raw"
    optimizer: str = "lbfgs"
    lr: float | None = None        # None: 1.0 for L-BFGS, 0.02 for Adam
    # L-BFGS keeps 2 x history image-sized fp32 vectors (history 100 at 512x384: 470 MB), as neural-style does.
    # Measured at 512 px: history 20 cuts peak RSS 2.00 -> 1.48 GB for a 0.4 % higher loss at 300 steps.
    lbfgs_history: int = 100
    # L-BFGS optimises a Laplacian pyramid of the image with this many levels (pyramid.py); 1: the pixels, as
    # Gatys et al. None: AUTO_PYRAMID_LEVELS with a recolored start, ARBITRARY_PYRAMID_LEVELS from Magenta's
    # rendering, else 1. Measured at 512 px (bench/RESULTS.md):
    # with a recolored start 4 levels settle the palette in far fewer steps, but from the plain content they are
    # slower than the pixels on a busy painting's texture.
    pyramid_levels: int | None = None
    init: str = "auto"  # see INITS and AUTO_PYRAMID_DISTANCE
    # Steps over which the content weight, raised at the start as far as the start's losses ask, falls back to
    # content_weight (content_boost.py); 0: off. None: from Magenta's rendering under L-BFGS ARBITRARY_BOOST_STEPS
    # (ARBITRARY_BOOST_SHARE of a shorter run), else 0.
    content_boost_steps: int | None = None
    # Steps on the style of the layers up to relu3_1 alone before the run's own steps (strokes.py), each about 0.4
    # of a full step's time; 0: none. Not a default: measured from Magenta's rendering as 40 of them before 90 steps,
    # the same 13 of 15 pairs reached neural-style-pt's 500-step result, in 6 % more time (bench/RESULTS.md).
    stroke_steps: int = 0
    seed: int = 0
    # Off by default, from measurement (bench/RESULTS.md): at 512 px and equal time, single-scale L-BFGS
    # reached a lower loss (0.900) than the 128->256->512 schedule (0.917).
    multiscale: bool = False
    num_scales: int | None = None  # None: as many factor-2 steps as fit above MIN_SCALE
    # Steps per scale, coarse to fine, factor-2 sizes ending at image_size (e.g. 300,100,50,30 for 4096 px:
    # 512, 1024, 2048, 4096); one epoch per scale. Overrides epochs, steps_per_epoch and multiscale.
    scale_steps: Sequence[int] | None = None
    # Stop a size early once its loss has converged: mean relative decrease per step over the last TOL_WINDOW
    # steps below tol (e.g. 1e-3); the rest of that size's steps are skipped. None: run every planned step.
    tol: float | None = None
    max_memory: float | None = None  # GB the run may use; None: half of the memory available at the start
    tile_size: int | None = None   # force VGG tiles with this core size (px); None: only when over max_memory
    preserve_color: str = "none"
    pooling: str = "max"
    vgg_weights: str = "caffe"
    device: str = "auto"
    # auto: bf16 where the hardware computes it natively. Measured at 512 px on a 2-core AVX512-BF16 CPU:
    # 1.7x faster per L-BFGS step than fp32; Gram matrices and losses stay fp32 (bench/RESULTS.md).
    precision: str = "auto"
    output_format: str = "jpg"

    def __post_init__(self) -> None:
        self.style_images = path_list(self.style_images)  # one path given bare is one style image
        if self.style_masks is not None:  # and one mask (its characters were counted as masks); None: no masks
            self.style_masks = path_list(self.style_masks)


@dataclass
class IterativeProgress:
    """Reported after every optimisation step (and with `saved` set after each epoch's image)."""
    step: int
    total_steps: int
    epoch: int
    epochs: int
    size: tuple[int, int]
    content_loss: float
    style_loss: float
    tv_loss: float
    total_loss: float
    elapsed: float
    saved: Path | None = None
    # Set on reports within a tiled step: (tiles done, tile passes in this step); `step` is the last finished.
    tile: tuple[int, int] | None = None
    # True on the report of the step at which --tol found the loss converged (total_steps already lowered).
    converged: bool = False
    # Set on reports of the stroke steps before the first step (strokes.py): (stroke steps done, stroke steps);
    # `step` is 0 and the losses are NaN there (those steps optimise another objective).
    strokes: tuple[int, int] | None = None

    @property
    def after_step(self) -> bool:
        """Whether this is the one report of a finished optimisation step (not an epoch's image, a tile, a stroke
        step): what a loss printout or curve wants, each step once, with its losses."""
        return self.saved is None and self.tile is None and self.strokes is None


@dataclass
class IterativeResult:
    """What a run produced."""
    image: torch.Tensor            # (3, H, W) in [0, 1], on the CPU
    final_path: Path
    epoch_paths: list[Path] = field(default_factory=list)
    loss_log: Path | None = None
    final_loss: float = math.nan
    steps: int = 0                 # optimisation steps run (fewer than planned when --tol stopped a size early)


def scale_schedule(image_size: int, multiscale: bool, num_scales: int | None) -> list[int]:
    """Longest sides to optimise at, coarse to fine, each twice the previous, ending at image_size."""
    if not multiscale:
        return [image_size]
    if num_scales is None:
        num_scales = max(1, int(math.floor(math.log2(image_size / MIN_SCALE))) + 1)
    return [max(1, round(image_size / 2 ** k)) for k in reversed(range(num_scales))]


def epoch_scales(epochs: int, scales: list[int]) -> list[int]:
    """Which scale each epoch runs at: the finest scale gets at least half the epochs, coarser ones the rest.

    A coarse step costs a quarter of the next finer one, so the cheap coarse epochs settle the layout and
    most of the time is still spent at full resolution.
    """
    coarse_scales = scales[:-1][-(epochs // 2):] if epochs >= 2 else []
    coarse = epochs // 2 if coarse_scales else 0
    plan: list[int] = []
    for i, size in enumerate(coarse_scales):  # split the coarse epochs evenly, coarsest first
        plan += [size] * (coarse // len(coarse_scales) + (1 if i < coarse % len(coarse_scales) else 0))
    return plan + [scales[-1]] * (epochs - coarse)


# The largest learning rate: far past any useful one (0.1-10), and under float32's largest number (3.4e38), past which
# torch.optim's L-BFGS and Adam steps overflowed in a traceback.
MAX_LR = 1e30


def validate(config: IterativeConfig) -> None:
    """Check options before any heavy work, raising ConfigError with a one-line message.

    Types too: a library caller's wrong type (text for a number, True for a count, "off" for multiscale) would
    otherwise fail deep inside with a bare TypeError, or worse, run with another meaning.
    """
    if not isinstance(config, IterativeConfig):
        raise ConfigError(f"stylize takes an IterativeConfig, got {type(config).__name__}")
    _check_paths(config)
    _check_counts(config)
    _check_numbers(config)
    _check_schedule(config)
    _check_choices(config)


def _is_int(value: object) -> bool:
    """An integer that is not a bool (True is an int to Python, but no count is meant by it)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A finite real number (a numpy float too) that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(config: IterativeConfig, name: str, low: int, high: int | None = None, optional: bool = False,
               unit: str = "") -> None:
    """The integer option `name` lies in [low, high] (None allowed where `optional`)."""
    value = getattr(config, name)
    if (optional and value is None) or (_is_int(value) and value >= low and (high is None or value <= high)):
        return
    bounds = f">= {low}" if high is None else f"from {low} to {high}"
    raise ConfigError(f"{name} must be an integer {bounds}{unit}, got {shown(value)}")


def _check_paths(config: IterativeConfig) -> None:
    """The images, masks and output folder are paths (a str or os.PathLike), and blend weights and masks are one
    per style image."""
    for name in ("content_image", "output_dir"):
        if not isinstance(getattr(config, name), (str, os.PathLike)):
            raise ConfigError(f"{name} must be a path, got {getattr(config, name)!r}")
    if not config.style_images:
        raise ConfigError("at least one style image is needed")
    for name in ("style_images", "style_masks"):
        for item in getattr(config, name) or ():
            if not isinstance(item, (str, os.PathLike)):
                raise ConfigError(f"{name} must be paths, got {item!r} among them")
    check_blend_weights(config.style_blend_weights, len(config.style_images))
    check_mask_count(config.style_masks, len(config.style_images))


def _check_counts(config: IterativeConfig) -> None:
    """The integer options: sizes, step counts, levels, the seed."""
    if not _is_int(config.image_size):
        raise ConfigError(f"image_size must be an integer, got {shown(config.image_size)}")
    if config.image_size < MIN_WORKING_SIDE:
        raise ConfigError(f"image_size must be at least {MIN_WORKING_SIDE} px")
    _check_int(config, "epochs", 1)
    if config.epochs > MAX_EPOCHS:  # the plan lists every epoch: 10^9 of them filled the memory before step 1
        raise ConfigError(f"epochs must be at most {MAX_EPOCHS} (an image is saved after each); give more "
                          f"steps_per_epoch instead")
    _check_int(config, "steps_per_epoch", 1, optional=True)
    if not _is_int(config.seed) or not 0 <= config.seed < 2 ** 63:
        raise ConfigError(f"seed must be an integer from 0 to 2**63 - 1, got {shown(config.seed)}")
    _check_int(config, "lbfgs_history", 1)
    _check_int(config, "content_boost_steps", 0, optional=True)
    _check_int(config, "stroke_steps", 0)
    _check_int(config, "pyramid_levels", 1, MAX_PYRAMID_LEVELS, optional=True)
    _check_int(config, "num_scales", 1, optional=True)
    _check_int(config, "tile_size", 16, optional=True, unit=" (px)")


def _check_numbers(config: IterativeConfig) -> None:
    """The real-valued options: loss weights, style scale, learning rate, memory budget, convergence tolerance."""
    for name in ("content_weight", "style_weight", "tv_weight", "style_scale"):
        check_weight(name, getattr(config, name))
    if config.content_weight == config.style_weight == config.tv_weight == 0:
        raise ConfigError("content_weight, style_weight and tv_weight are all 0: nothing to optimise")
    if config.style_scale <= 0:
        raise ConfigError("style_scale must be > 0")
    if config.lr is not None and not check_non_negative("lr", config.lr) > 0:
        raise ConfigError(f"lr must be a finite number > 0, got {config.lr}")
    if config.lr is not None and config.lr > MAX_LR:  # the optimisers' float32 steps overflowed (a traceback)
        raise ConfigError(f"lr must be at most {MAX_LR:g}, got {config.lr:g}")
    memory = config.max_memory
    if memory is not None and not (_is_real(memory) and memory > 0):
        raise ConfigError(f"max_memory must be a number of GB > 0, got {shown(memory)}")
    tol = config.tol
    if tol is not None and not (_is_real(tol) and 0 < tol < 1):
        raise ConfigError(f"tol must be a relative loss change between 0 and 1 (e.g. 0.001), got {shown(tol)}")


def _check_schedule(config: IterativeConfig) -> None:
    """multiscale, num_scales and scale_steps: of the right types, and no scale below MIN_WORKING_SIDE."""
    multiscale = config.multiscale
    if isinstance(multiscale, str):  # "off" is a non-empty string, so true: it ran multi-scale
        raise ConfigError(f"multiscale must be True or False, got the text {multiscale!r} (on/off is the command "
                          f"line's spelling)")
    if not isinstance(multiscale, bool):
        raise ConfigError(f"multiscale must be True or False, got {multiscale!r}")
    if config.multiscale and config.num_scales and config.image_size / 2 ** (config.num_scales - 1) < MIN_WORKING_SIDE:
        most = int(math.log2(config.image_size / MIN_WORKING_SIDE)) + 1
        raise ConfigError(f"{config.num_scales} scales halve image_size {config.image_size} below "
                          f"{MIN_WORKING_SIDE} px: give num_scales {most} or fewer")
    steps = config.scale_steps
    if steps is None:
        return
    if not isinstance(steps, (list, tuple)) or not steps or not all(_is_int(n) and n >= 1 for n in steps):
        raise ConfigError(f"scale_steps must be a list of integers >= 1 (steps per scale, coarse to fine), "
                          f"got {shown(steps)}")
    if config.image_size / 2 ** (len(steps) - 1) < MIN_WORKING_SIDE:
        raise ConfigError(f"{len(steps)} scales halve image_size {config.image_size} below "
                          f"{MIN_WORKING_SIDE} px: give fewer scale_steps")


def _check_layer_spec(name: str, spec: object) -> None:
    """A layer list is text ('relu1_1,relu2_1:0.5'), a collection of such texts, or a {layer: weight} dict (what
    parse_layer_weights reads; not an iterator: it is read twice, here and when the run starts)."""
    if isinstance(spec, (str, Mapping)):
        return
    if isinstance(spec, Iterable) and not isinstance(spec, Iterator) and all(isinstance(s, str) for s in spec):
        return
    raise ConfigError(f"{name} must be text such as 'relu4_2' or 'relu1_1,relu2_1:0.5', got {shown(spec)}")


def _check_choices(config: IterativeConfig) -> None:
    """The named choices: optimizer, output format, style balance, colour, layers, start, VGG weights, device."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{config.optimizer}' (choose {', '.join(OPTIMIZERS)})")
    if config.pyramid_levels is not None and config.pyramid_levels > 1 and config.optimizer != "lbfgs":
        raise ConfigError("--pyramid_levels is for L-BFGS only: Adam clamps the pixels after each step, so it "
                          "optimises them directly (leave out --pyramid_levels or use --optimizer lbfgs)")
    if config.output_format not in ("jpg", "png"):
        raise ConfigError(f"unknown output format '{config.output_format}' (choose jpg or png)")
    if config.style_balance not in STYLE_BALANCES:
        raise ConfigError(f"unknown style balance '{config.style_balance}' (choose {', '.join(STYLE_BALANCES)})")
    color.check_mode(config.preserve_color)
    _check_layer_spec("content_layers", config.content_layers)
    if config.style_layers is not None:
        _check_layer_spec("style_layers", config.style_layers)
    parse_layer_weights(config.content_layers, "content_layers")
    parse_layer_weights(style_layer_spec(config), "style_layers")
    init = config.init
    if init == "arbitrary" and config.style_masks:
        raise ConfigError("--init arbitrary renders the whole photo in the styles' blend and cannot follow "
                          "--style_masks: leave out --init (auto starts from the photo there) or use content")
    if not isinstance(init, (str, os.PathLike)) or (init not in INITS and not Path(init).is_file()):
        given = f"'{init}'" if isinstance(init, (str, os.PathLike)) else repr(init)
        raise ConfigError(f"--init must be {', '.join(INITS)} or an existing image file, got {given}")
    if not isinstance(config.vgg_weights, (str, os.PathLike)):
        raise ConfigError(f"vgg_weights must be caffe, torchvision or a weights file's path, "
                          f"got {config.vgg_weights!r}")
    if not isinstance(config.device, str):
        raise ConfigError(f"device must be a name (auto, cpu, cuda, cuda:N or mps), got {config.device!r}")


def style_layer_spec(config: IterativeConfig) -> str:
    """The style layers as given, or the style balance's default (raw: its own for an L-BFGS run from Magenta's
    rendering once the start is resolved)."""
    if config.style_layers is not None:
        return config.style_layers
    if config.style_balance != "raw":
        return RELATIVE_STYLE_LAYERS
    return ARBITRARY_STYLE_LAYERS if config.init == "arbitrary" and config.optimizer == "lbfgs" else RAW_STYLE_LAYERS


def first_layer_distance(vgg: VGG19Features, content: torch.Tensor, styles: Sequence[torch.Tensor],
                         config: IterativeConfig) -> float:
    """Relative error of the content's relu1_1 Gram matrix against the (blended) styles', at AUTO_DISTANCE_SIDE."""
    side = min(AUTO_DISTANCE_SIDE, config.image_size)

    def fit(image: torch.Tensor) -> torch.Tensor:
        return resize_to(image, scaled_size(*image.shape[-2:], max(MIN_WORKING_SIDE, side)))[None]

    with torch.no_grad():
        target = style_grams(vgg, [fit(s) for s in styles], config.style_blend_weights, ["relu1_1"])["relu1_1"]
        gram = gram_matrix(vgg(fit(content), ["relu1_1"])["relu1_1"])
    return float(gram_loss(gram, target)) ** 0.5


def resolve_start(config: IterativeConfig, vgg: VGG19Features, content: torch.Tensor,
                  styles: Sequence[torch.Tensor]) -> IterativeConfig:
    """The config with init "auto" and the None of pyramid_levels, content_boost_steps and steps_per_epoch made
    concrete for these images."""
    init = config.init
    if init == "auto":
        init = auto_start(config, lambda: first_layer_distance(vgg, content, styles, config))
    levels = config.pyramid_levels
    if levels is None:
        levels = 1
        if config.optimizer == "lbfgs" and init in ("recolored", "arbitrary"):
            levels = ARBITRARY_PYRAMID_LEVELS if init == "arbitrary" else AUTO_PYRAMID_LEVELS
    config = replace(config, init=init, pyramid_levels=levels)
    if config.steps_per_epoch is None:
        config = replace(config, steps_per_epoch=max(1, math.ceil(default_steps(config) / config.epochs)))
    if config.content_boost_steps is None:
        boost = 0
        if init == "arbitrary" and config.optimizer == "lbfgs":
            total = sum(steps for _, steps in step_plan(config))
            boost = min(ARBITRARY_BOOST_STEPS, round(ARBITRARY_BOOST_SHARE * total))
        config = replace(config, content_boost_steps=boost)
    return config


def auto_start(config: IterativeConfig, distance: Callable[[], float]) -> str:
    """What --init auto starts from (see AUTO_PYRAMID_DISTANCE); `distance` gives first_layer_distance when asked."""
    # Masks give each region its own style, and colour preservation keeps the photo's palette: neither a rendering
    # in the whole style nor a recolouring; nor without a style loss.
    plain = not config.style_masks and config.preserve_color == "none" and config.style_weight > 0
    if plain and config.optimizer == "lbfgs" and magenta_weights.weights_installed():
        return "arbitrary"
    return "recolored" if plain and distance() > AUTO_PYRAMID_DISTANCE else "content"


def default_steps(config: IterativeConfig) -> int:
    """The run's step budget when steps_per_epoch is not given (config.init already concrete)."""
    return ARBITRARY_STEPS if config.init == "arbitrary" and config.optimizer == "lbfgs" else DEFAULT_STEPS


def _initial_image(config: IterativeConfig, content: torch.Tensor, styles: list[torch.Tensor],
                   init_image: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """The first scale's starting image (3, H, W) at the content's size."""
    size = tuple(content.shape[-2:])
    if config.init == "content":
        return content.clone()
    if config.init == "recolored":
        # Not in Gatys et al.: the content with the styles' colour mean and covariance (all their pixels), so
        # the optimiser need not find the palette itself (bench/RESULTS.md: fewer steps to the same quality).
        return _recoloured_to(content, styles)
    if config.init == "arbitrary":
        # Not in Gatys et al.: Magenta's one-pass rendering of the content in the styles (Ghiasi et al. 2017),
        # their style vectors blended by the blend weights, so L-BFGS starts near a stylised image.
        network = arbitrary_network(styles, config.style_blend_weights)
        with torch.no_grad():  # the network pads to a multiple of 4 at the bottom and right: crop that off
            rendering = network(content[None].float() * 255.0)[0, :, :size[0], :size[1]].div_(255.0)
        # Then the photo's edges put back (the guided filter refits the rendering's colours locally to the photo's
        # luminance): the network moves and blurs them, and the content error is what lags from this start
        # (bench/RESULTS.md "Time to quality"). Then recoloured to the styles' palette as the recolored start is:
        # the network's colours are near the painting's, not on it, and relu1_1 closes slowly.
        # Half the rendering's fine texture then goes back: the filter keeps only the texture that follows the photo,
        # so the strokes in its flat areas (sky, water) would be style the run must redraw.
        edged = guided_filter(rendering, content, ARBITRARY_EDGE_RADIUS, ARBITRARY_EDGE_EPS)
        detail = rendering - box_mean(rendering, ARBITRARY_EDGE_RADIUS)
        return _recoloured_to(edged.add_(detail, alpha=ARBITRARY_DETAIL).clamp_(0, 1), styles)
    if config.init == "noise":
        # Gatys et al. start from white noise; uniform [0, 1] noise in RGB space.
        return torch.rand(content.shape, generator=generator)
    if config.init == "style":
        return resize_to(styles[0], size)
    return resize_to(init_image, size)


def _recoloured_to(image: torch.Tensor, styles: Sequence[torch.Tensor]) -> torch.Tensor:
    """The image with the colour mean and covariance of all the styles' pixels together."""
    return color.match_color(image, torch.cat([s.reshape(3, 1, -1) for s in styles], dim=2))


def _working_size(content_hw: tuple[int, int], longest: int) -> tuple[int, int]:
    h, w = scaled_size(*content_hw, longest)
    if min(h, w) < MIN_WORKING_SIDE:  # tiny or very thin images: upscale the short side for the network
        factor = MIN_WORKING_SIDE / min(h, w)
        h, w = max(MIN_WORKING_SIDE, round(h * factor)), max(MIN_WORKING_SIDE, round(w * factor))
    return h, w


def _style_side(longest: int, style_scale: float) -> int:
    """The style images' longest side at a working size whose longest side is `longest` (--style_scale)."""
    return max(MIN_WORKING_SIDE, round(longest * style_scale))


def _check_tiny(images: list[tuple[str, torch.Tensor]]) -> None:
    """Refuse an image whose shorter side is under MIN_IMAGE_SIDE, naming it."""
    for name, image in images:
        h, w = image.shape[-2:]
        if min(h, w) < MIN_IMAGE_SIDE:
            raise InputImageError(f"the {name} is too small ({w}x{h}): it needs at least {MIN_IMAGE_SIDE} px on "
                                  f"each side")


def _check_thin(content_hw: tuple[int, int], image_size: int) -> None:
    """Refuse a photo so thin that its short side, brought up to MIN_WORKING_SIDE, makes the result more than twice
    image_size (an 8000x2 strip at 128 px: 128000x32, 9 GB for one step); milder ones are upscaled as before."""
    h, w = _working_size(content_hw, image_size)
    if max(h, w) > 2 * image_size:
        enough = math.ceil(MIN_WORKING_SIDE * max(content_hw) / min(content_hw))  # its short side then 32 px
        raise ConfigError(f"the content image ({content_hw[1]}x{content_hw[0]}) is too thin for --image_size "
                          f"{image_size}: VGG-19 needs a {MIN_WORKING_SIDE} px short side, which makes it {w}x{h}; "
                          f"crop it or give --image_size {enough}")


def _check_init_shape(init_hw: tuple[int, int], content_hw: tuple[int, int]) -> None:
    """Refuse an --init image whose aspect ratio is not the photo's: it would be stretched to the photo's shape
    (a mask of another shape is refused alike, core/masks.py)."""
    if abs((init_hw[1] / init_hw[0]) / (content_hw[1] / content_hw[0]) - 1) > MASK_RATIO_TOLERANCE:
        raise ConfigError(f"the --init image ({init_hw[1]}x{init_hw[0]}) is not the shape of the content image "
                          f"({content_hw[1]}x{content_hw[0]}): it would be stretched to it; crop it to the photo's "
                          f"aspect ratio or start from the photo (--init content)")


def step_plan(config: IterativeConfig) -> list[tuple[int, int]]:
    """(longest side, steps) of each epoch, coarse to fine."""
    if config.scale_steps is not None:
        n = len(config.scale_steps)
        return [(round(config.image_size / 2 ** k), steps) for k, steps in zip(reversed(range(n)), config.scale_steps)]
    scales = scale_schedule(config.image_size, config.multiscale, config.num_scales)
    return [(longest, config.steps_per_epoch) for longest in epoch_scales(config.epochs, scales)]


# --style_scale bringing a style image over this many times its own size gets a warning (with the run's others, once it
# has passed its checks): a slow Gram pass (--style_scale 100 at 64 px took minutes on a 96 px painting) and no
# detail the painting has not.
STYLE_UPSCALE_WARNING = 4.0


def style_upscale(config: IterativeConfig) -> str | None:
    """A line for the CLI when --style_scale enlarges a style image over STYLE_UPSCALE_WARNING times its own size
    (image headers only; None when none does or an image cannot be read: the run says that itself). Only a scale
    over 1 is the user's enlargement: at 1 a small painting is brought to the result's size, as it must be."""
    from PIL import Image

    if config.style_scale <= 1:
        return None
    try:
        with Image.open(config.content_image) as img:
            content_hw = img.size[::-1]
        longest = max(_working_size(content_hw, config.image_size))
        side = _style_side(longest, config.style_scale)
        for path in config.style_images:
            with Image.open(path) as img:
                width, height = img.size
            if min(width, height) >= MIN_IMAGE_SIDE and side > STYLE_UPSCALE_WARNING * max(width, height):
                return (f"style_scale {config.style_scale:g} enlarges {Path(path).name} ({width}x{height}) to {side} "
                        f"px on its longest side, {side / max(width, height):.0f}x its own size: slow, and it adds no "
                        f"detail (style_scale {max(width, height) / longest:.2g} keeps its own size)")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return None


def multiscale_unused(config: IterativeConfig) -> str | None:
    """Why a run asked for coarse-to-fine runs at one size only (None when it does not): a line for the CLI."""
    if not config.multiscale or config.scale_steps is not None or len({s for s, _ in step_plan(config)}) > 1:
        return None
    if len(scale_schedule(config.image_size, True, config.num_scales)) == 1:
        return (f"multiscale runs only at the full size: image_size {config.image_size} leaves no coarser scale "
                f"of at least {MIN_SCALE} px (num_scales sets their number)")
    return "multiscale runs only at the full size: the coarse scales take half the epochs, and 1 epoch has no half"


def strokes_unused(config: IterativeConfig) -> str | None:
    """Why the run's stroke steps would do nothing (None when they run or none are asked): a line for the CLI. They
    optimise the style layers no deeper than STROKE_DEPTH, so they need a style weight and such a layer."""
    if config.stroke_steps == 0:
        return None
    if config.style_weight == 0:
        return "stroke_steps do nothing with style_weight 0: no stroke step is taken"
    if not stroke_layers(parse_layer_weights(style_layer_spec(config), "style_layers")):
        return f"stroke_steps do nothing without a style layer up to {STROKE_DEPTH}: no stroke step is taken"
    return None


def memory_plans(config: IterativeConfig, plan: list[tuple[int, int]], content_hw: tuple[int, int],
                 style_hws: list[tuple[int, int]], layers: list[str], content_layers: list[str],
                 device: torch.device) -> dict[tuple[int, int], MemoryPlan]:
    """Tiling and L-BFGS history of each working size, raising MemoryBudgetError before anything large exists."""
    budget = memory_budget(config.max_memory and config.max_memory * GB, device)
    steps: dict[tuple[int, int], int] = {}
    for longest, n in plan:
        size = _working_size(content_hw, longest)
        steps[size] = steps.get(size, 0) + n
    plans = {}
    for size, n in steps.items():
        style_long = _style_side(max(size), config.style_scale)
        style_px = max(h * w for h, w in (_working_size(s, style_long) for s in style_hws))
        # L-BFGS history fills one entry per step; Adam's two moments cost as much as one entry.
        history = min(config.lbfgs_history, n) if config.optimizer == "lbfgs" else 1
        plans[size] = plan_memory(*size, layers, content_layers if config.content_weight > 0 else [], style_px,
                                  history, budget, config.tile_size, len(config.style_masks or []),
                                  pyramid=config.pyramid_levels > 1)
    return plans


def _make_optimizer(config: IterativeConfig, image: torch.Tensor, history: int
                    ) -> tuple[torch.optim.Optimizer, ImagePyramid | None]:
    """The optimiser, and the pyramid it optimises in place of the pixels (None: the pixels themselves)."""
    if config.optimizer == "lbfgs":
        pyramid = ImagePyramid(image, config.pyramid_levels) if config.pyramid_levels > 1 else None
        # One L-BFGS iteration per step (history kept across steps), no line search, as neural-style does.
        return torch.optim.LBFGS(pyramid.levels if pyramid else [image], lr=config.lr or 1.0, max_iter=1,
                                 history_size=history, tolerance_grad=-1, tolerance_change=-1), pyramid
    return torch.optim.Adam([image], lr=config.lr or 0.02), None  # validate() keeps pyramids to L-BFGS


class Convergence:
    """--tol: the loss has converged when it fell by less than tol per step, on average over TOL_WINDOW steps.

    An increase counts as no decrease, so a loss that has started to oscillate also counts as converged.
    """

    def __init__(self, tol: float | None, window: int = TOL_WINDOW) -> None:
        self.tol, self.window = tol, window
        self.losses: deque[float] = deque(maxlen=window + 1)

    def reset(self) -> None:
        """Forget the history (a new size starts a new optimisation)."""
        self.losses.clear()

    def update(self, loss: float) -> bool:
        """Record one step's loss; True once the loss has converged."""
        if self.tol is None:
            return False
        self.losses.append(loss)
        if len(self.losses) <= self.window:
            return False
        first = self.losses[0]
        return (first - loss) / (abs(first) * self.window) < self.tol


class LossScale:
    """Dynamic loss scaling for fp16: the per-pixel gradients of these losses (~1e-10) underflow in fp16.

    backward() runs on loss * scale and divides the image's fp32 gradient back; on inf/NaN it halves the
    scale and asks for a retry. GradScaler does the same for optimizers that step once per backward, which
    L-BFGS (closure re-evaluation) does not.
    """

    def __init__(self, enabled: bool, scale: float = 2.0 ** 24) -> None:
        self.enabled, self.scale = enabled, scale

    def backward(self, loss: torch.Tensor, image: torch.Tensor) -> bool:
        """Backpropagate loss into image.grad; False when the scaled gradient overflowed (retry)."""
        if not self.enabled or not torch.isfinite(loss):  # a non-finite loss is the caller's error to report
            loss.backward()
            return True
        (loss * self.scale).backward()
        image.grad.div_(self.scale)
        if torch.isfinite(image.grad).all():
            return True
        self.scale /= 2
        if self.scale < 1:
            raise ConfigError("fp16 gradients overflow even without loss scaling: use --precision bf16 or fp32")
        image.grad = None
        return False


def _targets(config: IterativeConfig, loss_fn: PerceptualLoss, content: torch.Tensor, styles: list[torch.Tensor],
             style_layers: dict[str, float], tile: int | None, device: torch.device
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Content activations and style Grams (blended, or one per region with masks) at one scale, tiled or not."""
    content = content.unsqueeze(0).to(device)
    styles = [s.unsqueeze(0).to(device) for s in styles]
    guided = isinstance(loss_fn, GuidedPerceptualLoss)  # one target per region: each style's own whole Gram
    if tile is None:
        return (loss_fn.content_targets(content),
                region_style_grams(loss_fn.vgg, styles, style_layers) if guided else
                style_grams(loss_fn.vgg, styles, config.style_blend_weights, style_layers))
    return (tiled_content_targets(loss_fn, content, tile),
            tiled_region_style_grams(loss_fn.vgg, styles, style_layers, tile) if guided else
            tiled_style_grams(loss_fn.vgg, styles, config.style_blend_weights, style_layers, tile))


def _closure(optimizer: torch.optim.Optimizer, image: torch.Tensor, loss_fn: PerceptualLoss,
             targets: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], tile: int | None,
             loss_scale: LossScale, cast: tuple[torch.device, str], terms: list[LossTerms],
             on_tile: Callable[[int, int], None] | None) -> Callable[[], torch.Tensor]:
    """The optimiser's closure: loss with image.grad set, whole image or on tiles; appends the terms."""
    def closure() -> torch.Tensor:
        if tile is not None:  # tiled_loss sets image.grad itself (two passes over the tiles)
            optimizer.zero_grad(set_to_none=True)
            image.grad = None
            with autocast(*cast):
                t = tiled_loss(loss_fn, image, targets, grams, tile, on_tile)
            terms.append(t)
            return t.total
        while True:
            optimizer.zero_grad(set_to_none=True)
            image.grad = None  # not the optimiser's own variable when it optimises a pyramid
            with autocast(*cast):
                t = loss_fn(image, targets, grams)
            if loss_scale.backward(t.total, image):
                break
        terms.append(t)
        return t.total
    return closure


def _recoloured_styles(styles: list[torch.Tensor], content: torch.Tensor, preserve: str) -> list[torch.Tensor]:
    """The style images as colour preservation wants them (Gatys et al. 2017)."""
    if preserve == "histogram":  # recolour the style to the content's palette
        return [color.match_color(s, content) for s in styles]
    if preserve == "luminance":  # transfer on luminance only
        return [color.match_luminance(s, content) for s in styles]
    return styles


class _Scale(NamedTuple):
    """One scale's targets, its loss (layer weights balanced for these targets) and the image to optimise."""
    content: torch.Tensor
    targets: dict
    grams: dict
    image: torch.Tensor
    loss_fn: PerceptualLoss


def _balanced(config: IterativeConfig, loss_fn: PerceptualLoss, targets: dict, grams: dict) -> PerceptualLoss:
    """The loss with its style layer weights rebalanced for this scale's targets (--style_balance raw)."""
    if config.style_balance != "raw" or loss_fn.style_weight == 0:
        return loss_fn
    units = loss_fn.vgg.normalize.caffe_square_units
    regions = loss_fn.regions if isinstance(loss_fn, GuidedPerceptualLoss) else None
    return replace(loss_fn, style_layers=raw_layer_weights(loss_fn.style_layers, targets, grams, units, regions))


def _start_scale(config: IterativeConfig, loss_fn: PerceptualLoss, content_full: torch.Tensor,
                 styles_full: list[torch.Tensor], init_image: torch.Tensor | None, previous: torch.Tensor | None,
                 size: tuple[int, int], tile: int | None, run: tuple[torch.device, str],
                 generator: torch.Generator) -> _Scale:
    """Targets, loss and starting image of one scale.

    The first scale starts from config.init; a finer one from the previous scale's image, upsampled.
    """
    device, precision = run
    content = resize_to(content_full, size)
    target_content = color.luminance(content) if config.preserve_color == "luminance" else content
    style_long = _style_side(max(size), config.style_scale)
    styles = [resize_to(s, _working_size(tuple(s.shape[-2:]), style_long)) for s in styles_full]
    with autocast(device, precision):
        targets, grams = _targets(config, loss_fn, target_content, styles, loss_fn.style_layers, tile, device)
    if previous is None:
        start_image = _initial_image(config, target_content, styles, init_image, generator)
    else:
        start_image = F.interpolate(previous.detach(), size=size, mode="bicubic", align_corners=False)[0]
    image = start_image.unsqueeze(0).to(device).contiguous().requires_grad_(True)
    return _Scale(content, targets, grams, image, _balanced(config, loss_fn, targets, grams))


def _plan_memory(config: IterativeConfig, plan: list[tuple[int, int]], content: torch.Tensor,
                 styles: list[torch.Tensor], layers: list[str], content_layers: list[str], device: torch.device,
                 precision: str) -> dict[tuple[int, int], MemoryPlan]:
    """memory_plans() for these images, refusing fp16 where a scale runs tiled."""
    memory = memory_plans(config, plan, tuple(content.shape[-2:]), [tuple(s.shape[-2:]) for s in styles], layers,
                          content_layers, device)
    if precision == "fp16" and any(m.tile is not None for m in memory.values()):
        raise ConfigError("fp16 has no loss scaling on tiles: use --precision bf16 or fp32 for this size")
    return memory


def _masks(config: IterativeConfig, content: torch.Tensor) -> torch.Tensor | None:
    """The style masks (R, 1, h, w) at the final working size, or None without masks."""
    if not config.style_masks:
        return None
    hw = tuple(content.shape[-2:])
    return load_masks(config.style_masks, hw, _working_size(hw, config.image_size))


def _loss_function(config: IterativeConfig, vgg: torch.nn.Module, content_layers: dict[str, float],
                   style_layers: dict[str, float], masks: torch.Tensor | None,
                   device: torch.device) -> PerceptualLoss:
    """The loss: plain, or guided by region masks (each style in its region, blend weights per region)."""
    weights = (config.content_weight, config.style_weight, config.tv_weight)
    if masks is None:
        return PerceptualLoss(vgg, content_layers, style_layers, *weights)
    blend = list(config.style_blend_weights or [1.0] * len(masks))
    return GuidedPerceptualLoss(vgg, content_layers, style_layers, *weights, masks=masks.to(device),
                                region_weights=blend)


def _save(image: torch.Tensor, path: Path, inputs: list) -> Path:
    """Save a result image, refusing a path that is one of the inputs."""
    ensure_not_input(path, inputs)
    save_image(image, path)
    return path


def _loss_log(output_dir: Path, inputs: list) -> LossLog:
    """The run's loss_log.csv, a row per step (refused when it is one of the inputs); pending until the first image
    is saved, so a run that stops before it leaves an earlier run's log as it was."""
    path = output_dir / "loss_log.csv"
    ensure_not_input(path, inputs)
    return LossLog(path, LOG_COLUMNS, int_columns=("step", "epoch", "height", "width"), formats={"seconds": ".3f"},
                   pending=True)


class _BestSoFar:
    """The lowest-loss image a size's steps have evaluated, so the run never ends on a worse one.

    Not in Gatys et al. (neither does neural-style-pt guard it): L-BFGS without a line search now and then takes a
    step that raises the loss 100-1000x, and a step's loss is that of the image it starts from, so an image saved
    right after such a step (a run of 2-3 steps) would be one no loss was ever computed for.
    """

    def __init__(self) -> None:
        self.total, self.image, self._before = math.inf, None, None

    def before_step(self, image: torch.Tensor) -> None:
        """Remember the image the next step evaluates (its loss comes with the step)."""
        if self._before is None or self._before.shape != image.shape:  # a new size: a new objective
            self.total, self._before, self.image = math.inf, torch.empty_like(image), torch.empty_like(image)
        self._before.copy_(image.detach())

    def after_step(self, total: float) -> None:
        """The loss of the remembered image (in the user's weights, comparable across the boost's steps)."""
        if total < self.total:
            self.total = total
            self.image.copy_(self._before)


def _step(optimizer: torch.optim.Optimizer, image: torch.Tensor, clamp: bool,
          make_closure: Callable[[list[LossTerms]], Callable[[], torch.Tensor]],
          pyramid: ImagePyramid | None = None) -> list[float]:
    """One optimiser step (on the pixels, or on the pyramid's levels then composed into `image`).

    Returns its (content, style, tv, total) loss values, refused when not finite.
    """
    terms: list[LossTerms] = []
    closure = make_closure(terms)
    optimizer.step(pyramid.wrap(closure, image) if pyramid else closure)
    if pyramid:
        pyramid.write_to(image)
    if clamp:  # Adam's steps may leave [0, 1]
        with torch.no_grad():
            image.clamp_(0, 1)
    values = [float(v.detach()) for v in terms[-1]]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError("the loss became NaN/inf: lower --lr or the weights, or use --precision fp32")
    return values


@dataclass
class _Setup:
    """What stylize() prepares before the first step: checked inputs, the plan, its memory, the loss."""
    config: IterativeConfig  # with its start resolved (resolve_start)
    device: torch.device
    precision: str
    content_full: torch.Tensor
    styles_full: list[torch.Tensor]
    init_image: torch.Tensor | None
    plan: list[tuple[int, int]]
    memory: dict[tuple[int, int], MemoryPlan]
    output_dir: Path
    inputs: list
    loss_fn: PerceptualLoss


def _check_output_names(output_dir: Path, output_format: str, epochs: int, inputs: list) -> None:
    """Refuse, before any work, a run whose log, epoch images (`epochs` of them) or final image would overwrite one of
    its inputs (an --init image from an earlier run, say); each save checks again."""
    # Only a name that exists can be an input (or a link to one): the epoch images already there, not every one the
    # run could write (a loop over 10^9 epochs would outlast the run).
    check_output_folder(output_dir)
    pattern = rf"epoch_(\d{{3,}})\.{re.escape(output_format)}"
    existing = [p.name for p in (output_dir.glob(f"epoch_*.{output_format}") if output_dir.is_dir() else ())
                if (m := re.fullmatch(pattern, p.name)) and 1 <= int(m[1]) <= epochs]
    for name in ("loss_log.csv", *existing, f"final.{output_format}"):
        ensure_not_input(output_dir / name, inputs)
        if (output_dir / name).is_dir():  # found only when writing it, after every step
            raise OutputError(f"{output_dir / name} is a folder, where the run writes its "
                              f"{'loss log' if name.endswith('.csv') else 'final image'}: move it or choose another "
                              "output folder")


def _prepare(config: IterativeConfig) -> _Setup:
    """Validate, load the images, plan sizes and memory, then make the output folder and the loss function.

    Everything that can refuse the run does so before the output folder exists.
    """
    validate(config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    precision = resolve_precision(config.precision, device)
    content_layers = parse_layer_weights(config.content_layers, "content_layers")
    style_layers = parse_layer_weights(style_layer_spec(config), "style_layers")  # the names; weights: below

    # Refuse, from their headers, images whose decoding alone would not fit the host memory budget.
    host_budget = memory_budget(config.max_memory and config.max_memory * GB, torch.device("cpu"))
    content_full = load_image(config.content_image, max_bytes=host_budget)
    styles_full = [load_image(p, max_bytes=host_budget) for p in config.style_images]
    init_image = load_image(config.init, max_bytes=host_budget) if config.init not in INITS else None
    _check_tiny([("content image", content_full), *(("style image", st) for st in styles_full),
                 *([("init image", init_image)] if init_image is not None else [])])
    _check_thin(tuple(content_full.shape[-2:]), config.image_size)
    if init_image is not None:
        _check_init_shape(tuple(init_image.shape[-2:]), tuple(content_full.shape[-2:]))
    layers = list(dict.fromkeys([*content_layers, *style_layers]))
    vgg = load_vgg19(layers, config.vgg_weights, config.pooling)  # on the CPU until the plan has passed
    config = resolve_start(config, vgg, content_full, styles_full)
    style_layers = parse_layer_weights(style_layer_spec(config), "style_layers")  # the start's own default
    masks = _masks(config, content_full)  # before any output: a bad mask leaves nothing behind
    plan = step_plan(config)
    memory = _plan_memory(config, plan, content_full, styles_full, layers, list(content_layers), device, precision)
    inputs = [config.content_image, *config.style_images, *(config.style_masks or []),
              *([config.init] if config.init not in INITS else [])]
    _check_output_names(Path(config.output_dir), config.output_format, len(plan), inputs)
    output_dir = prepare_output_dir(config.output_dir)

    styles_full = _recoloured_styles(styles_full, content_full, config.preserve_color)
    vgg = vgg.to(device)
    loss_fn = _loss_function(config, vgg, content_layers, style_layers, masks, device)
    return _Setup(config, device, precision, content_full, styles_full, init_image, plan, memory, output_dir, inputs,
                  loss_fn)


def stylize(config: IterativeConfig,
            callback: Callable[[IterativeProgress], None] | None = None) -> IterativeResult:
    """Run Gatys et al. style transfer, saving an image per epoch and the final image in config.output_dir."""
    s = _prepare(config)
    config = s.config
    plan, run = s.plan, (s.device, s.precision)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)

    loss_scale = LossScale(needs_grad_scaler(*run))
    total_steps = sum(steps for _, steps in plan)
    convergence = Convergence(config.tol)
    result_paths: list[Path] = []
    start, step = time.perf_counter(), 0
    image: torch.Tensor | None = None
    current_size: tuple[int, int] | None = None
    converged_size: tuple[int, int] | None = None
    values = [math.nan] * 4
    boost: ContentBoost | None = None
    best = _BestSoFar()

    log = _loss_log(s.output_dir, s.inputs)
    try:
        for epoch, (longest, epoch_steps) in enumerate(plan, start=1):
            size = _working_size(tuple(s.content_full.shape[-2:]), longest)
            if size == converged_size:  # --tol: this size's loss has converged, its other epochs are skipped
                continue
            if size != current_size:  # a new scale: new targets, upsampled image, fresh optimiser state
                if image is not None:  # the coarser scale hands on its best evaluated image
                    _better_of(image, best, lambda: _losses_at(image, loss_fn, targets, grams, tile, run)[3])
                optimizer = pyramid = targets = grams = None  # free the coarser scale's state first
                report = callback and _stroke_reports(callback, IterativeProgress(
                    0, total_steps, epoch, len(plan), size, *[math.nan] * 4, 0.0), config.stroke_steps, start)
                content, targets, grams, image, loss_fn, optimizer, pyramid, boost = _enter_scale(
                    s, image, size, boost, current_size is None, loss_scale, generator, report)
                current_size = size
                convergence.reset()
            tile = s.memory[size].tile

            def on_tile(done: int, passes: int) -> None:
                callback(IterativeProgress(step, total_steps, epoch, len(plan), size, *values,
                                           time.perf_counter() - start, tile=(done, passes)))

            for done in range(1, epoch_steps + 1):
                best.before_step(image)
                step_loss, factor = _boosted(loss_fn, boost, step)
                values = _step(optimizer, image, config.optimizer == "adam", lambda terms: _closure(
                    optimizer, image, step_loss, targets, grams, tile, loss_scale, run, terms,
                    on_tile if callback else None), pyramid)
                values = _unboosted(values, factor)
                best.after_step(values[3])
                if boost is None:  # the start's own losses (the first step's) set the boost
                    boost = content_boost(values[0], values[1], config.content_boost_steps)
                step += 1
                elapsed = time.perf_counter() - start
                log.add(dict(zip(LOG_COLUMNS, (step, epoch, *size, *values, elapsed))))
                converged = _converged(convergence, factor, values[3])
                if converged:
                    converged_size = size
                    total_steps -= _steps_left(plan, epoch, epoch_steps - done, size, s.content_full)
                if callback:
                    callback(IterativeProgress(step, total_steps, epoch, len(plan), size, *values, elapsed,
                                               converged=converged))
                if converged:
                    break
            log.flush()

            result_paths.append(_save(_finish(image, content, config.preserve_color),
                                      s.output_dir / f"epoch_{epoch:03d}.{config.output_format}", s.inputs))
            log.commit()
            if callback:
                callback(IterativeProgress(step, total_steps, epoch, len(plan), size, *values,
                                           time.perf_counter() - start, saved=result_paths[-1]))
    finally:
        log.close()

    final, final_loss = _final_image(image, best, lambda: _losses_at(image, loss_fn, targets, grams, tile, run)[3],
                                     content, config.preserve_color, result_paths, s.inputs)
    final_path = _save(final, s.output_dir / f"final.{config.output_format}", s.inputs)
    return IterativeResult(final.cpu(), final_path, result_paths, log.path, final_loss, steps=step)


def _enter_scale(s: _Setup, image: torch.Tensor | None, size: tuple[int, int], boost: ContentBoost | None,
                 first: bool, loss_scale: LossScale, generator: torch.Generator,
                 report: Callable[[int], None] | None) -> tuple:
    """A new working size: its targets and loss, the image brought to it, the stroke steps (first size only, with
    the boost they read from the start) and a fresh optimiser. Returns (content, targets, grams, image, loss_fn,
    optimizer, pyramid, boost)."""
    config, run, tile, history = s.config, (s.device, s.precision), s.memory[size].tile, s.memory[size].history
    content, targets, grams, image, loss_fn = _start_scale(
        config, s.loss_fn, s.content_full, s.styles_full, s.init_image, image, size, tile, run, generator)
    if first and config.stroke_steps:
        boost = _strokes_first(config, loss_fn, image, (targets, grams), tile, loss_scale, run, history, report)
    optimizer, pyramid = _make_optimizer(config, image, history)
    return content, targets, grams, image, loss_fn, optimizer, pyramid, boost


def _final_image(image: torch.Tensor, best: _BestSoFar, loss: Callable[[], float], content: torch.Tensor,
                 preserve: str, epoch_paths: list[Path], inputs: list) -> tuple[torch.Tensor, float]:
    """The image the run ends on and its loss (_better_of); the last epoch image is rewritten when it changed."""
    total, changed = _better_of(image, best, loss)
    final = _finish(image, content, preserve)
    if changed and epoch_paths:
        _save(final, epoch_paths[-1], inputs)
    return final, total


def _better_of(image: torch.Tensor, best: _BestSoFar, loss: Callable[[], float]) -> tuple[float, bool]:
    """Leave in `image` the one the last step left (its loss: one forward pass) or the best one its size's steps
    evaluated where that is lower, clamped to [0, 1]; returns (its loss, whether it was replaced). At the end of a
    run and of each coarser scale: a diverged last step (-3.7 .. 5.6 after 2 steps at 64 px) upsampled into the next
    scale started it 480x higher than the last loss."""
    total = loss()
    changed = best.image is not None and best.total < total
    with torch.no_grad():
        if changed:
            image.copy_(best.image)
        image.clamp_(0, 1)
    return (best.total if changed else total), changed


def _converged(convergence: Convergence, factor: float, total: float) -> bool:
    """--tol's verdict after a step; it judges one objective, so its window starts once the boost is over."""
    if factor != 1:
        convergence.reset()
        return False
    return convergence.update(total)


def _stroke_reports(callback: Callable[[IterativeProgress], None], progress: IterativeProgress, steps: int,
                    start: float) -> Callable[[int], None]:
    """A report of stroke step `done` of `steps`: `progress` with its `strokes` and elapsed time set."""
    return lambda done: callback(replace(progress, strokes=(done, steps), elapsed=time.perf_counter() - start))


def _strokes_first(config: IterativeConfig, loss_fn: PerceptualLoss, image: torch.Tensor, targets: tuple[dict, dict],
                   tile: int | None, loss_scale: LossScale, run: tuple[torch.device, str], history: int,
                   report: Callable[[int], None] | None) -> ContentBoost:
    """The stroke steps on the start `image` (strokes.py), and the content boost its own losses ask for: set by the
    start, as without stroke steps, not by what those steps leave (they close much of the style first)."""
    content_targets, grams = targets
    values = _losses_at(image, loss_fn, content_targets, grams, tile, run)
    _stroke_steps(config, stroke_loss(loss_fn), image, grams, tile, loss_scale, run, history, report)
    return content_boost(values[0], values[1], config.content_boost_steps)


def _losses_at(image: torch.Tensor, loss_fn: PerceptualLoss, targets: dict, grams: dict, tile: int | None,
               run: tuple[torch.device, str]) -> list[float]:
    """The (content, style, tv, total) loss values of `image` as it is, without a step."""
    if tile is None:
        with torch.no_grad(), autocast(*run):
            return [float(v) for v in loss_fn(image, targets, grams)]
    with autocast(*run):  # the tiled loss sets image.grad as it goes: drop it
        values = [float(v) for v in tiled_loss(loss_fn, image, targets, grams, tile)]
    image.grad = None
    return values


def _stroke_steps(config: IterativeConfig, loss_fn: PerceptualLoss | None, image: torch.Tensor, grams: dict,
                  tile: int | None, loss_scale: LossScale, run: tuple[torch.device, str], history: int,
                  report: Callable[[int], None] | None) -> None:
    """config.stroke_steps steps of the shallow style loss (strokes.py) on `image`, in place, with an optimiser of
    their own: the run's steps then start a fresh L-BFGS history, as their objective differs.

    Without a line search, L-BFGS on the style alone sometimes overshoots for a step (a loss 50-100x the last one
    at 64-128 px): `image` ends as the point of lowest loss among those evaluated, never a worse one than the start.
    """
    if loss_fn is None:
        return
    optimizer, pyramid = _make_optimizer(config, image, history)
    best, kept = math.inf, image.detach().clone()

    def tracked(terms: list[LossTerms]) -> Callable[[], torch.Tensor]:
        closure = _closure(optimizer, image, loss_fn, {}, grams, tile, loss_scale, run, terms, None)

        def keep_best() -> torch.Tensor:
            nonlocal best
            loss = closure()
            if float(loss.detach()) < best:  # the loss of the point the step starts from (image = that point)
                best = float(loss.detach())
                kept.copy_(image.detach())
            return loss
        return keep_best

    for done in range(1, config.stroke_steps + 1):
        terms: list[LossTerms] = []
        closure = tracked(terms)
        optimizer.step(pyramid.wrap(closure, image) if pyramid else closure)
        if pyramid:
            pyramid.write_to(image)
        if config.optimizer == "adam":
            with torch.no_grad():
                image.clamp_(0, 1)
        if report:
            report(done)
        if not math.isfinite(float(terms[-1].total.detach())):
            break
    with torch.no_grad():
        image.copy_(kept)


def _boosted(loss_fn: PerceptualLoss, boost: ContentBoost | None, step: int) -> tuple[PerceptualLoss, float]:
    """The loss for the step after `step` steps, its content weight raised by the boost's factor, and the factor."""
    factor = boost.factor(step) if boost else 1.0
    return (loss_fn if factor == 1 else replace(loss_fn, content_weight=loss_fn.content_weight * factor)), factor


def _unboosted(values: list[float], factor: float) -> list[float]:
    """A step's (content, style, tv, total) in the run's own weights: the log and --tol see the user's objective."""
    if factor == 1:
        return values
    content = values[0] / factor
    return [content, values[1], values[2], content + values[1] + values[2]]


def _steps_left(plan: list[tuple[int, int]], epoch: int, left_in_epoch: int, size: tuple[int, int],
                content_full: torch.Tensor) -> int:
    """Steps a convergence at `size` skips: the rest of this epoch and the later epochs at the same size."""
    hw = tuple(content_full.shape[-2:])
    return left_in_epoch + sum(n for longest, n in plan[epoch:] if _working_size(hw, longest) == size)


def _finish(image: torch.Tensor, content: torch.Tensor, preserve: str) -> torch.Tensor:
    """The image as saved: clamped to [0, 1], with the content's chroma in luminance mode."""
    out = image.detach().float().cpu()[0].clamp(0, 1)
    if preserve == "luminance":
        out = color.transfer_luminance(out, content)
    return out
