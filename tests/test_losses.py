"""Gram matrix, content/style/TV losses, layer-weight parsing and blended style targets."""

import math

import pytest
import torch

from stylefusion.core.errors import ConfigError
from stylefusion.core.losses import (PerceptualLoss, content_loss, gram_matrix, parse_layer_weights, style_grams,
                                     style_loss, tv_loss)
from stylefusion.core.vgg import load_vgg19


def test_gram_matrix_values():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2, H=1, W=2
    g = gram_matrix(f)
    assert torch.allclose(g[0], torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4)
    assert gram_matrix(f.to(torch.bfloat16)).dtype == torch.float32


def test_losses_zero_at_target_and_positive_elsewhere():
    x = torch.rand(1, 8, 5, 5)
    assert content_loss(x, x) == 0
    assert style_loss(x, gram_matrix(x)) == 0
    assert content_loss(x + 0.1, x) > 0
    assert style_loss(x * 2, gram_matrix(x)) > 0


def test_losses_are_relative_to_target_scale():
    x, t = torch.rand(1, 8, 5, 5), torch.rand(1, 8, 5, 5)
    assert math.isclose(content_loss(x * 100, t * 100).item(), content_loss(x, t).item(), rel_tol=1e-4)


def test_tv_loss():
    flat = torch.ones(1, 3, 8, 8)
    assert tv_loss(flat) == 0
    checker = torch.zeros(1, 3, 8, 8)
    checker[..., ::2, ::2] = 1
    assert tv_loss(checker) > tv_loss(torch.rand(1, 3, 8, 8) * 0.1)


def test_parse_layer_weights():
    assert parse_layer_weights("relu1_1,relu2_1:0.5", "style_layers") == {"relu1_1": 1.0, "relu2_1": 0.5}
    assert parse_layer_weights(["relu1_1", "relu3_1:2"], "x") == {"relu1_1": 1.0, "relu3_1": 2.0}
    for bad in ("relu9_1", "relu1_1:-1", "relu1_1:nan", "relu1_1:abc", ""):
        with pytest.raises(ConfigError):
            parse_layer_weights(bad, "style_layers")


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19(["relu1_1", "relu2_1", "relu3_1"])


def test_blend_weights_one_zero_equal_single_style(vgg):
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 24)
    layers = ["relu1_1", "relu2_1"]
    single = style_grams(vgg, [a], None, layers)
    blended = style_grams(vgg, [a, b], [1.0, 0.0], layers)
    for name in layers:
        assert torch.equal(single[name], blended[name])
    half = style_grams(vgg, [a, b], [1.0, 1.0], layers)
    other = style_grams(vgg, [b], None, layers)
    assert torch.allclose(half["relu1_1"], (single["relu1_1"] + other["relu1_1"]) / 2, rtol=1e-5)


def test_blend_weight_errors(vgg):
    a = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError):
        style_grams(vgg, [a, a], [1.0], ["relu1_1"])
    with pytest.raises(ConfigError):
        style_grams(vgg, [a, a], [0.0, 0.0], ["relu1_1"])
    with pytest.raises(ConfigError):
        style_grams(vgg, [a], [float("nan")], ["relu1_1"])


def test_perceptual_loss_terms_and_gradient(vgg):
    loss = PerceptualLoss(vgg, {"relu2_1": 1.0}, {"relu1_1": 1.0, "relu3_1": 1.0}, 1.0, 10.0, 0.5)
    content, style = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    targets = loss.content_targets(content)
    grams = style_grams(vgg, [style], None, ["relu1_1", "relu3_1"])
    image = content.clone().requires_grad_(True)
    terms = loss(image, targets, grams)
    assert terms.content.item() == pytest.approx(0.0, abs=1e-6)
    assert terms.style > 0 and terms.tv > 0
    assert terms.total.item() == pytest.approx((terms.content + terms.style + terms.tv).item())
    terms.total.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        PerceptualLoss(vgg, {"relu2_1": 1.0}, {"relu1_1": 1.0}, -1.0, 1.0, 0.0)


def test_blend_weights_are_checked_in_one_place():
    from stylefusion.core.errors import ConfigError
    from stylefusion.core.losses import check_blend_weights

    assert check_blend_weights(None, 4) == [0.25] * 4
    assert check_blend_weights([1, 0.5], 2) == pytest.approx([2 / 3, 1 / 3])
    # Normalised without overflowing: the sum of these is inf, which made every weight 0.
    assert check_blend_weights([1e308, 1e308], 2) == [0.5, 0.5]
    for weights, needle in [([1.0], "2 style images but 1"), ([0, 0], "not all be zero"),
                            ([1, float("nan")], "finite number")]:
        with pytest.raises(ConfigError, match=needle):
            check_blend_weights(weights, 2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_gradient_equals_autograds_own(channels_last):
    # gram_matrix's one-product backward must give what autograd derives from F F^T / n itself.
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randn(2, 5, 5)
    ours = x.clone().requires_grad_(True)
    ((gram_matrix(ours) - target) ** 2).sum().backward()
    plain = x.reshape(2, 5, 42).clone().requires_grad_(True)
    ((torch.bmm(plain, plain.transpose(1, 2)) / (5 * 42) - target) ** 2).sum().backward()
    assert torch.allclose(gram_matrix(x), torch.bmm(plain, plain.transpose(1, 2)) / (5 * 42), atol=1e-6)
    assert torch.allclose(ours.grad.reshape(2, 5, 42), plain.grad, atol=1e-6)
    assert plain.grad.abs().max() > 1e-3  # a gradient that is there to compare
    # In the features' own layout: a channels_last gradient summed with an NCHW one is a strided copy.
    assert ours.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
