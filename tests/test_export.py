"""Export to ONNX and TorchScript: same output as the PyTorch network, any batch and size; clean failures."""

from __future__ import annotations

import pytest
import torch

from stylefusion.core.errors import ConfigError, OutputError
from stylefusion.networks.export import export_format, export_model
from tests.test_transformer import trained_like_network

# Different batch sizes and sides (also not multiples of 4) than the 64x64 tracing example.
SHAPES = [(2, 3, 20, 36), (1, 3, 30, 17)]


@pytest.fixture(scope="module")
def net():
    return trained_like_network(5)


def expected(net, x):
    """The network's output cropped to the input's size (the bare network rounds sides up to a multiple of 4)."""
    with torch.no_grad():
        return net(x)[:, :, :x.shape[2], :x.shape[3]]


def test_onnx_matches_pytorch_with_dynamic_batch_and_size(tmp_path, net):
    ort = pytest.importorskip("onnxruntime")
    path = export_model(net, tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # written atomically, no leftovers
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    for shape in SHAPES:
        x = torch.rand(shape) * 255
        (got,) = session.run(None, {"input": x.numpy()})
        want = expected(net, x)
        assert got.shape == tuple(x.shape)  # the exported graph crops to the input's size
        torch.testing.assert_close(torch.from_numpy(got), want, atol=2e-3, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated")
def test_torchscript_matches_pytorch(tmp_path, net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    path = export_model(net, tmp_path / "model.pt")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # exporting changes nothing
    loaded = torch.jit.load(str(path))
    for shape in SHAPES:
        x = torch.rand(shape) * 255
        with torch.no_grad(), torch.jit.optimized_execution(False):  # skip the profiling runs: faster here
            torch.testing.assert_close(loaded(x), expected(net, x), atol=1e-3, rtol=1e-5)


def test_unknown_extension_and_bad_folder(tmp_path, net):
    assert export_format("a/b.ONNX") == "ONNX" and export_format("m.pt") == "TorchScript"
    for name in ("model.h5", "model"):
        with pytest.raises(ConfigError, match=r"\.onnx.*\.pt"):
            export_model(net, tmp_path / name)
    with pytest.raises(OutputError, match="does not exist"):
        export_model(net, tmp_path / "missing" / "model.onnx")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "folder").mkdir()  # a folder as the path: named as one, not as an unknown extension 'folder'
    with pytest.raises(OutputError, match=r"folder is a folder: give a file name ending in \.onnx"):
        export_model(net, tmp_path / "folder")
