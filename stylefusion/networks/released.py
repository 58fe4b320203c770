"""pytorch/examples' released fast-neural-style models (candy, mosaic, rain_princess, udnie): fetch and check.

They come as one zip (saved_models/*.pth) from the download link in pytorch/examples' fast_neural_style README.
Each model is extracted next to its final name, loaded with weights_only=True and run on a tiny image before
it is renamed into place, so a failed or partial download never leaves a broken model file behind.

A different file already at a released model's name (StyleFusion's own models/udnie.pth, a user's model) is
never replaced: that released model goes to <name>_released.pth instead, and the shipped udnie.pth does not
count as the released udnie when deciding what is missing.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.errors import ModelError, StyleFusionError
from ..core.images import atomic_path, no_empty_folders_on_failure, prepare_output_dir
from ..core.weights import load_weights
from .model_files import load_model
from .transformer import MODEL_FORMAT

RELEASED_MODELS_URL = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"
RELEASED_MODELS = ("candy", "mosaic", "rain_princess", "udnie")
RELEASED_SUFFIX = "_released"  # udnie_released.pth: where the released udnie goes when models/udnie.pth is ours
DOWNLOAD_TIMEOUT_S = 20.0  # per connect / read: an offline machine fails in seconds, not minutes
_CHUNK = 1 << 20
_MAX_ARCHIVE_BYTES = 512 << 20  # the real archive is about 27 MB; refuse anything absurd
_MAX_MODEL_BYTES = 64 << 20  # each model is about 6.7 MB


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes received so far, and the total when the server announced it."""

    done_bytes: int
    total_bytes: int | None


def model_paths(models_dir: str | os.PathLike) -> dict[str, Path]:
    """Where each released model lives in `models_dir` (e.g. models/udnie.pth)."""
    return {name: Path(models_dir) / f"{name}.pth" for name in RELEASED_MODELS}


def check_model(path: str | os.PathLike) -> None:
    """Load a model file with weights_only=True and run it on a tiny image; ModelError if it is unusable."""
    network, _ = load_model(path)
    with torch.inference_mode():
        out = network(torch.full((1, 3, 16, 16), 128.0))
    if out.shape != (1, 3, 16, 16) or not torch.isfinite(out).all():
        raise ModelError(f"{path} loads but does not produce a valid image")


def is_released_layout(path: str | os.PathLike) -> bool:
    """Whether `path` is a usable model in pytorch/examples' plain state-dict layout, i.e. not a file in
    StyleFusion's own format ("stylefusion-transformer-v1" with settings), nor a broken or foreign file."""
    try:
        check_model(path)
    except StyleFusionError:
        return False
    data = load_weights(path)  # loaded fine just above
    return not (isinstance(data, dict) and data.get("format") == MODEL_FORMAT)


def released_path(path: Path) -> Path:
    """The other name a released model gets when `path` (e.g. models/udnie.pth) holds a different file."""
    return path.with_name(f"{path.stem}{RELEASED_SUFFIX}{path.suffix}")


def installed_models(models_dir: str | os.PathLike) -> dict[str, Path]:
    """The released models present in `models_dir`: <name>.pth or <name>_released.pth, whichever is a usable
    released-layout model (StyleFusion's own models/udnie.pth does not count as the released udnie)."""
    found = {}
    for name, path in model_paths(models_dir).items():
        hit = next((p for p in (path, released_path(path)) if is_released_layout(p)), None)
        if hit is not None:
            found[name] = hit
    return found


def missing_models(models_dir: str | os.PathLike) -> list[str]:
    """Names of the released models that are absent from `models_dir` or do not load and run."""
    installed = installed_models(models_dir)
    return [name for name in RELEASED_MODELS if name not in installed]


def _same_file(path: Path, info: zipfile.ZipInfo) -> bool:
    """Whether `path` has the archive member's size and CRC-32 (the same released model, downloaded before)."""
    if path.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc == info.CRC


def _install_target(final: Path, info: zipfile.ZipInfo) -> Path:
    """`final`, unless another file is there (ours, a user's): never replaced, the released model goes next to it."""
    return final if not final.exists() or _same_file(final, info) else released_path(final)


