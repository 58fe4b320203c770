"""Released-model download: extract + check from a zip built here, network failures and timeouts (no network)."""

from __future__ import annotations

import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from stylefusion.core.errors import ModelError
from stylefusion.networks.released import (RELEASED_MODELS, download_released_models, install_from_zip,
                                           installed_models, is_released_layout, missing_models, model_paths)
from stylefusion.networks.model_files import load_model, save_model
from stylefusion_cli.fast import main as fast_main
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
    with pytest.raises(ModelError, match="mosaic.pth .*not a usable model") as raised:
        install_from_zip(bad, models)
    assert ".tmp" not in str(raised.value)  # the member's name, not the temporary file it was checked as
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


def weights_equal(path: Path, network) -> bool:
    loaded, _ = load_model(path)
    want = network.state_dict()
    return all(torch.equal(want[k], v) for k, v in loaded.state_dict().items())


def test_our_udnie_is_kept_and_the_released_one_saved_beside_it(tmp_path, archive):
    """Issue #15: models/udnie.pth shipped by StyleFusion (our format) is never replaced by the download."""
    models = tmp_path / "models"
    models.mkdir()
    ours = trained_like_network(42)
    save_model(ours, models / "udnie.pth", {"style_image": "data/udnie.jpg"})
    before = (models / "udnie.pth").read_bytes()
    assert not is_released_layout(models / "udnie.pth")
    assert "udnie" in missing_models(models)  # ours does not count as the released udnie
    paths = download_released_models(models, str(archive))
    assert [p.name for p in paths] == ["candy.pth", "mosaic.pth", "rain_princess.pth", "udnie_released.pth"]
    assert (models / "udnie.pth").read_bytes() == before
    assert weights_equal(models / "udnie_released.pth", trained_like_network(3))
    assert missing_models(models) == []
    assert installed_models(models)["udnie"] == models / "udnie_released.pth"
    # a second download replaces nothing either, and still keeps ours
    assert download_released_models(models, str(archive))[3] == models / "udnie_released.pth"
    assert (models / "udnie.pth").read_bytes() == before


def test_a_released_udnie_is_reinstalled_in_place(tmp_path, archive):
    """The same released file already at udnie.pth (an earlier download) keeps its name: no _released twin."""
    models = tmp_path / "models"
    download_released_models(models, str(archive))
    (models / "candy.pth").unlink()
    assert missing_models(models) == ["candy"]
    paths = download_released_models(models, str(archive))
    assert [p.name for p in paths] == ["candy.pth", "mosaic.pth", "rain_princess.pth", "udnie.pth"]
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in paths)


def test_a_users_plain_state_dict_is_not_replaced(tmp_path, archive):
    """A model in the released layout that is not the released file (trained with pytorch/examples) is kept."""
    models = tmp_path / "models"
    models.mkdir()
    torch.save(released_layout(trained_like_network(7)), models / "mosaic.pth")
    before = (models / "mosaic.pth").read_bytes()
    paths = download_released_models(models, str(archive))
    assert paths[1] == models / "mosaic_released.pth"
    assert (models / "mosaic.pth").read_bytes() == before
    assert weights_equal(paths[1], trained_like_network(1))


def test_cli_download_beside_our_udnie_says_so(tmp_path, archive, capsys, monkeypatch):
    """The design's command line, verbatim, in a checkout whose models/udnie.pth is ours: one line says where
    the released udnie went; a second run finds everything installed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    save_model(trained_like_network(42), tmp_path / "models" / "udnie.pth")
    before = (tmp_path / "models" / "udnie.pth").read_bytes()
    assert fast_main(["--mode", "download", "--models_url", str(archive)]) == 0
    lines = capsys.readouterr().err.splitlines()
    kept = [line for line in lines if line.startswith("kept ")]
    assert kept == [f"kept {Path('models/udnie.pth')} (a different model, e.g. StyleFusion's own): the released "
                    f"udnie is saved as {Path('models/udnie_released.pth')}"]
    assert (tmp_path / "models" / "udnie.pth").read_bytes() == before
    assert fast_main(["--mode", "download", "--models_url", str(archive)]) == 0
    err = capsys.readouterr().err
    assert "already in models" in err and "udnie_released.pth" in err


def test_cli_download_beside_a_damaged_leftover_says_it_is_not_a_model(tmp_path, archive, capsys, monkeypatch):
    """A cut-off mosaic.pth (an interrupted manual download) is kept, and the note says it is no model, not that it
    is another model."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    save_model(trained_like_network(1), tmp_path / "whole.pth")
    (tmp_path / "models" / "mosaic.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:50_000])
    assert fast_main(["--mode", "download", "--models_url", str(archive)]) == 0
    kept = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kept ")]
    assert kept == [f"kept {Path('models/mosaic.pth')} (not a readable model: a partial or damaged file? remove it "
                    f"and run again to install the released one there): the released mosaic is saved as "
                    f"{Path('models/mosaic_released.pth')}"]
