"""Losses of Gatys et al.: content (feature MSE), style (Gram MSE), total variation; blended style targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError, check_non_negative, shown
from .vgg import VGG19Features, check_layers

_EPS = 1e-8


def check_weight(name: str, value: float) -> float:
    """A loss or blend weight must be a finite number >= 0."""
    return check_non_negative(name, value)


def normalised_weights(weights: Sequence[float], what: str) -> list[float]:
    """Finite weights >= 0, not all zero, scaled to sum to 1 (ConfigError otherwise).

    Divided by the largest first, so weights near the float limit (1e308, 1e308) do not overflow the sum.
    """
    checked = [check_weight(what, w) for w in weights]
    largest = max(checked, default=0.0)
    if largest <= 0:
        raise ConfigError(f"{what}s must not all be zero")
    scaled = [w / largest for w in checked]
    total = sum(scaled)
    return [w / total for w in scaled]


def check_blend_weights(blend_weights: Sequence[float] | None, count: int) -> list[float]:
    """One finite weight >= 0 per style image, not all zero, normalised to sum to 1 (None: equal weights)."""
    if blend_weights is None:
        return [1.0 / count] * count
    if isinstance(blend_weights, (str, bytes)):  # its characters would be counted as weights
        raise ConfigError(f"blend weights must be a list of numbers, got the text {blend_weights!r}")
    if not isinstance(blend_weights, Iterable):  # one weight given bare: list() would raise a bare TypeError
        raise ConfigError(f"blend weights must be a list of numbers, one per style image, got {shown(blend_weights)}")
    blend_weights = list(blend_weights)
    if len(blend_weights) != count:
        raise ConfigError(f"{count} style images but {len(blend_weights)} blend weights")
    return normalised_weights(blend_weights, "style blend weight")


def parse_layer_weights(spec: str | Iterable[str] | Mapping[str, float], what: str) -> dict[str, float]:
    """Parse 'relu1_1,relu2_1:0.5' (or a list of such items, or a dict) into {layer: weight}; weight 1 by default."""
    if isinstance(spec, Mapping):
        items = [(k, v) for k, v in spec.items()]
    else:
        parts = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
        items = []
        for part in (p.strip() for p in parts):
            if not part:
                continue
            name, _, weight = part.partition(":")
            try:
                items.append((name.strip(), float(weight) if weight else 1.0))
            except ValueError:
                raise ConfigError(f"bad weight in {what} item '{part}' (expected layer or layer:weight)") from None
    if not items:
        raise ConfigError(f"{what} is empty")
    check_layers(name for name, _ in items)
    result = {}
    for name, weight in items:
        result[name] = check_weight(f"{what} weight for {name}", weight)
    return result


class _Gram(torch.autograd.Function):
    """F F^T / n whose backward is one product, (G' + G'^T) F / n, where autograd's would be two plus a
    feature-map-sized sum (about 4 % of an optimisation step at 384 px on a 2-core CPU)."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor, n: int) -> torch.Tensor:
        ctx.save_for_backward(f)
        ctx.n = n
        return torch.bmm(f, f.transpose(1, 2)).div_(n)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (f,) = ctx.saved_tensors
        symmetric = grad + grad.transpose(1, 2)
        if f.stride(1) == 1:  # channels_last features: the gradient in their layout, as (F^T G')^T
            # An NCHW gradient made every sum with the conv's channels_last one a strided copy (bench/RESULTS.md).
            return torch.bmm(f.transpose(1, 2), symmetric).transpose(1, 2).div_(ctx.n), None
        return torch.bmm(symmetric, f).div_(ctx.n), None


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) of (B, C, H, W) features, divided by C*H*W, computed in fp32.

    The C*H*W normalisation differs from Gatys et al. (1/(4 N^2 M^2) in the loss), as in Johnson et al.
    """
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)  # a view for NCHW and channels_last features alike
    with torch.autocast(device_type=f.device.type, enabled=False):
        return _Gram.apply(f, c * h * w)


def _relative_mse(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Dividing by the target's mean square differs from Gatys et al.: it makes one set of weights work
    # across layers, image sizes and weight sources (Caffe features are ~100x larger than torchvision's).
    value, target = value.float(), target.float()
    return F.mse_loss(value, target.expand_as(value)) / (target.pow(2).mean() + _EPS)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature-map MSE between the image's and the content image's activations (relative, see above)."""
    return _relative_mse(features, target)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """MSE between the image's Gram matrix and the (blended) style Gram matrix (relative, see above)."""
    return gram_loss(gram_matrix(features), target_gram)


