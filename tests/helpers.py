"""Small generated images and a subprocess runner shared by the tests (no files from outside the repo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def scene(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A smooth 'photo': gradient sky, a few coloured blocks, mild noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    for _ in range(4):  # blocks of 1/8 to 1/3 of the frame
        bw, bh = max(1, w // 8), max(1, h // 8)
        x0, y0 = rng.integers(0, w - bw + 1), rng.integers(h // 3, h - bh + 1)
        img[y0:y0 + max(bh, h // 3), x0:x0 + max(bw, w // 4)] = rng.uniform(0.1, 0.9, 3)
    img += rng.normal(0, 0.02, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def stripes(size: tuple[int, int] = (64, 64), seed: int = 1) -> Image.Image:
    """A high-contrast 'painting': coloured diagonal stripes and dots, very unlike `scene`."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    band = ((x + y) // 5) % 3
    palette = rng.uniform(0, 1, (3, 3))
    img = palette[band]
    dots = rng.random((h, w)) < 0.05
    img[dots] = [1.0, 0.9, 0.1]
    return Image.fromarray((img * 255).astype(np.uint8))


def scene_and_stripes(folder: Path, content_size: tuple[int, int] = (64, 48),
                      style_size: tuple[int, int] = (64, 64)) -> tuple[Path, Path]:
    """content.png (a scene) and style.png (stripes) written into `folder`: an iterative run's inputs."""
    content, style = folder / "content.png", folder / "style.png"
    scene(content_size).save(content)
    stripes(style_size).save(style)
    return content, style


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run one of the CLI scripts as a user would."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, status: tuple[str, ...] = ()) -> None:
    """Non-zero exit, a single non-empty stderr line, no traceback, and each needle in the message.

    `status`: prefixes of status lines that may precede the error on stderr (e.g. "model settings: ").
    """
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    while status and len(lines) > 1 and lines[0].startswith(status):
        lines.pop(0)
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
