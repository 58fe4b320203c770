"""Temporal flicker of a stylised clip: a flow-free score and an optical-flow warping error.

Flow-free score: mean|O_t - O_(t-1)| / mean|I_t - I_(t-1)| over the clip (O stylised, I input frames):
how much the output changes from frame to frame relative to how much the input does. On a still camera, 1.0
means the stylisation adds no change of its own; per-frame style transfer typically scores well above 1. On
moving content it also grows with the output's texture contrast (a consistent but busier texture changes
more per pixel of motion), so there the warping error is the sharper measure of consistency.
Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): mean|O_t - warp(O_(t-1))| over
pixels that the input's optical flow tracks reliably. Flow comes from torchvision's RAFT when its weights are
in the local torch hub cache (never downloaded here), otherwise from OpenCV's Farneback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.weights import load_weights

FLOW_METHODS = ("auto", "raft", "farneback")
# torchvision's RAFT weight files, looked up (never fetched) in <torch hub dir>/checkpoints.
RAFT_WEIGHT_FILES = {"raft_small": "raft_small_C_T_V2-01064c6d.pth",
                     "raft_large": "raft_large_C_T_SKHT_V2-ff5fadd5.pth"}
_RAFT_MIN_SIDE = 128
RAFT_FLOW_UPDATES = 12  # torchvision's default refinement iterations


@dataclass
class FlickerMeter:
    """Streaming flow-free flicker score: feed frames batch by batch, never holding the clip."""
    output_change: float = 0.0   # sum over frame pairs of mean|O_t - O_(t-1)|
    input_change: float = 0.0    # sum over frame pairs of mean|I_t - I_(t-1)|
    pairs: int = 0
    _prev_input: torch.Tensor | None = field(default=None, repr=False)
    _prev_output: torch.Tensor | None = field(default=None, repr=False)

    def update(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        """Add consecutive frames: inputs and outputs (B, 3, H, W) on the same scale (e.g. [0, 1])."""
        if inputs.shape != outputs.shape or inputs.dim() != 4:
            raise ConfigError(f"flicker: inputs {tuple(inputs.shape)} and outputs {tuple(outputs.shape)} "
                              "must both be (B, 3, H, W)")
        inputs, outputs = inputs.detach().float(), outputs.detach().float()
        if self._prev_input is not None:
            inputs = torch.cat([self._prev_input, inputs])
            outputs = torch.cat([self._prev_output, outputs])
        if inputs.shape[0] >= 2:
            self.input_change += (inputs[1:] - inputs[:-1]).abs().mean(dim=(1, 2, 3)).sum().item()
            self.output_change += (outputs[1:] - outputs[:-1]).abs().mean(dim=(1, 2, 3)).sum().item()
            self.pairs += inputs.shape[0] - 1
        self._prev_input, self._prev_output = inputs[-1:].clone(), outputs[-1:].clone()

    @property
    def score(self) -> float | None:
        """The flicker score, or None with fewer than two frames or a static input (nothing to compare)."""
        if self.pairs == 0 or self.input_change <= 0:
            return None
        return self.output_change / self.input_change


def flicker_score(inputs: torch.Tensor, outputs: torch.Tensor) -> float | None:
    """Flow-free flicker score of a clip: inputs and outputs (T, 3, H, W) on the same scale."""
    meter = FlickerMeter()
    meter.update(inputs, outputs)
    return meter.score


@dataclass(frozen=True)
class WarpingError:
    """Mean |O_t - warp(O_(t-1))| over reliably tracked pixels, and which flow produced it."""
    value: float
    method: str           # "raft_small", "raft_large" or "farneback"
    valid_fraction: float  # share of pixels the occlusion / border mask kept


def raft_weights_path() -> tuple[str, Path] | None:
    """(model name, file) of a RAFT weight file already in the local torch hub cache, or None."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for name, filename in RAFT_WEIGHT_FILES.items():
        if (checkpoints / filename).is_file():
            return name, checkpoints / filename
    return None


