"""docs/make_control_pictures.py at toy sizes (--tiny): the four pictures, their sizes, and a clean failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylefusion.networks.model_files import build_network, save_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "make_control_pictures.py"
PANEL = 64  # --tiny's panel width; rows of 4:3 panels
EXPECTED = {"regions.jpg": (3 * PANEL, 48), "strength.jpg": (3 * PANEL, 48), "mask.jpg": (2 * PANEL, 48),
            "multi.jpg": (3 * PANEL, 48)}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "stub.pth"
    save_model(build_network("standard"), path)
    return path


def test_tiny_run_writes_every_picture_at_its_size(tmp_path: Path, stub_model: Path) -> None:
    out = tmp_path / "control"
    result = run("--tiny", "--output_dir", str(out), "--model_path", str(stub_model))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)  # no temporary files left behind
    for name, size in EXPECTED.items():
        with Image.open(out / name) as image:
            assert image.format == "JPEG" and image.size == size, name
    with Image.open(out / "strength.jpg") as image:  # strength 0 is the photo, strength 1 the (random) network
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert np.abs(pixels[:, :PANEL] - pixels[:, 2 * PANEL:]).mean() > 5


def test_missing_model_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "control"
    result = run("--tiny", "--output_dir", str(out), "--model_path", str(tmp_path / "absent.pth"),
                 "--only", "strength")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "absent.pth" in result.stderr
    assert not out.exists()
