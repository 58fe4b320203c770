"""Training content images: every image under a folder (flat, nested or ImageFolder), resized and centre-cropped,
served in a seeded per-epoch order that can restart mid-epoch (exact resume) and be sharded across ranks."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..core.errors import DatasetError, InputImageError, not_found
from ..core.images import IMAGE_EXTENSIONS, load_pil, pil_to_tensor, walk_images


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root` (recursively, sorted for a stable order), or DatasetError."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(not_found("content dataset folder", root))
    if not root.is_dir():
        raise DatasetError(f"content dataset must be a folder of images, got a file: {root}")
    files = walk_images(root)  # hidden entries (.git, macOS '._x.jpg' forks) skipped; symlinks followed once
    if not files:
        raise DatasetError(f"no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) found in {root}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size`, then centre-crop a size x size square (as pytorch/examples)."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


class ContentImages(Dataset):
    """Square crops of the dataset's images as (3, S, S) float [0, 1].

    An unreadable file is replaced by the next readable one (deterministic, so resume stays exact), and its
    index is returned with the item so the training loop can count and report it.
    """

    def __init__(self, files: Sequence[Path], image_size: int) -> None:
        if not files:
            raise DatasetError("the content dataset is empty")
        self.files = list(files)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor:
        """One image as a (3, S, S) tensor; raises InputImageError for an unreadable file."""
        return pil_to_tensor(resize_crop(load_pil(self.files[index]), self.image_size))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        skipped = []
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            try:
                return self.load(i), tuple(skipped)
            except InputImageError:
                skipped.append(i)
        raise DatasetError(f"none of the {len(self.files)} image files in the content dataset could be read")

    def first_readable(self) -> int:
        """Index of the first readable image (the preview image); DatasetError when none can be read."""
        first_error = ""
        for i in range(len(self.files)):
            try:
                load_pil(self.files[i])
                return i
            except InputImageError as exc:
                first_error = first_error or str(exc)
        raise DatasetError(f"none of the {len(self.files)} image files in the content dataset could be read "
                           f"(e.g. {first_error})")


def collate(items: Sequence[tuple[torch.Tensor, tuple[int, ...]]]) -> tuple[torch.Tensor, list[int]]:
    """Stack images into a batch and gather the indices of the unreadable files that were replaced."""
    return torch.stack([image for image, _ in items]), sorted({i for _, skipped in items for i in skipped})


def epoch_order(length: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of one epoch: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2 ** 63)
    return torch.randperm(length, generator=generator)


class EpochSampler(Sampler[int]):
    """One epoch's order from position `start` on; rank r of `world_size` takes every world_size-th index.

    Like DistributedSampler, the remaining order is padded (repeating its start) to a multiple of the world
    size so that every rank gets the same number of batches. A step of batch size B then consumes
    B * world_size positions of the global order, which is what a checkpoint records.
    """

    def __init__(self, length: int, seed: int, epoch: int, start: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.length, self.seed, self.epoch = length, seed, epoch
        self.start, self.rank, self.world_size = start, rank, world_size

    def indices(self) -> list[int]:
        order = epoch_order(self.length, self.seed, self.epoch)[self.start:].tolist()
        if order and len(order) % self.world_size:
            pad = self.world_size - len(order) % self.world_size
            order += (order * pad)[:pad]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        remaining = max(0, self.length - self.start)
        return -(-remaining // self.world_size)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave Ctrl-C / SIGTERM to the main process, which stops cleanly.

    Otherwise a terminal's Ctrl-C kills the workers too and the main process fails fetching the next batch.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
