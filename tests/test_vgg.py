"""VGG-19 feature extractor: names, truncation, frozen weights, weight sources and their normalisation."""

import pytest
import torch

from stylefusion.core.errors import ConfigError, WeightsError
from stylefusion.core.vgg import LAYER_NAMES, Normalize, load_vgg19, save_vgg19_state


@pytest.fixture(scope="module")
def caffe():
    return load_vgg19(["relu1_1", "relu3_1", "relu4_2"])


def test_layer_names_follow_torchvision_indices():
    assert len(LAYER_NAMES) == 37
    assert LAYER_NAMES[0] == "conv1_1" and LAYER_NAMES[4] == "pool1" and LAYER_NAMES[35] == "relu5_4"
    assert LAYER_NAMES[21] == "conv4_2" and LAYER_NAMES[22] == "relu4_2"


def test_truncated_frozen_and_shapes(caffe):
    assert len(caffe.features) == LAYER_NAMES.index("relu4_2") + 1
    assert all(not p.requires_grad for p in caffe.parameters())
    out = caffe(torch.rand(1, 3, 64, 48))
    assert set(out) == {"relu1_1", "relu3_1", "relu4_2"}
    assert out["relu1_1"].shape == (1, 64, 64, 48)
    assert out["relu4_2"].shape == (1, 512, 8, 6)
    assert (out["relu3_1"] >= 0).all()


def test_caffe_weights_are_the_real_network(caffe):
    # Real VGG-19 conv1_1 filters include colour-opponent and edge detectors: far from random init.
    w = caffe.features[0].weight
    assert w.shape == (64, 3, 3, 3)
    assert 0.05 < w.abs().mean() < 1.0
    # A real network responds much more to a structured image than to a flat grey one.
    grey = torch.full((1, 3, 64, 64), 0.5)
    edges = grey.clone()
    edges[..., ::8, :] = 1.0
    f = lambda x: caffe(x, ["relu3_1"])["relu3_1"].abs().mean()
    assert f(edges) > 2 * f(grey)


def test_forward_layers_argument_stops_early(caffe):
    out = caffe(torch.rand(1, 3, 32, 32), ["relu1_1"])
    assert list(out) == ["relu1_1"]


def test_inplace_relu_keeps_asked_conv_outputs_and_gradients():
    # The ReLU runs in place only over a conv output nobody asked for: an asked conv1_2 keeps its negatives,
    # and the image's gradient is the one of an out-of-place network.
    vgg = load_vgg19(["conv1_2", "relu1_2", "relu2_1"])
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    ours = image.clone().requires_grad_(True)
    out = vgg(ours)
    assert (out["conv1_2"] < 0).any() and torch.equal(out["relu1_2"], out["conv1_2"].clamp(min=0))
    sum(f.square().mean() for f in out.values()).backward()
    plain = image.clone().requires_grad_(True)
    x, feats = vgg.normalize(plain), {}
    for name, module in zip(LAYER_NAMES, vgg.features):
        x = torch.relu(x) if isinstance(module, torch.nn.ReLU) else module(x)
        feats[name] = x
    sum(feats[n].square().mean() for n in out).backward()
    assert torch.allclose(ours.grad, plain.grad, rtol=1e-4, atol=1e-7) and plain.grad.abs().max() > 0


def test_caffe_normalisation_is_bgr_0_255_minus_mean():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0  # pure red in RGB
    y = Normalize("caffe")(x)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-103.939, -116.779, 255 - 123.68]))
    z = Normalize("imagenet")(x)
    assert torch.allclose(z[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_state_dict_file_equals_caffe_source(tmp_path, caffe):
    # A torchvision-layout file holding the same weights gives the same features.
    path = tmp_path / "vgg.pth"
    save_vgg19_state(caffe, path)
    from_file = load_vgg19(["relu1_1", "relu3_1", "relu4_2"], str(path))
    x = torch.rand(1, 3, 40, 40)
    a, b = caffe(x), from_file(x)
    for name in a:
        assert torch.equal(a[name], b[name])


def test_bare_features_layout_with_explicit_normalisation(tmp_path, caffe):
    # neural-style-pt style file: features.N.* keys, no metadata -> Caffe normalisation by default.
    state = {f"features.{k}": v for k, v in caffe.features.state_dict().items()}
    torch.save(state, tmp_path / "vgg19-d01eb7cb.pth")
    m = load_vgg19(["relu4_2"], str(tmp_path / "vgg19-d01eb7cb.pth"))
    assert m.normalize.kind == "caffe"
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(m(x)["relu4_2"], caffe(x)["relu4_2"])
    # bare "N.weight" keys work too; an explicit normalisation overrides the default and changes features
    torch.save(caffe.features.state_dict(), tmp_path / "bare.pth")
    bare = load_vgg19(["relu4_2"], str(tmp_path / "bare.pth"), normalization="imagenet")
    assert bare.normalize.kind == "imagenet"
    assert not torch.allclose(bare(x)["relu4_2"], caffe(x)["relu4_2"])


def test_truncated_file_cannot_serve_deeper_layers(tmp_path):
    shallow = load_vgg19(["relu2_1"])
    save_vgg19_state(shallow, tmp_path / "shallow.pth")
    with pytest.raises(WeightsError, match="conv layers"):
        load_vgg19(["relu4_2"], str(tmp_path / "shallow.pth"))


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_bad_weight_files(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"features.0.weight": torch.zeros(3, 3)}, path)  # wrong shape
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError):
        load_vgg19(["relu1_1"], str(path))


def test_missing_weights_file_and_unknown_layer(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_vgg19(["relu1_1"], str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="relu9_9"):
        load_vgg19(["relu9_9"])


def test_torchvision_source_offline_gives_one_line_error(monkeypatch):
    # No network here: the torchvision source must fail with a clear message naming the URL.
    from torchvision.models import VGG19_Weights

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(VGG19_Weights.IMAGENET1K_V1), "get_state_dict", no_network)
    with pytest.raises(WeightsError, match="download.pytorch.org"):
        load_vgg19(["relu1_1"], "torchvision")


def test_a_weights_file_with_nan_is_refused_at_load(tmp_path, caffe):
    """A damaged --vgg_weights file: named at load, not blamed later on --lr or the precision."""
    save_vgg19_state(caffe, tmp_path / "vgg.pth")
    state = torch.load(tmp_path / "vgg.pth", weights_only=True)
    state["features.2.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"holds NaN or infinite weights \(layer features.2\)"):
        load_vgg19(["relu2_1"], str(tmp_path / "nan.pth"))