def _farneback(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) such that first(p) ~ second(p + flow(p)); inputs uint8 greyscale."""
    import cv2  # local import: only the flow metric needs OpenCV

    return cv2.calcOpticalFlowFarneback(first, second, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _grey_u8(frames: torch.Tensor) -> list[np.ndarray]:
    grey = (0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]).clamp(0, 1)
    return [g for g in grey.mul(255).round().byte().cpu().numpy()]


class _RaftFlow:
    """RAFT flow on (N, 3, H, W) [0, 1] frame pairs, loaded from a local weight file only."""

    def __init__(self, name: str, path: Path) -> None:
        from torchvision.models import optical_flow

        self.model = getattr(optical_flow, name)(weights=None)
        self.model.load_state_dict(load_weights(path))
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        h, w = first.shape[-2:]
        scale = max(1.0, _RAFT_MIN_SIDE / min(h, w))  # its correlation pyramid needs >= 128 px per side
        sh, sw = math.ceil(h * scale / 8) * 8, math.ceil(w * scale / 8) * 8  # and sides divisible by 8
        prepare = lambda x: F.interpolate(x * 2 - 1, size=(sh, sw), mode="bilinear",  # noqa: E731
                                          align_corners=False)
        flow = self.model(prepare(first), prepare(second), num_flow_updates=RAFT_FLOW_UPDATES)[-1]
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        return flow * torch.tensor([w / sw, h / sh]).view(1, 2, 1, 1)


def _flows(inputs: torch.Tensor, method: str) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Backward flow t -> t-1 and forward flow t-1 -> t for every consecutive pair, (T-1, 2, H, W) each."""
    weights = raft_weights_path() if method in ("auto", "raft") else None
    if method == "raft" and weights is None:
        raise ConfigError("RAFT weights are not in the local torch hub cache "
                          f"({Path(torch.hub.get_dir()) / 'checkpoints'}); use flow 'farneback' or 'auto'")
    if weights is not None:
        raft = _RaftFlow(*weights)
        backward = torch.cat([raft(inputs[i:i + 1], inputs[i - 1:i]) for i in range(1, len(inputs))])
        forward = torch.cat([raft(inputs[i - 1:i], inputs[i:i + 1]) for i in range(1, len(inputs))])
        return weights[0], backward, forward
    grey = _grey_u8(inputs)
    to_t = lambda f: torch.from_numpy(f).permute(2, 0, 1)  # noqa: E731
    backward = torch.stack([to_t(_farneback(grey[i], grey[i - 1])) for i in range(1, len(grey))])
    forward = torch.stack([to_t(_farneback(grey[i - 1], grey[i])) for i in range(1, len(grey))])
    return "farneback", backward, forward


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample image (N, C, H, W) at p + flow(p), flow (N, 2, H, W) in pixels (x, y); bilinear, border."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    x = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    y = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    return F.grid_sample(image.float(), torch.stack([x, y], dim=-1), mode="bilinear",
                         padding_mode="border", align_corners=True)


def _valid_mask(backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Pixels whose flow stays inside the frame and passes the forward-backward check (Sundaram et al. 2010)."""
    h, w = backward.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    tx, ty = xs + backward[:, 0], ys + backward[:, 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    forward_at = warp(forward, backward)
    round_trip = (backward + forward_at).pow(2).sum(1)
    bound = 0.01 * (backward.pow(2).sum(1) + forward_at.pow(2).sum(1)) + 0.5
    return (inside & (round_trip < bound)).unsqueeze(1)


def warping_error(inputs: torch.Tensor, outputs: torch.Tensor, flow: str = "auto") -> WarpingError | None:
    """Flow-based temporal error of outputs (T, 3, H, W) [0, 1], flow estimated on inputs; None if T < 2."""
    if flow not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method '{flow}' (choose from {', '.join(FLOW_METHODS)})")
    if inputs.shape != outputs.shape or inputs.dim() != 4:
        raise ConfigError("warping error: inputs and outputs must both be (T, 3, H, W)")
    if inputs.shape[0] < 2:
        return None
    inputs, outputs = inputs.detach().float().cpu(), outputs.detach().float().cpu()
    method, backward, forward = _flows(inputs, flow)
    mask = _valid_mask(backward.float(), forward.float()).float()
    warped = warp(outputs[:-1], backward.float())
    diff = (outputs[1:] - warped).abs().mean(1, keepdim=True) * mask
    kept = mask.sum().item()
    value = diff.sum().item() / kept if kept else float("nan")
    return WarpingError(value=value, method=method, valid_fraction=kept / mask.numel())


__all__ = ["FLOW_METHODS", "FlickerMeter", "WarpingError", "flicker_score", "raft_weights_path", "warp",
           "warping_error"]
