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
    # A missing folder is made, as the other modes' outputs' are; one under a file is one error, nothing left.
    assert export_model(net, tmp_path / "new" / "sub" / "model.pt").is_file()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="cannot create output directory .*: Not a directory"):
        export_model(net, tmp_path / "a_file" / "sub" / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "new"]
    (tmp_path / "folder").mkdir()  # a folder as the path: named as one, not as an unknown extension 'folder'
    with pytest.raises(OutputError, match=r"folder is a folder: give a file name ending in \.onnx"):
        export_model(net, tmp_path / "folder")


@pytest.mark.parametrize("name", ["ex4", ".pt", ".onnx", "model."])
def test_a_path_without_extension_is_named_as_such(tmp_path, net, name):
    # ".pt" alone is a hidden file with no extension (pathlib's reading): not "unknown extension '.pt'".
    path = tmp_path / name
    with pytest.raises(ConfigError) as caught:
        export_format(path)
    assert str(caught.value) == f"--export_path {path} has no extension: use .onnx (ONNX) or .pt (TorchScript)"
    with pytest.raises(ConfigError, match="has no extension"):
        export_model(net, path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match=r"^unknown export extension '\.h5': use \.onnx \(ONNX\) or \.pt"):
        export_format(tmp_path / "model.h5")


def test_cli_export_without_extension_is_one_line(tmp_path, capsys):
    from stylefusion_cli import fast
    from stylefusion_cli.common import run_cli
    from tests.helpers import REPO

    path = tmp_path / "ex4"
    argv = ["--mode", "export", "--model_path", str(REPO / "models" / "udnie.pth"), "--export_path", str(path)]
    assert run_cli(fast.main, argv) != 0
    assert capsys.readouterr().err.splitlines() == [
        f"error: --export_path {path} has no extension: use .onnx (ONNX) or .pt (TorchScript)"]
    assert not path.exists()
