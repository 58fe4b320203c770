"""Images: load any file as RGB float [0,1], resize by the longest side, save atomically."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import secrets
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputImageError, OutputError, first_line, is_link_loop, require_file, resolved
from .memory import format_bytes

# The files a folder is searched for: photo and painting formats Pillow reads (.jfif: what Windows and browsers
# save JPEG downloads as; .avif and .jp2 need Pillow built with their libraries, else such a file is skipped, named).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif",
                    ".jpe", ".avif", ".apng", ".tga", ".pnm", ".pbm", ".jp2", ".pcx", ".qoi")
# Pillow's format names for the extensions we write.
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF", ".webp": "WEBP", ".ppm": "PPM"}


def is_image_file(path: Path) -> bool:
    """True when the file name has an image extension (the content is checked on load)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _has_transparency(img: Image.Image) -> bool:
    """True for an alpha band, palette alpha, or a PNG colour key (tRNS) on an L/RGB/16-bit image."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    if img.info.get("transparency") is not None:
        return True
    return img.mode == "P" and img.palette is not None and img.palette.mode.endswith("A")


def _wide_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale -> 8-bit L (LA when a tRNS colour key marks a value transparent)."""
    # Scale to 8 bits instead of clipping (Pillow's convert clips at 255).
    raw = np.asarray(img)
    arr = raw.astype(np.float64)
    peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    if img.mode == "F":
        peak = max(float(arr.max()), 1.0) if arr.max() > 1.0 else 1.0
    grey = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    key = img.info.get("transparency")
    if isinstance(key, int):
        alpha = np.where(raw == key, 0, 255).astype(np.uint8)
        return Image.merge("LA", (grey, Image.fromarray(alpha, mode="L")))
    return grey