def _local_path(source: str) -> Path | None:
    """The file a file:// URL or a plain path names; None for a remote URL."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(source)


def _fetch(url: str, target: Path, timeout: float, callback: Callable[[DownloadProgress], Any] | None,
           offline_hint: str) -> None:
    """Stream `url` into `target`; ModelError naming the URL on any network failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "stylefusion"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := response.read(_CHUNK):
                done += len(chunk)
                if done > _MAX_ARCHIVE_BYTES:
                    raise ModelError(f"download from {url} is larger than {_MAX_ARCHIVE_BYTES >> 20} MB; "
                                     f"it is not the released models archive")
                out.write(chunk)
                if callback is not None:
                    callback(DownloadProgress(done, total))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason: Any = getattr(exc, "reason", None) or exc
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        elif isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        raise ModelError(f"cannot download the released models from {url}: {reason} ({offline_hint})") from None
    if total is not None and done != total:
        raise ModelError(f"download from {url} was cut short ({done} of {total} bytes)")


def install_from_zip(archive: str | os.PathLike, models_dir: str | os.PathLike) -> list[Path]:
    """Extract candy/mosaic/rain_princess/udnie .pth from the archive into `models_dir`, each checked
    first; a model whose name is taken by a different file goes to <name>_released.pth (see _install_target).

    All four are checked before any is renamed into place: either every model is installed or none is.
    """
    archive, models_dir = Path(archive), prepare_output_dir(models_dir)
    targets: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(info.filename).name: info for info in zf.infolist() if not info.is_dir()}
            missing = [name for name in RELEASED_MODELS if f"{name}.pth" not in members]
            if missing:
                raise ModelError(f"{archive} does not contain {', '.join(f'{m}.pth' for m in missing)}")
            with contextlib.ExitStack() as stack:
                for name, default in model_paths(models_dir).items():
                    info = members[f"{name}.pth"]
                    final = _install_target(default, info)
                    targets.append(final)
                    if info.file_size > _MAX_MODEL_BYTES:
                        raise ModelError(f"{info.filename} in {archive} is too large to be a released model")
                    tmp = stack.enter_context(atomic_path(final))  # renamed onto `final` when all are checked
                    with zf.open(info) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    try:
                        check_model(tmp)
                    except ModelError as exc:
                        why = str(exc).replace(str(tmp), info.filename)  # the temporary name means nothing to a user
                        raise ModelError(f"{info.filename} in {archive} is not a usable model: {why}") from None
    except zipfile.BadZipFile:
        raise ModelError(f"{archive} is not a zip archive (a download error page?)") from None
    except OSError as exc:
        raise ModelError(f"cannot extract {archive} into {models_dir}: {exc.strerror or exc}") from None
    return targets


def download_released_models(models_dir: str | os.PathLike = "models", url: str = RELEASED_MODELS_URL,
                             timeout: float = DOWNLOAD_TIMEOUT_S,
                             callback: Callable[[DownloadProgress], Any] | None = None,
                             offline_hint: str = "offline? download the zip elsewhere and pass its local path"
                             ) -> list[Path]:
    """Fetch the released models archive (an http(s) URL, a file:// URL or a local path) and install it.

    A network failure raises ModelError naming the URL, ending with `offline_hint`.
    """
    with no_empty_folders_on_failure(models_dir):  # a failed download leaves no empty folder behind
        return _download_into(prepare_output_dir(models_dir), url, timeout, callback, offline_hint)


def _download_into(models_dir: Path, url: str, timeout: float, callback: Callable[[DownloadProgress], Any] | None,
                   offline_hint: str) -> list[Path]:
    """download_released_models once the folder exists."""
    local = _local_path(url)
    if local is not None:
        if urllib.parse.urlparse(url).netloc not in ("", "localhost"):  # file://a.zip: host "a.zip", no path
            raise ModelError(f"released models archive not found: {url} (a file:// URL needs an absolute path: "
                             f"file:///path/to/saved_models.zip)")
        if local.is_dir():
            raise ModelError(f"the released models archive is a folder, not a .zip file: {url}")
        if not local.is_file():
            raise ModelError(f"released models archive not found: {url}")
        return install_from_zip(local, models_dir)
    fd, name = tempfile.mkstemp(prefix=".saved_models.", suffix=".tmp.zip", dir=models_dir)
    os.close(fd)
    try:
        _fetch(url, Path(name), timeout, callback, offline_hint)
        return install_from_zip(name, models_dir)
    finally:
        Path(name).unlink(missing_ok=True)  # the archive itself is not kept
