"""Where the networks of an image, video or webcam run come from: trained model files, a network the caller
passes, or paintings (any painting, now: run/painting.py). Each mode asks here and gets Stylizer-likes it runs the
same way, whichever it is."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from .control import Control, ControlledStylizer
from .painting import Paintings, painting_names, painting_stylizers
from .stylizer import Stylizer, controlled, load_networks

ModelPaths = str | os.PathLike | Sequence[str | os.PathLike]


def check_no_style_index(style: int | None) -> None:
    """Paintings have no numbered styles: --style (a multi-style model's) is refused beside them."""
    if style is not None:
        raise ConfigError("--style picks a style of a multi-style model: with --style_image, give the paintings "
                          "themselves (--style_weights blends them)")


def check_source(model_path: ModelPaths | None, paintings: Paintings | None, network: nn.Module | None = None) -> None:
    """Exactly one of: model file(s), painting(s), a network (ConfigError naming the options otherwise)."""
    if paintings is not None and paintings.images and model_path is not None:
        raise ConfigError("give --style_image (any painting, now) or --model_path (a trained model), not both")
    if network is None and model_path is None and (paintings is None or not paintings.images):
        raise ConfigError("a model (--model_path) or a painting (--style_image) is needed")


def run_stylizers(model_path: ModelPaths | None, paintings: Paintings | None, control: Control,
                  network: nn.Module | None = None, per_image: bool = True, **options: Any
                  ) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], dict[str, Any], Control]:
    """The run's stylizers (one, or one per mask), what to report about them, and the Control left for the
    blend: with paintings, strength acts on the style vector and --style_weights blends the paintings, so the
    pixel blend keeps only the masks. `options` go to every Stylizer (device, precision, max_memory, ...)."""
    check_source(model_path, paintings, network)
    if paintings is not None and paintings.images:
        check_no_style_index(control.style)
        paintings = replace(paintings, weights=control.style_weights, strength=control.strength)
        stylizers = painting_stylizers(paintings, len(control.masks), per_image, **options)
        return stylizers, {"paintings": painting_names(paintings)}, replace(control, strength=1.0, style_weights=None)
    networks, settings = load_networks(model_path, control) if network is None else ([network], {})
    return [Stylizer(n, **options) for n in networks], settings, control


def controlled_run(model_path: ModelPaths | None, paintings: Paintings | None, control: Control, preserve: str,
                   network: nn.Module | None = None, per_image: bool = True, **options: Any
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """run_stylizers with strength and masks applied (controlled): the one callable a mode runs, and its report."""
    stylizers, settings, control = run_stylizers(model_path, paintings, control, network, per_image, **options)
    return controlled(stylizers, control, preserve), settings


__all__ = ["ControlledStylizer", "check_source", "controlled_run", "run_stylizers"]
