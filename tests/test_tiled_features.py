"""Tiled VGG losses: the gradient from tiles with halos equals the whole-image gradient (fp32, real VGG-19)."""

import pytest
import torch

from stylefusion.core.losses import PerceptualLoss, parse_layer_weights, style_grams
from stylefusion.iterative.tiled_features import alignment, halo_px, plan_tiles, tiled_loss, tiled_statistics
from stylefusion.core.vgg import load_vgg19

STYLE = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"
CONTENT = "relu4_2"


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19(["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"])


def _loss(vgg, content_weight=1.0, style_weight=3.0, tv_weight=0.0):
    return PerceptualLoss(vgg, parse_layer_weights(CONTENT, "c"), parse_layer_weights(STYLE, "s"),
                          content_weight, style_weight, tv_weight)


def _problem(vgg, h=90, w=78, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g)
    content = torch.rand(1, 3, h, w, generator=g)
    style = torch.rand(1, 3, 64, 72, generator=g)
    loss_fn = _loss(vgg)
    targets = loss_fn.content_targets(content)
    grams = style_grams(vgg, [style], None, parse_layer_weights(STYLE, "s"))
    return image, targets, grams


def _whole(loss_fn, image, targets, grams):
    x = image.clone().requires_grad_(True)
    terms = loss_fn(x, targets, grams)
    terms.total.backward()
    return terms, x.grad


def _tiled(loss_fn, image, targets, grams, tile):
    x = image.clone().requires_grad_(True)
    terms = tiled_loss(loss_fn, x, targets, grams, tile)
    return terms, x.grad


def test_halo_covers_the_receptive_field():
    assert alignment(["relu5_1"]) == 16 and halo_px(["relu5_1"]) == 80
    assert halo_px(["relu1_1"]) == 1 and alignment(["relu1_1"]) == 1
    tiles = plan_tiles(90, 78, 16, 80, 16)
    cores = torch.zeros(90, 78, dtype=torch.int64)
    for t in tiles:
        cores[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.y0 % 16 == 0 and t.x0 % 16 == 0 and t.wy0 % 16 == 0 and t.wx0 % 16 == 0
    assert torch.equal(cores, torch.ones_like(cores))  # the cores tile the image exactly once


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (0.0, 3.0, 0.0), (1.0, 3.0, 0.5)],
                         ids=["content", "style", "all_with_tv"])
def test_tiled_gradient_equals_whole_image_gradient(vgg, weights):
    image, targets, grams = _problem(vgg)
    loss_fn = _loss(vgg, *weights)
    whole_terms, whole_grad = _whole(loss_fn, image, targets, grams)
    terms, grad = _tiled(loss_fn, image, targets, grams, 32)  # 3 x 3 cores of 32 px, far smaller than the halo
    for a, b in zip(terms, whole_terms):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (a, b)
    scale = whole_grad.abs().max()
    assert scale > 0
    assert torch.allclose(grad, whole_grad, rtol=1e-4, atol=1e-5 * scale), ((grad - whole_grad).abs().max(), scale)


def test_too_small_halo_would_be_caught(vgg, monkeypatch):
    # The comparison above can fail: with a 16 px halo the tiled gradient is wrong.
    import stylefusion.iterative.tiled_features as tf
    image, targets, grams = _problem(vgg)
    loss_fn = _loss(vgg)
    _, whole_grad = _whole(loss_fn, image, targets, grams)
    monkeypatch.setattr(tf, "halo_px", lambda layers: 16)
    _, grad = _tiled(loss_fn, image, targets, grams, 32)
    assert not torch.allclose(grad, whole_grad, rtol=1e-4, atol=1e-5 * whole_grad.abs().max())


def test_tiled_statistics_match_whole_image(vgg):
    image = torch.rand(1, 3, 70, 100, generator=torch.Generator().manual_seed(3))
    layers = ["relu1_1", "relu3_1", "relu5_1"]
    tiles = plan_tiles(70, 100, 32, halo_px(layers), alignment(layers))
    grams, maps = tiled_statistics(vgg, image, tiles, layers, ["relu4_2"])
    whole = style_grams(vgg, [image], None, layers)
    for n in layers:
        assert torch.allclose(grams[n], whole[n], rtol=1e-4, atol=1e-6 * whole[n].abs().max())
    ref = vgg(image, ["relu4_2"])["relu4_2"]
    assert maps["relu4_2"].shape == ref.shape
    assert torch.allclose(maps["relu4_2"], ref, rtol=1e-4, atol=1e-4 * ref.abs().max())
