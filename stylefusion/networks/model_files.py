"""Model files and the networks they hold: build a network by architecture name, recognise a state dict's
architecture, load (weights_only, checked) and save (atomically).

Model files record their architecture in settings["arch"]: "standard" (transformer.py, Johnson et al., the
pytorch/examples layout), "compact" (compact.py, issue #16) or "arbitrary" (arbitrary.py, Magenta's network with
its style vector baked in); files without it (pytorch/examples' released models, plain state dicts) are
recognised by their conv weights. A compact network's width is read from its weights. Several styles in one
file (cin.py) are recognised by their per-style norm tables.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError, OutputError, require_file
from ..core.weights import load_weights
from .arbitrary import ArbitraryNet
from .cin import make_conditional, state_style_count
from .compact import COMPACT_CHANNELS, CompactNet, compact_channels
from .transformer import MODEL_FORMAT, TransformerNet, clean_state_dict

ARCHITECTURES = ("standard", "compact")  # what --mode train builds
# What model files may hold: the arbitrary network is not trained here (its weights are Magenta's).
KNOWN_ARCHITECTURES = (*ARCHITECTURES, "arbitrary")


def build_network(arch: str = "standard", like: Mapping[str, torch.Tensor] | None = None,
                  compact_width: int | None = None) -> nn.Module:
    """A new network of the named architecture (one of KNOWN_ARCHITECTURES); ConfigError for another name.

    A compact network is `compact_width` wide (None: COMPACT_CHANNELS), or, with `like` (a state dict of that
    architecture), as wide as it.
    """
    if arch == "compact":
        return CompactNet(compact_channels(like) if like is not None else compact_width or COMPACT_CHANNELS)
    if arch == "standard":
        return TransformerNet()
    if arch == "arbitrary":  # untrained: load_model fills it from a file, arbitrary.load_arbitrary_net from Magenta's
        return ArbitraryNet()
    raise ConfigError(f"unknown network architecture {arch!r} (known: {', '.join(KNOWN_ARCHITECTURES)})")


def architecture_of(state: dict[str, Any]) -> str | None:
    """The architecture a state dict belongs to, for files without settings["arch"] (released models, plain
    state dicts): the one with exactly its conv weights (norms left out: other code may swap them); else None."""
    def convs(keys: Any) -> set[str]:
        return {k for k in keys if isinstance(k, str) and k.endswith("conv2d.weight")}

    found = convs(state)
    return next((arch for arch in KNOWN_ARCHITECTURES if convs(build_network(arch).state_dict()) == found), None)


def _check_finite(network: nn.Module, path: Path) -> None:
    """Refuse weights with NaN/inf, and weights whose output on a small probe image is not finite."""
    bad = [name for name, value in network.state_dict().items()
           if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelError(f"{path} holds NaN or infinite weights (in {bad[0]}{more}): its training diverged or "
                         "the file is damaged; retrain it or use another model")
    ramp = torch.linspace(0.0, 255.0, 32)
    probe = torch.stack([ramp.expand(32, 32), ramp.expand(32, 32).T, torch.full((32, 32), 128.0)])[None]
    with torch.inference_mode():
        out = network(probe)
    if not bool(torch.isfinite(out).all()):
        raise ModelError(f"{path} produces NaN or infinite pixels (its weights overflow): retrain it or use "
                         "another model")


# What other files a user may hand over as a model start with (file signatures), for a message that names them.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def _read_model_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """The unpickled contents of a model file (weights_only); ModelError naming what the file is when it is not one."""
    try:
        return load_weights(path, map_location)
    except Exception as exc:  # truncated zip, bad pickle, globals refused by weights_only ...
        error = exc
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_IMAGE_SIGNATURES):
        raise ModelError(f"{path} is an image, not a model file (a painting goes to --style_image)")
    if _is_torchscript(path):
        raise ModelError(f"{path} is a TorchScript export, which only runs elsewhere: give the .pth model it "
                         "was exported from")
    if any(s in str(error) for s in ("Unsupported global", "GLOBAL", "Unsupported operand")):
        # a pickle of code objects, or a plain Python pickle: not a PyTorch weights file
        raise ModelError(f"{path} is not a plain weights file (refused by weights_only loading)")
    # torch's own text ("101", "failed finding central directory ...") does not help a user: leave it out.
    raise ModelError(f"cannot read model file {path} (corrupt or truncated, or not a PyTorch weights file)")


def _is_torchscript(path: Path) -> bool:
    """Whether the file is a TorchScript archive (torch.jit.save: a zip holding code/ and constants.pkl)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return False


def _state_and_settings(data: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, settings) of a loaded model file: ours (format + settings), a released model or a plain state
    dict; a training checkpoint, or anything else, is a ModelError saying what it is."""
    settings: Any = {}
    if isinstance(data, dict) and data.get("format") == MODEL_FORMAT:
        state, settings = data.get("state_dict"), data.get("settings") or {}
    elif isinstance(data, dict) and isinstance(data.get("model"), dict) and "optimizer" in data:
        raise ModelError(f"{path} is a training checkpoint, not a model: resume its run (--mode train --resume, "
                         "with --max_steps at its step to save the model without training more)")
    else:
        state = data
    if not isinstance(settings, dict):
        raise ModelError(f"{path} is damaged: its settings entry is not a table ({type(settings).__name__})")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelError(f"{path} does not hold a transformer-network state dict")
    # A network saved while wrapped in DistributedDataParallel (or DataParallel) prefixes every name with "module."
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, dict(settings)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file (ours, or a pytorch/examples released model) as (network in eval mode, settings).

    The network is built in the file's architecture: settings["arch"], or recognised by its keys.

    Weights with NaN/inf, or that turn a small probe image into NaN/inf, raise ModelError.
    """
    path = require_file(path, "model", ModelError)
    state, settings = _state_and_settings(_read_model_file(path, map_location), path)
    arch = settings.get("arch") or architecture_of(state) or "standard"  # "standard" then refuses it
    if arch not in KNOWN_ARCHITECTURES:
        raise ModelError(f"{path} holds a network of unknown architecture {arch!r} (this version knows "
                         f"{', '.join(KNOWN_ARCHITECTURES)}): update StyleFusion or retrain it")
    network = build_network(arch, state)
    styles = state_style_count(state)
    if styles > 1:  # several styles (Dumoulin et al. 2017): one (scale, shift) table per norm layer
        make_conditional(network, styles)
    try:
        network.load_state_dict(clean_state_dict(state))
    except RuntimeError:
        raise ModelError(f"{path} is a model of another architecture, not a fast style transfer network") from None
    network = network.eval().requires_grad_(False)
    _check_finite(network, path)
    return network, settings


def save_model(network: nn.Module, path: str | os.PathLike, settings: dict[str, Any] | None = None) -> None:
    """Write weights plus the settings they were trained with (and the network's architecture, "arch"),
    atomically (temporary name, then rename); OutputError, in one line, when it cannot be written."""
    from ..core.images import atomic_path, write_failure  # local: images pulls in Pillow, not needed to run a network

    module = getattr(network, "module", network)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    settings = {**dict(settings or {}), "arch": getattr(module, "ARCH", "standard")}
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": MODEL_FORMAT, "state_dict": state, "settings": settings}, tmp)
    except (OSError, RuntimeError) as exc:  # a full disk surfaces from torch.save as RuntimeError
        raise OutputError(f"cannot write model {path}: {write_failure(Path(path), exc)}") from None
