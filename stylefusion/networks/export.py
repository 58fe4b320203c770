"""Export a transformer network to ONNX (dynamic batch, height, width) or TorchScript, for use outside Python.

The exported graph is the network, as in pytorch/examples, with one addition: its output cropped to the input's
size. Input and output are (B, 3, H, W) RGB on the 0-255 scale (the output is not clamped). The bare network
returns sides rounded up to a multiple of 4 (a 97x161 input gave 100x164), which a user of the file would have to
know to crop.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError, OutputError, first_line
from ..core.images import atomic_path, no_empty_folders_on_failure, prepare_output_dir

EXPORT_FORMATS = {".onnx": "ONNX", ".pt": "TorchScript"}
ONNX_OPSET = 17
# Tracing input: small (fast to trace), a multiple of 4; ONNX marks batch/height/width as dynamic.
_EXAMPLE_SHAPE = (1, 3, 64, 64)


def export_format(path: str | os.PathLike) -> str:
    """'ONNX' or 'TorchScript' from the file extension; ConfigError for anything else."""
    suffix = Path(path).suffix.lower()
    if not suffix:  # "model", or ".pt": a name that starts with its only dot is a hidden file with no extension
        raise ConfigError(f"--export_path {path} has no extension: use .onnx (ONNX) or .pt (TorchScript)")
    if suffix not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export extension '{suffix}': use .onnx (ONNX) or .pt (TorchScript)")
    return EXPORT_FORMATS[suffix]


class _CroppedToInput(nn.Module):
    """The network with its output cropped to the input's height and width (traced as dynamic sizes)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, :, :x.shape[2], :x.shape[3]]


def export_model(network: nn.Module, path: str | os.PathLike) -> Path:
    """Write `network` (on the CPU, fp32, eval mode) as ONNX or TorchScript to `path`, atomically."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder: give a file name ending in .onnx (ONNX) or .pt (TorchScript)")
    fmt = export_format(path)
    network = _CroppedToInput(copy.deepcopy(getattr(network, "module", network)).cpu().float().eval())
    example = torch.rand(_EXAMPLE_SHAPE) * 255.0
    try:
        # Serialised in memory, then written by Python: torch's own file writers abort the whole process (C++
        # terminate) when the disk is full, where a Python write raises OSError.
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and constant-folding notices
            if fmt == "ONNX":
                _export_onnx(network, example, buffer)
            else:
                with torch.no_grad():
                    traced = torch.jit.trace(network, example, check_trace=False)
                torch.jit.save(traced, buffer)
        with no_empty_folders_on_failure(path.parent):  # a missing folder is made, as for the other outputs
            prepare_output_dir(path.parent)
            with atomic_path(path) as tmp:
                tmp.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except (RuntimeError, torch.jit.Error) as exc:  # an exporter failure, e.g. an unsupported operator
        raise ModelError(f"{fmt} export failed: {first_line(exc)}") from None
    return path


def _export_onnx(network: nn.Module, example: torch.Tensor, path: Path | io.BytesIO) -> None:
    # dynamo=False: the torch.export-based exporter (default since torch 2.9) needs the onnxscript package;
    # the TorchScript-based one handles this network's reflection padding and nearest upsampling offline.
    dynamic = {0: "batch", 2: "height", 3: "width"}
    target = path if isinstance(path, io.BytesIO) else str(path)
    torch.onnx.export(network, (example,), target, dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": dynamic, "output": dynamic})
