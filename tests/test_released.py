"""Released-model download: extract + check from a zip built here, network failures and timeouts (no network)."""

from __future__ import annotations

import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from stylefusion.errors import ModelError
from stylefusion.released import (RELEASED_MODELS, download_released_models, install_from_zip, missing_models,
                                  model_paths)
from stylefusion.transformer import load_model
from tests.test_transformer import released_layout, trained_like_network


def build_archive(path: Path, names=RELEASED_MODELS, corrupt: str | None = None) -> Path:
    """A zip laid out like pytorch/examples' saved_models.zip: saved_models/<name>.pth, old-style state dicts."""
    scratch = path.parent / f".{path.stem}-models"
    scratch.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i, name in enumerate(names):
            model = scratch / f"{name}.pth"
            torch.save(released_layout(trained_like_network(i)), model)
            if name == corrupt:
                model.write_bytes(model.read_bytes()[:1000])
            zf.write(model, f"saved_models/{name}.pth")
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return build_archive(tmp_path_factory.mktemp("zip") / "saved_models.zip")


@pytest.mark.parametrize("how", ["path", "file-url"])
def test_install_from_local_archive(tmp_path, archive, how):
    source = str(archive) if how == "path" else archive.as_uri()
    paths = download_released_models(tmp_path / "models", source)
    assert [p.name for p in paths] == ["candy.pth", "mosaic.pth", "rain_princess.pth", "udnie.pth"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(p.name for p in paths)
    assert missing_models(tmp_path / "models") == []
    net, _ = load_model(paths[3])
    want = trained_like_network(3).state_dict()
    assert all(torch.equal(want[k], v) for k, v in net.state_dict().items())


def test_one_bad_model_installs_none(tmp_path):
    bad = build_archive(tmp_path / "bad.zip", corrupt="mosaic")
    models = tmp_path / "models"
    with pytest.raises(ModelError, match="mosaic.pth .*not a usable model"):
        install_from_zip(bad, models)
    assert list(models.iterdir()) == []  # not even candy, which was fine: all or nothing, no temp files
    assert missing_models(models) == list(RELEASED_MODELS)


def test_archive_problems(tmp_path):
    partial = build_archive(tmp_path / "partial.zip", names=("candy", "udnie"))
    with pytest.raises(ModelError, match="mosaic.pth, rain_princess.pth"):
        install_from_zip(partial, tmp_path / "models")
    page = tmp_path / "page.zip"
    page.write_text("<html>file not found</html>")
    with pytest.raises(ModelError, match="not a zip"):
        install_from_zip(page, tmp_path / "models")
    with pytest.raises(ModelError, match="not found"):
        download_released_models(tmp_path / "models", str(tmp_path / "nope.zip"))


def test_unreachable_server_fails_fast_naming_the_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/saved_models.zip"
    with pytest.raises(ModelError, match=f"cannot download .*{port}/saved_models.zip"):
        download_released_models(tmp_path / "models", url, timeout=5)
    assert not (tmp_path / "models").exists()  # a failed download leaves no empty folder (issue #12)


def test_silent_server_times_out(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/saved_models.zip"
    start = time.monotonic()
    try:
        with pytest.raises(ModelError, match="timed out"):
            download_released_models(tmp_path / "models", url, timeout=0.5)
    finally:
        server.close()
        for conn, _ in accepted:
            conn.close()
    assert time.monotonic() - start < 10
    assert not (tmp_path / "models").exists()  # a failed download leaves no empty folder (issue #12)


def test_model_paths():
    assert model_paths("m")["udnie"] == Path("m/udnie.pth")
