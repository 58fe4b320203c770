"""Shared pytest fixtures: small deterministic test images written to tmp_path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # import stylefusion / cli_common even when run as plain `pytest`
    sys.path.insert(0, str(REPO))


def pattern_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour gradients plus seeded noise, so every pixel differs a little."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = xx / max(width - 1, 1)
    g = yy / max(height - 1, 1)
    b = 0.5 + 0.5 * np.sin((xx + yy) / 5.0)
    noise = np.random.default_rng(seed).uniform(-0.08, 0.08, (height, width, 3))
    rgb = np.clip(np.stack([r, g, b], axis=-1) * 0.84 + 0.08 + noise, 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_image(name="image.png", size=(32, 24), mode="RGB", seed=0, **save_options) -> Path.

    Writes a deterministic test pattern of `size` = (width, height) under tmp_path (sub-folders in `name`
    are created), converted to Pillow `mode`; the format follows the file extension.
    """

    def make(name: str = "image.png", size: tuple[int, int] = (32, 24), mode: str = "RGB", seed: int = 0,
             **save_options) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pattern_array(size[0], size[1], seed), mode="RGB")
        if mode != "RGB":
            image = image.convert(mode)
        image.save(path, **save_options)
        return path

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` skip without a CUDA device; those marked cuda(also_cpu=True) pick CUDA when present and
    run on the CPU otherwise, so they are not skipped (bench/gpu_check.py runs them all with `pytest -m cuda`)."""
    needs = [item for item in items if (marker := item.get_closest_marker("cuda")) is not None
             and not marker.kwargs.get("also_cpu", False)]
    if not needs:
        return
    import torch  # only when a CUDA test was collected: plain runs need not pay for the import here

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in needs:
        item.add_marker(skip)
