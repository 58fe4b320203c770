"""Tiny generated training data for the fast-style-transfer training tests (shared by test_training,
test_resume, test_ddp, test_cli_fast_train and test_control): a nested folder of small random blob/gradient
images, one corrupt file, a striped style image and a checked second style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

IMAGE_SIZE = 32   # training crop side in the tests (the smallest allowed)
NUM_IMAGES = 8


def blob_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth colour gradient with a few soft random blobs."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xs / max(width - 1, 1))[..., None]
    img = start * (1 - t) + end * t
    for _ in range(3):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 12)
        weight = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - weight) + rng.uniform(0, 255, 3) * weight
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_dataset(root: Path, count: int = NUM_IMAGES, corrupt: bool = True) -> Path:
    """ImageFolder-like layout with a nested sub-folder, a hidden file and (optionally) one unreadable file."""
    rng = np.random.default_rng(0)
    sizes = [(40, 48), (48, 40), (36, 36), (64, 44), (44, 64), (40, 40), (52, 36), (36, 52)]
    for i in range(count):
        folder = root / "default_class" / ("nested" if i % 3 == 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = sizes[i % len(sizes)]
        blob_image(rng, h, w).save(folder / f"img_{i:02d}.{'png' if i % 2 else 'jpg'}")
    if corrupt:
        (root / "default_class" / "broken.jpg").write_bytes(b"not really a jpeg")
    (root / "default_class" / "._resource_fork.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS junk: ignored
    return root


def make_style(path: Path) -> Path:
    """Bold diagonal colour stripes: a style that is easy to see and to learn."""
    ys, xs = np.mgrid[0:48, 0:48]
    band = ((xs + ys) // 6) % 3
    palette = np.array([[230, 60, 30], [20, 40, 200], [250, 220, 40]], dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(palette[band], "RGB").save(path)
    return path


def make_checks(path: Path) -> Path:
    """Green and white checks: a second style, unlike make_style's stripes in colour and shape."""
    ys, xs = np.mgrid[0:48, 0:48]
    on = (((xs // 8) + (ys // 8)) % 2)[..., None] == 1
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(on, [30, 200, 60], [240, 240, 240]).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: one thread is faster than two contending ones (and keeps shared CI machines usable)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny dataset and striped style image, made once per test module."""
    root = tmp_path_factory.mktemp("train_data")
    return make_dataset(root / "dataset"), make_style(root / "stripes.png")