def gram_loss(gram: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Style loss from an already computed Gram matrix (the tiled path assembles it over tiles)."""
    return _relative_mse(gram, target_gram)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: mean squared difference of neighbouring pixels (smoothness prior)."""
    image = image.float()
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


@torch.no_grad()
def style_grams(vgg: VGG19Features, style_images: Sequence[torch.Tensor], blend_weights: Sequence[float] | None,
                layers: Iterable[str],
                grams_of: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None
                ) -> dict[str, torch.Tensor]:
    """Gram targets (1, C, C) per layer: a weighted average over several (1, 3, H, W) style images.

    `grams_of(image)` gives one image's Gram matrices per layer (default: one VGG pass; tiled_features.py passes
    its tiled statistics for images too large for one)."""
    layers = list(layers)
    weights = check_blend_weights(blend_weights, len(style_images))
    if grams_of is None:
        def grams_of(image: torch.Tensor) -> dict[str, torch.Tensor]:
            feats = vgg(image, layers)
            return {name: gram_matrix(feats[name]) for name in layers}
    grams: dict[str, torch.Tensor] = {}
    for image, weight in zip(style_images, weights):
        if weight == 0:
            continue
        for name, g in grams_of(image).items():
            g = g.mean(0, keepdim=True) * weight
            grams[name] = grams[name] + g if name in grams else g
    return grams


class LossTerms(NamedTuple):
    """Weighted loss terms of one evaluation (each a scalar tensor)."""
    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    total: torch.Tensor


@dataclass
class PerceptualLoss:
    """Content + style + TV loss on one VGG pass; used by the iterative optimiser and by training."""
    vgg: VGG19Features
    content_layers: dict[str, float]
    style_layers: dict[str, float]
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("content_weight", "style_weight", "tv_weight"):
            check_weight(name, getattr(self, name))
        check_layers(self.content_layers)
        check_layers(self.style_layers)

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Content activations, computed once without gradients and only as deep as the content layers."""
        if not self.content_layers or self.content_weight == 0:
            return {}
        return {k: v.detach() for k, v in self.vgg(content, self.content_layers).items()}

    def __call__(self, image: torch.Tensor, content_targets: Mapping[str, torch.Tensor],
                 grams: Mapping[str, torch.Tensor]) -> LossTerms:
        """Loss of `image` (B, 3, H, W, RGB [0,1]) against content activations and style Gram targets."""
        wanted = [n for n in self.style_layers if self.style_weight > 0]
        wanted += [n for n in self.content_layers if n in content_targets]
        feats = self.vgg(image, dict.fromkeys(wanted)) if wanted else {}
        image_grams = self.image_grams(feats)
        return self.combine(image, feats, image_grams, content_targets, grams)

    def image_grams(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The image's Gram matrix at each style layer (subclasses may guide them by region)."""
        return {n: gram_matrix(features[n]) for n in self.style_layers if self.style_weight > 0}

    def style_term(self, image_grams: Mapping[str, torch.Tensor], grams: Mapping[str, torch.Tensor],
                   zero: torch.Tensor) -> torch.Tensor:
        """Unweighted style loss: the layer-weighted Gram losses (subclasses may sum them over regions)."""
        return sum((w * gram_loss(image_grams[n], grams[n])
                    for n, w in self.style_layers.items() if self.style_weight > 0), zero)

    def combine(self, image: torch.Tensor, features: Mapping[str, torch.Tensor],
                image_grams: Mapping[str, torch.Tensor], content_targets: Mapping[str, torch.Tensor],
                grams: Mapping[str, torch.Tensor]) -> LossTerms:
        """The weighted terms from the image's content features and Gram matrices (however they were computed)."""
        zero = image.new_zeros((), dtype=torch.float32)
        content = sum((w * content_loss(features[n], content_targets[n])
                       for n, w in self.content_layers.items() if n in content_targets), zero)
        style = self.style_term(image_grams, grams, zero)
        tv = tv_loss(image) if self.tv_weight > 0 else zero
        content, style, tv = content * self.content_weight, style * self.style_weight, tv * self.tv_weight
        return LossTerms(content, style, tv, content + style + tv)


# ------------------------------------------------------------------ neural-style-pt's balance
# Gatys et al. (and neural-style-pt: content 5 x MSE, style 100 x MSE of the Gram / (C H W), Caffe VGG features of
# a 0-255 input) add raw, unnormalised losses: each layer then counts by the size of its own Gram values, which
# differs from our relative losses by a per-layer, per-pair factor. Style weight 3 (our default) stands for its
# 100 against a content weight of 6, not 5: measured against neural-style-pt's own 500-step result, its balance
# leaves the content behind when relu3_1 and relu5_1 count more (iterative.RAW_STYLE_LAYERS, bench/RESULTS.md).
RAW_STYLE_PER_CONTENT = 100 / 6 / 3


@torch.no_grad()
def raw_layer_weights(style_layers: Mapping[str, float], content_targets: Mapping[str, torch.Tensor],
                      grams: Mapping[str, torch.Tensor], feature_scale: float = 1.0,
                      regions: Sequence[tuple[int, float]] | None = None) -> dict[str, float]:
    """Style layer weights that give the relative Gram losses neural-style-pt's raw balance for this image pair.

    Raw loss = relative loss x the target's mean square, so each layer's weight is scaled by its Gram target's
    mean square over the content target's; `feature_scale` converts the features' squared units to Caffe's.
    With region targets (R, C, C), `regions` lists (region, weight x area) to average them by. With no content
    target (content weight 0) or no region in play there is nothing to balance and the weights are kept.
    """
    if not content_targets or regions == []:
        return dict(style_layers)
    content_ms = sum(float(t.float().pow(2).mean()) for t in content_targets.values()) / len(content_targets)
    return {n: w * RAW_STYLE_PER_CONTENT * _gram_mean_square(grams[n], regions) / (content_ms + _EPS) * feature_scale
            for n, w in style_layers.items()}


def _gram_mean_square(gram: torch.Tensor, regions: Sequence[tuple[int, float]] | None) -> float:
    """Mean square of a (1, C, C) Gram target, or of (R, C, C) region targets averaged by (region, weight)."""
    # One target at a time, each (1, C, C) in fp64: the same sum in the same order whether a region's target
    # sits alone or beside others, so a style with weight 0 changes nothing, not even in the last bit.
    def mean_square(i: int) -> float:
        return float(gram[i:i + 1].double().pow(2).mean())
    if regions is None:
        return sum(mean_square(i) for i in range(len(gram))) / len(gram)
    return sum(mean_square(r) * w for r, w in regions) / sum(w for _, w in regions)


# ------------------------------------------------------------------ spatial control (Gatys et al. 2017)
def layer_guides(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Region masks (R, 1, H, W) in [0, 1] at one layer's feature size, by area averaging.

    Gatys et al. 2017 propagate the guides through the network's receptive fields (or erode them); we
    simply area-downsample, which softens a hard edge by about one feature-map pixel.
    """
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks.float(), size=tuple(size), mode="area")


def guide_area(guides: torch.Tensor) -> torch.Tensor:
    """sum(guide^2) of each (R, 1, H, W) guide, at least eps: a hard mask's area in feature-map pixels."""
    return guides.float().pow(2).sum(dim=(1, 2, 3)).clamp_min(_EPS)


def guided_gram_matrix(features: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) of (B, C, H, W) features weighted by a (1, 1, H, W) guide, in fp32."""
    b, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        guide = guide.float()
        f = (features.float() * guide).reshape(b, c, h * w)
        # Divided by C * sum(guide^2) (the region's area for a hard mask) where Gatys et al. 2017 leave the
        # guided Gram unnormalised: a region's Gram is then on the scale of a whole style image's Gram.
        return torch.bmm(f, f.transpose(1, 2)) / (c * guide_area(guide))


@torch.no_grad()
def region_style_grams(vgg: VGG19Features, style_images: Sequence[torch.Tensor],
                       layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """Each style image's own whole-image Gram, unblended: targets (R, C, C) per layer, one per region."""
    layers = list(layers)
    per_style = [style_grams(vgg, [image], None, layers) for image in style_images]
    return {n: torch.cat([grams[n] for grams in per_style]) for n in layers}


@dataclass
class GuidedPerceptualLoss(PerceptualLoss):
    """PerceptualLoss with one style per region (Gatys et al. 2017): region r's guided Gram matches style r.

    The style targets are region_style_grams (R, C, C). Region r's loss is scaled by its blend weight and
    by its area fraction mean(mask^2) (our addition, not in the paper), so a full white mask gives exactly the
    unguided loss, a black one none, and a pixel's balance of style and content does not depend on its
    region's size.
    """
    masks: torch.Tensor | None = None     # (R, 1, H, W) in [0, 1] at the working size; resized to each layer
    region_weights: Sequence[float] = ()  # one per region: multiplies that region's style loss
    regions: list[tuple[int, float]] = field(init=False, default_factory=list)  # (region, weight x area) used

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.masks is None or self.masks.dim() != 4 or self.masks.shape[1] != 1:
            raise ConfigError("guided style loss needs masks of shape (regions, 1, height, width)")
        if len(self.region_weights) != len(self.masks):
            raise ConfigError(f"{len(self.masks)} masks but {len(self.region_weights)} region weights")
        weights = [check_weight("style blend weight", w) for w in self.region_weights]
        areas = self.masks.float().pow(2).mean(dim=(1, 2, 3)).tolist()
        # Regions that cannot contribute (black mask or zero weight) are skipped: the content stays there.
        self.regions = [(r, weights[r] * areas[r]) for r in range(len(weights)) if weights[r] * areas[r] > 0]

    def image_grams(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Guided Grams (B, active regions, C, C) at each style layer."""
        grams = {}
        for n in (self.style_layers if self.style_weight > 0 and self.regions else ()):
            f = features[n]
            guides = layer_guides(self.masks.to(f.device), f.shape[-2:])
            grams[n] = torch.stack([guided_gram_matrix(f, guides[r:r + 1]) for r, _ in self.regions], 1)
        return grams

    def style_term(self, image_grams: Mapping[str, torch.Tensor], grams: Mapping[str, torch.Tensor],
                   zero: torch.Tensor) -> torch.Tensor:
        """Sum over layers and active regions of weight x area x the region's Gram loss against its style."""
        total = zero
        for n, w in self.style_layers.items():
            for i, (r, scale) in enumerate(self.regions if n in image_grams else ()):
                total = total + w * scale * gram_loss(image_grams[n][:, i], grams[n][r:r + 1])
        return total
