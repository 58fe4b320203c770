"""networks/model_files.py: files a user hands over as a model get one line saying what they are, and a network
saved under DistributedDataParallel loads as the network it is."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from stylefusion.core.errors import ModelError, OutputError
from stylefusion.networks.model_files import load_model, save_model
from stylefusion.networks.transformer import TransformerNet
from tests.helpers import REPO


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved standard network and its file's contents."""
    path = tmp_path_factory.mktemp("model") / "m.pth"
    torch.manual_seed(0)
    save_model(TransformerNet(), path, {"style_image": "s.jpg"})
    return path, torch.load(path, weights_only=True)


def _file(tmp_path, make):
    path = tmp_path / "other.pth"
    make(path)
    return path


CASES = {
    "settings as text": (lambda p, d: torch.save({**d, "settings": "notadict"}, p), "settings entry is not a table"),
    "settings as a number": (lambda p, d: torch.save({**d, "settings": 5}, p), "settings entry is not a table"),
    "integer keys": (lambda p, d: torch.save({1: torch.zeros(3)}, p), "does not hold a transformer-network"),
    "training checkpoint": (lambda p, d: torch.save({"model": d["state_dict"], "optimizer": {}, "step": 4}, p),
                            "is a training checkpoint, not a model: resume its run"),
    "a JPEG": (lambda p, d: shutil.copy(REPO / "data" / "udnie.jpg", p), "is an image, not a model file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_files_that_are_not_models_are_named_in_one_line(saved, tmp_path, case):
    make, needle = CASES[case]
    path = _file(tmp_path, lambda p: make(p, saved[1]))
    with pytest.raises(ModelError) as raised:
        load_model(path)
    message = str(raised.value)
    assert needle in message and "\n" not in message and str(path) in message


def test_a_torchscript_export_is_named_as_one(saved, tmp_path):
    network, _ = load_model(saved[0])
    path = tmp_path / "exported.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in newer torch, still what --mode export writes
        torch.jit.save(torch.jit.trace(network, torch.rand(1, 3, 32, 32) * 255), path)
    with pytest.raises(ModelError, match="is a TorchScript export"):
        load_model(path)


def test_a_network_saved_inside_distributed_data_parallel_loads(saved, tmp_path):
    state = saved[1]["state_dict"]
    path = _file(tmp_path, lambda p: torch.save({f"module.{k}": v for k, v in state.items()}, p))
    network, _ = load_model(path)
    loaded = network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    probe = torch.rand(1, 3, 32, 32) * 255
    with torch.inference_mode():
        assert torch.equal(network(probe), load_model(saved[0])[0](probe))


def test_saving_into_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write model .*x\.pth: No such file or directory"):
        save_model(TransformerNet(), tmp_path / "missing" / "x.pth")
    assert not (tmp_path / "missing").exists()


def test_an_any_painting_network_as_a_pretrained_model_says_it_is_not_trained_here(tmp_path):
    from stylefusion.core.errors import ConfigError
    from stylefusion.networks.arbitrary import ArbitraryNet
    from stylefusion.training.loop import _load_pretrained

    path = tmp_path / "painting.pth"
    save_model(ArbitraryNet(), path)
    with pytest.raises(ConfigError, match=r"is an any-painting \(arbitrary\) network, which is not trained here: "
                                          r"give a standard or compact model"):
        _load_pretrained(path, "standard", None)
