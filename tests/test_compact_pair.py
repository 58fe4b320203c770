"""docs/make_compact_pair.py at --tiny size: the picture's layout, and a clean failure on a bad model."""

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

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_compact_pair.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed, arch in enumerate(("standard", "compact")):
        torch.manual_seed(seed)
        save_model(build_network(arch), folder / f"{arch}.pth")
        paths.append(folder / f"{arch}.pth")
    return paths[0], paths[1]


def test_tiny_pair_has_a_row_per_photo_and_a_column_per_network(tmp_path: Path, models) -> None:
    standard, compact = models
    result = run("--standard", str(standard), "--compact", str(compact), "--tiny", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    sheet = np.asarray(Image.open(tmp_path / "pair.jpg").convert("RGB")).astype(float)
    # 3 columns of 64 px and 2 rows (city 64x48 padded to the astronaut's 64x64), 4 px gaps
    assert sheet.shape[:2] == (2 * 64 + 4, 3 * 64 + 2 * 4)
    cells = [sheet[8:56, x * 68:x * 68 + 64] for x in range(3)]  # the city row, without its white padding
    assert sheet[:6, :64].min() > 245 and cells[0].std() > 20  # padding above the photo, then the photo
    # each network's result differs from the photo (random weights: no style, just not a copy)
    assert np.abs(cells[0] - cells[1]).mean() > 5 and np.abs(cells[0] - cells[2]).mean() > 5


def test_a_missing_model_is_one_line_and_writes_nothing(tmp_path: Path, models) -> None:
    result = run("--standard", str(tmp_path / "none.pth"), "--compact", str(models[1]), "--tiny",
                 "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "none.pth" in result.stderr and not (tmp_path / "out").exists()


def test_a_swapped_pair_is_refused_before_any_picture(tmp_path: Path, models) -> None:
    standard, compact = models
    result = run("--standard", str(compact), "--compact", str(standard), "--tiny", "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and "compact network, not a standard one" in result.stderr
    assert not (tmp_path / "o").exists()
