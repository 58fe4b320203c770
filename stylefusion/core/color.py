"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors"): luminance-only and histogram."""

from __future__ import annotations

import torch

from .errors import ConfigError

PRESERVE_COLOR = ("none", "luminance", "histogram")

# ITU-R BT.601 YCbCr (offsets omitted: only linear mixes and differences are used).
_RGB_TO_YUV = torch.tensor([[0.299, 0.587, 0.114],
                            [-0.168736, -0.331264, 0.5],
                            [0.5, -0.418688, -0.081312]])
_YUV_TO_RGB = torch.linalg.inv(_RGB_TO_YUV)


def check_mode(mode: str) -> str:
    """Validate a --preserve_color value."""
    if mode not in PRESERVE_COLOR:
        raise ConfigError(f"unknown --preserve_color '{mode}' (choose {', '.join(PRESERVE_COLOR)})")
    return mode


def _mix(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", matrix.to(image), image)


def rgb_to_yuv(image: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) RGB -> Y, Cb, Cr channels."""
    return _mix(image.float(), _RGB_TO_YUV)


def yuv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_yuv."""
    return _mix(image, _YUV_TO_RGB)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Luminance replicated to three channels, for luminance-only style transfer."""
    y = rgb_to_yuv(image)[..., :1, :, :]
    return y.expand(*y.shape[:-3], 3, *y.shape[-2:]).clamp(0, 1)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Style luminance shifted/scaled to the content's luminance mean and std (Gatys et al. 2017, eq. 1)."""
    ys, yc = rgb_to_yuv(style)[..., :1, :, :], rgb_to_yuv(content)[..., :1, :, :]
    y = (ys - ys.mean()) * (yc.std() / (ys.std() + 1e-6)) + yc.mean()
    return y.expand(*y.shape[:-3], 3, *y.shape[-2:]).clamp(0, 1)


def transfer_luminance(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the stylised image's luminance and the content image's chroma (Cb, Cr)."""
    if content.shape[-2:] != stylised.shape[-2:]:
        resized = torch.nn.functional.interpolate(content.reshape(-1, *content.shape[-3:]),
                                                  size=stylised.shape[-2:], mode="bilinear", align_corners=False)
        content = resized.reshape(*content.shape[:-2], *stylised.shape[-2:])
    ys, yc = rgb_to_yuv(stylised), rgb_to_yuv(content)
    return yuv_to_rgb(torch.cat([ys[..., :1, :, :], yc[..., 1:, :, :]], dim=-3)).clamp(0, 1).to(stylised.dtype)


def match_color(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Recolour `source` so its RGB mean and covariance equal `target`'s (linear colour transfer, Gatys 2017).

    Uses the symmetric (eigen-decomposition) matrix square root, which keeps hues better than Cholesky.
    """
    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.double().reshape(3, -1)
        mean = flat.mean(1, keepdim=True)
        centred = flat - mean
        cov = centred @ centred.T / flat.shape[1] + 1e-5 * torch.eye(3, dtype=flat.dtype, device=flat.device)
        return mean, cov

    def sqrtm(m: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(m)
        vals = vals.clamp_min(1e-10).sqrt()
        return vecs @ torch.diag(1 / vals if inverse else vals) @ vecs.T

    shape = source.shape
    src = source.reshape(3, -1) if source.dim() == 3 else source.reshape(-1, 3, *shape[-2:])[0].reshape(3, -1)
    mu_s, cov_s = stats(src)
    mu_t, cov_t = stats(target.reshape(-1, 3, *target.shape[-2:])[0])
    transform = sqrtm(cov_t) @ sqrtm(cov_s, inverse=True)
    out = transform @ (source.double().reshape(-1, 3, shape[-2] * shape[-1]) - mu_s) + mu_t
    return out.reshape(shape).clamp(0, 1).to(source.dtype)


def preserve_color(stylised: torch.Tensor, content: torch.Tensor, mode: str) -> torch.Tensor:
    """Post-process a stylised image so it keeps the content's colours (`none` returns it unchanged)."""
    check_mode(mode)
    if mode == "luminance":
        return transfer_luminance(stylised, content)
    if mode == "histogram":
        return match_color(stylised, content)
    return stylised
