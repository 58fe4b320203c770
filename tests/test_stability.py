"""Compound regularisation (Wang et al., AAAI 2020): F(W(x) + D) should equal W(F(x)) for a random warp W."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stylefusion.core.errors import ConfigError
from stylefusion.training.stability import CompoundRegularization, consistency, perturb, random_warp, stability_loss
from stylefusion.networks.transformer import TransformerNet

NO_NOISE = CompoundRegularization(noise_std=0.0)
STILL = CompoundRegularization(max_shift=0.0, max_rotation_deg=0.0, max_zoom=0.0, motion_std=0.0, noise_std=0.0)


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


class Pointwise(nn.Module):
    """A 1x1 convolution: commutes with any warp, so only the noise can make it inconsistent."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)


class PinnedPattern(nn.Module):
    """Adds a pattern fixed to the frame, not to the content: the flicker the loss must detect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return x + 60.0 * torch.sin(xs * 1.3 + ys * 0.7).to(x)


def test_equivariant_network_has_zero_loss_without_noise() -> None:
    x = images()
    net = Pointwise()
    loss = stability_loss(net, x, net(x), torch.Generator().manual_seed(1), NO_NOISE)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_noise_term_matches_the_noise_level() -> None:
    x = images(n=8)
    config = CompoundRegularization(noise_std=2.0)  # per-image std drawn from [2, 4]: E|N| = 3 * 0.798 levels
    loss = stability_loss(nn.Identity(), x, x, torch.Generator().manual_seed(2), config)
    assert loss.item() * 255 == pytest.approx(3 * 0.798, rel=0.15)


def test_a_pattern_pinned_to_the_frame_is_penalised() -> None:
    x = images()
    generator = torch.Generator().manual_seed(3)
    pinned = stability_loss(PinnedPattern(), x, PinnedPattern()(x), generator, NO_NOISE)
    still = stability_loss(PinnedPattern(), x, PinnedPattern()(x), generator, STILL)
    assert pinned.item() > 0.05 and still.item() == pytest.approx(0.0, abs=1e-6)


def test_same_generator_seed_same_loss_and_gradients_reach_the_network() -> None:
    torch.manual_seed(0)
    net = TransformerNet()
    x = images(n=1, size=32)
    first = stability_loss(net, x, net(x), torch.Generator().manual_seed(4))
    again = stability_loss(net, x, net(x), torch.Generator().manual_seed(4))
    other = stability_loss(net, x, net(x), torch.Generator().manual_seed(5))
    assert first.item() == pytest.approx(again.item(), rel=1e-5) and first.item() != other.item()
    first.backward()
    assert net.conv1.conv2d.weight.grad is not None and net.conv1.conv2d.weight.grad.abs().sum() > 0


def test_zero_warp_is_the_identity() -> None:
    x = images(n=1, size=20)
    warp = random_warp(1, 20, 20, torch.Generator().manual_seed(6), STILL)
    assert torch.equal(warp.apply(x), x) and warp.mask.min().item() == 1.0


def test_shift_moves_content_and_masks_what_comes_from_outside() -> None:
    x = images(n=1, size=24)
    shift_only = CompoundRegularization(max_shift=0.25, max_rotation_deg=0.0, max_zoom=0.0, motion_std=0.0,
                                        noise_std=0.0)
    warp = random_warp(1, 24, 24, torch.Generator().manual_seed(7), shift_only)
    sx = (warp.grid[0, 0, 1, 0] - warp.grid[0, 0, 0, 0]).item() * 12  # one pixel step in grid units is 2/24
    offset_x = round((warp.grid[0, 0, 0, 0].item() + 1) * 12 - 0.5)
    offset_y = round((warp.grid[0, 0, 0, 1].item() + 1) * 12 - 0.5)
    assert sx == pytest.approx(1.0) and (offset_x, offset_y) != (0, 0)
    moved = warp.apply(x)
    ys, xs = slice(max(0, -offset_y), min(24, 24 - offset_y)), slice(max(0, -offset_x), min(24, 24 - offset_x))
    source = x[..., max(0, offset_y):min(24, 24 + offset_y), max(0, offset_x):min(24, 24 + offset_x)]
    assert torch.equal(moved[..., ys, xs], source)
    kept = warp.mask[0, 0]
    assert kept[ys, xs].min().item() == 1.0 and kept.sum().item() == source.shape[-1] * source.shape[-2]


def test_perturb_and_consistency_are_the_split_form() -> None:
    x = images()
    net = Pointwise()
    perturbed, warp = perturb(x, torch.Generator().manual_seed(8))
    assert perturbed.shape == x.shape and not torch.equal(perturbed, x)
    split = consistency(net(x), net(perturbed), warp)
    whole = stability_loss(net, x, net(x), torch.Generator().manual_seed(8))
    assert split.item() == pytest.approx(whole.item(), rel=1e-5)


def test_bad_settings_and_shapes_are_refused() -> None:
    with pytest.raises(ConfigError, match="noise_std"):
        CompoundRegularization(noise_std=-1.0)
    with pytest.raises(ConfigError, match="motion_grid"):
        CompoundRegularization(motion_grid=1)
    x = images()
    with pytest.raises(ConfigError, match="multiples of 4"):
        stability_loss(nn.Identity(), x, x[..., :30, :30])
