"""Transformer network and model files: pytorch/examples' released-model layout, our format, bad files."""

from __future__ import annotations

import collections
import os

import pytest
import torch

from stylefusion.core.errors import ModelError
from stylefusion.networks.transformer import MIN_INPUT_SIDE, TransformerNet, clean_state_dict
from stylefusion.networks.model_files import load_model, save_model

# Every InstanceNorm2d of the network: old torch saved running_mean/running_var for each of them.
NORMS = ["in1", "in2", "in3", "in4", "in5"] + [f"res{i}.in{j}" for i in range(1, 6) for j in (1, 2)]


def trained_like_network(seed: int = 0) -> TransformerNet:
    """A network whose instance-norm affine parameters are not the defaults, like a trained one."""
    torch.manual_seed(seed)
    net = TransformerNet().eval()
    with torch.no_grad():
        for name in NORMS:
            norm = net.get_submodule(name)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return net


def released_layout(net: TransformerNet) -> collections.OrderedDict:
    """The state dict exactly as pytorch/examples' candy/mosaic/rain_princess/udnie .pth files hold it."""
    original = net.state_dict()
    state = collections.OrderedDict()
    state._metadata = original._metadata  # type: ignore[attr-defined]  # as every torch state_dict() carries
    for key, value in original.items():
        state[key] = value.clone()
        norm = key.rsplit(".", 1)[0]
        if key.endswith(".bias") and norm in NORMS:  # stale stats stored right after each norm's bias
            channels = value.numel()
            state[f"{norm}.running_mean"] = torch.randn(channels)  # garbage: must be ignored, not used
            state[f"{norm}.running_var"] = torch.rand(channels) + 0.5
    return state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pickle"])
def test_released_model_layout_loads_and_matches_original(tmp_path, zip_format):
    net = trained_like_network()
    state = released_layout(net)
    assert "in1.running_mean" in state and "res1.in1.running_var" in state and "res5.in2.running_mean" in state
    path = tmp_path / "udnie.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)  # a plain (Ordered)dict of tensors

    loaded, settings = load_model(path)
    assert settings == {}
    assert not loaded.training
    x = torch.rand(2, 3, 24, 32) * 255
    with torch.no_grad():
        expected, got = net(x), loaded(x)
    assert got.shape == (2, 3, 24, 32)
    assert torch.equal(got, expected)


def test_clean_state_dict_drops_only_stale_stats():
    state = released_layout(trained_like_network())
    state["in1.num_batches_tracked"] = torch.tensor(3)
    cleaned = clean_state_dict(state)
    assert set(cleaned) == set(TransformerNet().state_dict())


def test_save_load_roundtrip_keeps_settings(tmp_path):
    net = trained_like_network(1)
    settings = {"style_image": "udnie.jpg", "style_weight": 1e10, "image_size": 256}
    save_model(net, tmp_path / "m.pth", settings)
    loaded, got = load_model(tmp_path / "m.pth")
    assert got == {**settings, "arch": "standard"}  # save_model records the architecture
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # no temporary file left


def test_min_input_side_is_the_smallest_that_runs():
    net = TransformerNet().eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, MIN_INPUT_SIDE, MIN_INPUT_SIDE)).shape[-1] == 8
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, MIN_INPUT_SIDE - 1, MIN_INPUT_SIDE - 1))


class NotWeights:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("kind, needle", [
    ("vgg", "another architecture"),
    ("truncated", "corrupt or truncated"),
    ("garbage", "corrupt or truncated"),
    ("object", "not a plain weights file"),
    ("function", "not a plain weights file"),
    ("tensor", "does not hold"),
    ("empty", "empty"),
    ("missing", "not found"),
])
def test_bad_model_files_raise_model_error(tmp_path, kind, needle):
    path = tmp_path / "bad.pth"
    if kind == "vgg":
        torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, path)
    elif kind == "truncated":
        torch.save(TransformerNet().state_dict(), path)
        path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not a model" * 10)
    elif kind == "object":
        torch.save(NotWeights(), path)
    elif kind == "function":
        torch.save(os.getcwd, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(ModelError, match=needle) as info:
        load_model(path)
    assert "\n" not in str(info.value)
