"""Device choice (auto|cpu|cuda|mps) and autocast for --precision (fp32|bf16|fp16)."""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch

from .errors import DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a --device value into a torch.device; auto prefers CUDA, then MPS, then CPU."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device '{name}' (choose from {', '.join(DEVICES)})")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but no CUDA device is available; use --device cpu or auto")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{name} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return device
    if name == "mps" and not _mps_available():
        raise DeviceError("MPS was requested but is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def as_device(device: str | torch.device) -> torch.device:
    """A library caller's device (a --device name or a torch.device) checked to exist here: DeviceError, not
    torch's RuntimeError from deep inside the first transfer, for CUDA on a machine without it."""
    if isinstance(device, str):
        return resolve_device(device)
    if not isinstance(device, torch.device):
        raise DeviceError(f"device must be a name (cpu, cuda, ...) or a torch.device, got {device!r}")
    if device.type == "cuda":
        return resolve_device(str(device))
    return device


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn 'auto' into bf16 where the device computes it natively (AVX512-BF16/AMX CPUs, bf16 GPUs), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cpu" and cpu_supports_bf16():
        return "bf16"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def training_precision(precision: str) -> str:
    """--precision for training: auto means fp32 (bf16/fp16 gradients are not validated for quality here)."""
    return "fp32" if precision == "auto" else precision


def check_precision(precision: str, device: torch.device) -> None:
    """Raise DeviceError when --precision cannot run on this device."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision in ("fp32", "auto"):
        return
    if device.type == "cpu":
        if precision == "fp16":
            raise DeviceError("fp16 is not supported on the CPU; use --precision bf16 or fp32")
        if not cpu_supports_bf16():
            limits = [f"{name}={os.environ[name]}" for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                      if os.environ.get(name)]
            why = f" (or {' and '.join(limits)} hides it)" if limits else ""
            raise DeviceError(f"this CPU has no native bf16 support{why}; use --precision fp32")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU does not support bf16; use --precision fp16 or fp32")


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for the network passes; a no-op for fp32."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def needs_grad_scaler(device: torch.device, precision: str) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 do not need it."""
    return precision == "fp16" and device.type == "cuda"