def _to_rgb(img: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white (kept as RGBA: keep_alpha)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _wide_to_8bit(img)
    if _has_transparency(img) and keep_alpha:
        return img.convert("RGBA")
    if _has_transparency(img):
        # Pillow's convert applies a palette alpha or a tRNS colour key on the way to RGBA.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


# Bytes per pixel of a decoded image besides the file's own decoded buffer: the RGB conversion, the uint8 tensor
# made from it and a result of the same size, each 3 bytes a pixel.
RGB_COPIES_BYTES_PER_PIXEL = 9


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """About how many bytes decoding an image of this size and Pillow mode takes, with its RGB copies."""
    try:
        per_pixel = Image.getmodebands(mode) * (2 if ";16" in mode else 4 if mode in ("I", "F") else 1)
    except (KeyError, ValueError):
        per_pixel = 4
    return width * height * (per_pixel + RGB_COPIES_BYTES_PER_PIXEL)


def load_pil(path: str | os.PathLike, max_bytes: int | None = None, keep_alpha: bool = False) -> Image.Image:
    """Open an image file as an upright 8-bit RGB Pillow image (RGBA when it has transparency and keep_alpha),
    or raise InputImageError.

    With `max_bytes`, the size in the file's header is checked first: an image whose decoding would need more
    (decoded_bytes) is refused before a pixel is decoded, however large the file claims to be.
    """
    path = require_file(path, "image", InputImageError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with transparency" warnings
            with Image.open(path) as img:  # reads the header only
                if max_bytes is not None and decoded_bytes(*img.size, img.mode) > max_bytes:
                    raise InputImageError(_too_large(path, img.size, decoded_bytes(*img.size, img.mode), max_bytes))
                img.load()  # decode now so truncated files fail here, not later
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img, keep_alpha)
    except UnidentifiedImageError:
        raise InputImageError(f"not an image file (unrecognised format): {path}") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        megapixels = int(found.group(1)) / 1e6 if found else 0.0
        size = f" ({megapixels:,.0f} MP)" if megapixels >= 100 else f" ({megapixels:.3g} MP)" if found else ""
        raise InputImageError(f"image is too large to open safely{size}: {path} (Pillow's guard against "
                              f"decompression bombs; if you trust the file, raise the limit with --max_pixels)"
                              ) from None
    except PermissionError:
        raise InputImageError(f"permission denied reading image: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"cannot read image {path}: {first_line(exc, default='corrupt or truncated')}") from None


def _too_large(path: Path, size: tuple[int, int], need: int, budget: int) -> str:
    width, height = size
    megapixels = width * height / 1e6
    shown = f"{megapixels:.0f}" if megapixels >= 10 else f"{megapixels:.2g}"
    return (f"image is too large for the memory budget: {path} is {width}x{height} ({shown} MP) "
            f"and needs about {format_bytes(need)} decoded, over the {format_bytes(budget)} budget "
            f"(--max_memory)")


def walk_images(root: Path, exclude: Path | None = None,
                unreadable: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Image files under `root`, skipping hidden entries and the folder `exclude` (e.g. the output), in walk order.

    Symlinked folders are followed, each real folder once (no loops). Sub-folders that cannot be listed are
    appended to `unreadable` with a reason; an unreadable `root` raises InputImageError.
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def on_error(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        message = (f"permission denied reading folder: {folder}" if isinstance(exc, PermissionError)
                   else f"cannot read folder {folder}: {exc.strerror or exc}")
        if folder == root:
            raise InputImageError(message)
        if unreadable is not None:
            unreadable.append((folder, message))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        here = Path(dirpath)
        seen.add(here.resolve())
        kept = []
        for d in sorted(dirnames):
            real = (here / d).resolve()
            if not d.startswith(".") and real != exclude and real not in seen:
                seen.add(real)
                kept.append(d)
        dirnames[:] = kept
        found.extend(here / f for f in sorted(filenames) if not f.startswith(".") and is_image_file(Path(f)))
    return found


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> float tensor (3, H, W) in [0, 1]."""
    return pil_to_uint8(img).float().div_(255.0)


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> uint8 tensor (3, H, W) in [0, 255]: a quarter of the float's memory (large photos)."""
    arr = np.array(img, dtype=np.uint8)  # one writable copy, viewed channels-first without another
    return torch.from_numpy(arr).permute(2, 0, 1)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) or (1, 3, H, W) in [0, 1], or uint8 in [0, 255] -> RGB Pillow image (clamped,
    rounded)."""
    if image.dim() == 4:
        image = image[0]
    image = image.detach()
    height, width = image.shape[-2:]
    if image.dtype == torch.uint8:
        return Image.fromarray(image.permute(1, 2, 0).cpu().contiguous().numpy(), mode="RGB")
    arr = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, (16 << 20) // max(1, 3 * width * 4))  # converted in bands: a 48 MP image needs no float copy
    for top in range(0, height, rows):
        band = image[:, top:top + rows].float().clamp(0, 1).mul_(255).round_().byte()
        arr[top:top + rows] = band.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def load_image(path: str | os.PathLike, size: int | None = None, max_bytes: int | None = None) -> torch.Tensor:
    """Load an image as (3, H, W) float [0, 1], optionally resized so its longest side is `size`; one whose
    header says it would not decode within `max_bytes` is refused first (see load_pil)."""
    image = pil_to_tensor(load_pil(path, max_bytes))
    return resize_longest(image, size) if size else image


def scaled_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(h, w) scaled so that max(h, w) == longest, keeping the aspect ratio."""
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (3, H, W) or (B, 3, H, W) tensor to (h, w) with antialiased bicubic."""
    batched = image.dim() == 4
    x = image if batched else image.unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return x if batched else x[0]


def resize_longest(image: torch.Tensor, longest: int) -> torch.Tensor:
    """Resize so the longest side equals `longest`, keeping the aspect ratio."""
    h, w = image.shape[-2:]
    return resize_to(image, scaled_size(h, w, longest))


# A temporary name is "." + stem + "." + a random token in hex + ".tmp" + suffix: this many characters more.
_TOKEN_BYTES = 6
_TEMP_EXTRA = len(".") + len(".") + 2 * _TOKEN_BYTES + len(".tmp")
# The longest file name most file systems take (bytes).
_NAME_MAX = 255


def _temp_stem(path: Path) -> str:
    """The output's stem as its temporary name carries it: shortened (by whole characters) where the name would
    otherwise pass _NAME_MAX, so that any output name the file system takes can also be written through a temporary
    file."""
    stem = path.stem
    while stem and len(os.fsencode(stem + path.suffix)) + _TEMP_EXTRA > _NAME_MAX:
        stem = stem[:-1]
    return stem


def create_temp_file(path: Path) -> Path:
    """Create an empty, hidden, uniquely named file next to `path` with the permissions open() would give."""
    for _ in range(100):
        tmp = path.with_name(f".{_temp_stem(path)}.{secrets.token_hex(_TOKEN_BYTES)}.tmp{path.suffix}")
        try:
            # Mode 0o666 minus the umask, like a plain open(); tempfile.mkstemp would make it 0o600, and the
            # rename would then leave every output readable by its owner only.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot find a free temporary name next to {path}")


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files (of create_temp_file's naming) next to `path`: another run's in progress, or left by a
    run killed outright (SIGKILL, power loss), which had no chance to remove its own."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(_temp_stem(path))}.{'[0-9a-f]' * 2 * _TOKEN_BYTES}.tmp"
                                   f"{glob.escape(path.suffix)}"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp_path = create_temp_file(path)
    try:
        yield tmp_path
        if path.is_file():  # replacing a file: keep its permission bits (set after writing: may be read-only)
            with contextlib.suppress(OSError):
                os.chmod(tmp_path, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_image(image: torch.Tensor | Image.Image, path: str | os.PathLike, quality: int = 95) -> Path:
    """Save atomically (temporary name, then rename) so a crash never leaves a half-written image."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"unsupported output image extension '{path.suffix}' for {path}")
    img = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        encoded = io.BytesIO()
        img.save(encoded, format=fmt, **options)
        with atomic_path(path) as tmp:
            # Our own write, not Pillow's: its JPEG writer let a full disk's short write pass, leaving a truncated
            # file reported as saved.
            with open(tmp, "wb") as f:
                f.write(encoded.getbuffer())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """Refuse an output directory that is a file, a loop of symbolic links or a link to a missing folder (before
    anything checks the names inside it, whose messages would name a file in it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output directory is a file: {path}")
    if is_link_loop(path):
        raise OutputError(f"output directory is a loop of symbolic links: {path}")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"output directory is a symbolic link to a missing folder: {path} -> {os.readlink(path)}")
    return path


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create the output directory if needed and check it is writable."""
    path = check_output_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    try:  # a real write probe: os.access() says yes to root even on read-only mounts
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        raise OutputError(f"output directory is not writable: {path}") from None
    return path


def first_missing(folder: str | os.PathLike) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (what creating it would add), or None."""
    folder = Path(folder)
    return next((p for p in reversed((folder, *folder.parents)) if not p.exists()), None)


def remove_empty_tree(root: Path | None) -> None:
    """Remove `root` and the folders under it that hold no file; anything with a file in it is kept."""
    if root is None or not root.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)  # fails, and is kept, when not empty


@contextlib.contextmanager
def no_empty_folders_on_failure(folder: str | os.PathLike) -> Iterator[None]:
    """If the block fails, remove the folders on `folder`'s path that it created and left empty."""
    created = first_missing(folder)
    try:
        yield
    except BaseException:
        remove_empty_tree(created)
        raise


def write_failure(path: Path, exc: BaseException) -> str:
    """Why writing `path` failed, in words (torch's writers report a full disk as a bare RuntimeError)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    with contextlib.suppress(OSError):
        if os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize < 64 * 1024 ** 2:
            return "No space left on device"
    return "the write failed (disk full or removed?)"


def path_list(paths: Any) -> tuple:
    """A config's list of paths as a tuple: one path given bare is a list of one (a string was read as a list of its
    characters: "image not found: d"), None an empty one."""
    if paths is None:
        return ()
    if isinstance(paths, (str, os.PathLike)):
        return (paths,)
    try:
        return tuple(paths)
    except TypeError:  # a number, say: validate() then names the field
        return (paths,)


def ensure_not_input(output: str | os.PathLike, inputs: list[str | os.PathLike]) -> None:
    """Refuse an output path that is one of the inputs (never overwrite an input)."""
    out = resolved(output)
    for item in inputs:
        if resolved(item) == out:
            raise OutputError(f"refusing to overwrite an input file: {output}")
