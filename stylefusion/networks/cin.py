"""Several styles in one transformer network: conditional instance normalisation (Dumoulin et al. 2017).

Every affine InstanceNorm2d of a network is swapped for a `ConditionalInstanceNorm2d` holding one (scale, shift)
per style (`gamma`, `beta`: (styles, channels)); the convolutions are shared. `weight` and `bias` read the
selected style's parameters, or a blend of them, so code that applies a norm's affine itself (run/tiling.py,
inference.InstanceNormAsGroupNorm) sees the chosen style. The swap is generic over a network's InstanceNorm2d
children, whatever the architecture names them.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, ModelError
from ..core.losses import normalised_weights


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with one learned (scale, shift) per style; `mix` picks one (an index) or blends (weights)."""

    def __init__(self, num_features: int, styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.styles, self.eps, self.affine = num_features, styles, eps, True
        self.gamma = nn.Parameter(torch.ones(styles, num_features))
        self.beta = nn.Parameter(torch.zeros(styles, num_features))
        self.mix: int | tuple[float, ...] = 0  # not saved: chosen per run

    def _mixed(self, table: torch.Tensor) -> torch.Tensor:
        if isinstance(self.mix, int):
            return table[self.mix]
        # The paper's convex combination of the styles' parameters; zero weights are skipped, so weights that
        # are one-hot give that style's parameters bit for bit.
        terms = [table[i] * w for i, w in enumerate(self.mix) if w != 0.0]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    @property
    def weight(self) -> torch.Tensor:
        """The scale of the selected style (or the blend): what an InstanceNorm2d's weight is."""
        return self._mixed(self.gamma)

    @property
    def bias(self) -> torch.Tensor:
        """The shift of the selected style (or the blend)."""
        return self._mixed(self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, styles={self.styles}, eps={self.eps}"


def make_conditional(network: nn.Module, styles: int) -> nn.Module:
    """Swap every affine InstanceNorm2d child of the network (in place) for a conditional one with `styles`
    styles, each starting from the norm's current scale and shift; returns the network."""
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and child.affine:
                cin = ConditionalInstanceNorm2d(child.num_features, styles, child.eps)
                with torch.no_grad():
                    cin.gamma.copy_(child.weight.detach().expand(styles, -1))
                    cin.beta.copy_(child.bias.detach().expand(styles, -1))
                setattr(module, name, cin.to(child.weight.device))
    return network


def conditional_norms(network: nn.Module) -> list[ConditionalInstanceNorm2d]:
    """The network's conditional norms (none in a single-style network)."""
    return [m for m in getattr(network, "module", network).modules() if isinstance(m, ConditionalInstanceNorm2d)]


def style_count(network: nn.Module) -> int:
    """How many styles the network holds (1 for an ordinary network)."""
    norms = conditional_norms(network)
    return norms[0].styles if norms else 1


def state_style_count(state: Mapping[str, torch.Tensor]) -> int:
    """How many styles a state dict holds: the rows of its `gamma` tables (1 when it has none)."""
    counts = {v.shape[0] for k, v in state.items() if k.endswith(".gamma") and v.dim() == 2}
    if len(counts) > 1:
        raise ModelError(f"the model's norm layers disagree on the number of styles ({sorted(counts)})")
    return counts.pop() if counts else 1


def select_style(network: nn.Module, mix: int | Sequence[float]) -> None:
    """Make every conditional norm use style `mix` (an index) or the blend of styles with these weights."""
    value = mix if isinstance(mix, int) else tuple(float(w) for w in mix)
    for norm in conditional_norms(network):
        norm.mix = value


def choose_style(network: nn.Module, style: int | None, weights: Sequence[float] | None,
                 names: Sequence[str] | None = None, model: str = "the model") -> None:
    """Apply --style / --style_weights to a loaded network, with a one-line ConfigError for a bad choice.

    Weights are normalised to sum to 1 (a convex combination, as Dumoulin et al. interpolate).
    """
    if style is None and weights is None:
        return
    if style is not None and weights is not None:
        raise ConfigError("give --style or --style_weights, not both")
    count = style_count(network)
    option = "--style" if style is not None else "--style_weights"
    if count == 1:
        raise ConfigError(f"{option} needs a multi-style model, and {model} holds one style")
    listed = f" ({', '.join(f'{i}: {n}' for i, n in enumerate(names))})" if names else ""
    if style is not None:
        if not 0 <= style < count:
            raise ConfigError(f"--style {style} is out of range: {model} holds styles 0..{count - 1}{listed}")
        select_style(network, style)
        return
    weights = tuple(weights or ())
    if len(weights) != count:
        raise ConfigError(f"--style_weights has {len(weights)} value(s), but {model} holds {count} styles{listed}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or max(weights) <= 0:
        raise ConfigError(f"--style_weights must be >= 0 with a positive sum, got {','.join(map(str, weights))}")
    select_style(network, tuple(normalised_weights(weights, "--style_weights value")))


def active_style(network: nn.Module, names: Sequence[str] | None = None) -> str:
    """Which style a multi-style network runs now, in words ("" for a single-style network)."""
    norms = conditional_norms(network)
    if not norms:
        return ""
    mix, count = norms[0].mix, norms[0].styles

    def label(i: int) -> str:
        return f"{i} ({names[i]})" if names and i < len(names) else str(i)

    if isinstance(mix, int):
        return f"style {label(mix)} of {count}"
    return "the blend " + " + ".join(f"{w:.3g} x style {label(i)}" for i, w in enumerate(mix) if w)
