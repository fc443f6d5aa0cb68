"""ONNX export: a trained network as one ONNX model, checked against cnnbuild by onnxruntime.

The model takes ``images``, float32 (N, C, H, W) pixel values on the dataset's own scale
(0..255), normalises them inside the graph and returns ``probabilities`` (N, classes).
Dropout is left out and batch norm is its inference-time scale and shift.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import cnnbuild
from cnnbuild.errors import CnnbuildError
from cnnbuild.graph import INPUT, Network, Node

if TYPE_CHECKING:
    import onnx

    from cnnbuild.data.normalization import Normalization

IMAGES, PROBABILITIES = "images", "probabilities"
DEFAULT_OPSET = 17  # run by every onnxruntime since 1.14
MIN_OPSET = 13  # Softmax with a single axis
CHECK_IMAGES = 1000
TOLERANCE = 1e-4  # largest probability difference --check accepts


def _require(module: str) -> Any:
    """Import an optional dependency, or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CnnbuildError(
            f"ONNX export needs {module}, which is not installed: pip install 'cnnbuild[onnx]'"
        ) from None


class _Graph:
    """ONNX nodes and initializers, collected layer by layer."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, value: np.ndarray, dtype: type = np.float32) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        node = self.onnx.helper.make_node(op_type, inputs, [output], name=output, **attributes)
        self.nodes.append(node)
        return output


Exporter = Callable[[_Graph, Node, list[str], str], str]


def _simple(op_type: str, **attributes: Any) -> Exporter:
    return lambda g, node, xs, out: g.op(op_type, xs, out, **attributes)


def _conv(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    layer = node.layer
    inputs = [xs[0], g.constant(f"{layer.name}.W", layer.params["W"])]
    if layer.config["bias"]:
        inputs.append(g.constant(f"{layer.name}.b", layer.params["b"]))
    return g.op(
        "Conv",
        inputs,
        out,
        kernel_shape=list(layer.kernel),
        strides=list(layer.stride),
        pads=[*layer.padding, *layer.padding],  # top, left, bottom, right
        dilations=list(layer.dilation),
        group=layer.groups,
    )


def _pool(op_type: str, **attributes: Any) -> Exporter:
    def export(g: _Graph, node: Node, xs: list[str], out: str) -> str:
        layer = node.layer
        return g.op(
            op_type,
            xs,
            out,
            kernel_shape=list(layer.kernel),
            strides=list(layer.stride),
            pads=[*layer.padding, *layer.padding],
            ceil_mode=0,
            **attributes,
        )

    return export


def _global_pool(op_type: str) -> Exporter:
    def export(g: _Graph, node: Node, xs: list[str], out: str) -> str:
        pooled = g.op(op_type, xs, f"{node.name}.pooled")
        return g.op("Flatten", [pooled], out, axis=1)

    return export


def _batchnorm(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    """x * scale + shift per channel, folded exactly as cnnbuild's inference computes it."""
    layer = node.layer
    inv_std = 1 / np.sqrt(layer.buffers["running_var"] + layer.config["eps"])
    scale = layer.params["gamma"] * inv_std
    shift = layer.params["beta"] - layer.buffers["running_mean"] * scale
    shape = (-1, 1, 1) if len(node.input_shapes[0]) == 3 else (-1,)
    scaled = g.op(
        "Mul", [xs[0], g.constant(f"{layer.name}.scale", scale.reshape(shape))], f"{out}.scaled"
    )
    return g.op("Add", [scaled, g.constant(f"{layer.name}.shift", shift.reshape(shape))], out)


def _dense(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    layer = node.layer
    flat = g.op("Flatten", xs, f"{node.name}.flat", axis=1)
    inputs = [flat, g.constant(f"{layer.name}.W", layer.params["W"])]
    if layer.config["bias"]:
        inputs.append(g.constant(f"{layer.name}.b", layer.params["b"]))
    return g.op("Gemm", inputs, out)


def _standardized(g: _Graph, rows: str, size: int, eps: float, name: str) -> str:
    """(rows - mean) / sqrt(var + eps) of each row of an (R, size) value, the biased variance;
    means as products with a (size, 1) column of 1/size (ReduceMean changed in opset 18)."""
    column = g.constant(f"{name}.mean_column", np.full((size, 1), 1 / size))
    mean = g.op("MatMul", [rows, column], f"{name}.mean")
    centered = g.op("Sub", [rows, mean], f"{name}.centered")
    squares = g.op("Mul", [centered, centered], f"{name}.squares")
    var = g.op("MatMul", [squares, column], f"{name}.var")
    shifted = g.op("Add", [var, g.constant(f"{name}.eps", np.array(eps))], f"{name}.var_eps")
    return g.op("Div", [centered, g.op("Sqrt", [shifted], f"{name}.std")], f"{name}.normalized")


def _layernorm(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    """Each sample as one row, standardized, scaled and shifted per value, reshaped back."""
    layer = node.layer
    size = layer.params["gamma"].size
    rows = g.op("Flatten", xs, f"{node.name}.rows", axis=1)
    normalized = _standardized(g, rows, size, layer.config["eps"], node.name)
    gamma = g.constant(f"{layer.name}.gamma", layer.params["gamma"].reshape(-1))
    scaled = g.op("Mul", [normalized, gamma], f"{node.name}.scaled")
    beta = g.constant(f"{layer.name}.beta", layer.params["beta"].reshape(-1))
    shifted = g.op("Add", [scaled, beta], f"{node.name}.shifted")
    return g.op("Reshape", [shifted, g.op("Shape", xs, f"{node.name}.shape")], out)


def _groupnorm(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    """Rows of one sample's group, standardized, reshaped back, scaled and shifted per channel."""
    layer = node.layer
    groups, shape = layer.config["groups"], node.input_shapes[0]
    size = math.prod(shape) // groups
    row_shape = g.constant(f"{node.name}.row_shape", np.array([-1, size]), np.int64)
    rows = g.op("Reshape", [xs[0], row_shape], f"{node.name}.rows")
    normalized = _standardized(g, rows, size, layer.config["eps"], node.name)
    shape_value = g.op("Shape", xs, f"{node.name}.shape")
    unflat = g.op("Reshape", [normalized, shape_value], f"{node.name}.unflat")
    per_channel = (-1, 1, 1) if len(shape) == 3 else (-1,)
    gamma = g.constant(f"{layer.name}.gamma", layer.params["gamma"].reshape(per_channel))
    scaled = g.op("Mul", [unflat, gamma], f"{node.name}.scaled")
    beta = g.constant(f"{layer.name}.beta", layer.params["beta"].reshape(per_channel))
    return g.op("Add", [scaled, beta], out)


def _gelu(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    """x * 0.5 * (1 + erf(x / sqrt(2))), with Erf (ONNX's Gelu needs opset 20)."""
    scaled = g.op(
        "Mul",
        [xs[0], g.constant(f"{node.name}.rsqrt2", np.array(math.sqrt(0.5)))],
        f"{node.name}.scaled",
    )
    erf = g.op("Erf", [scaled], f"{node.name}.erf")
    cdf = g.op("Add", [erf, g.constant(f"{node.name}.one", np.array(1.0))], f"{node.name}.erf1")
    half = g.op(
        "Mul", [xs[0], g.constant(f"{node.name}.half", np.array(0.5))], f"{node.name}.half_x"
    )
    return g.op("Mul", [half, cdf], out)


def _times(gate_op: str, **attributes: Any) -> Exporter:
    """x * gate(x): silu with Sigmoid, hardswish with HardSigmoid (HardSwish needs opset 14)."""

    def export(g: _Graph, node: Node, xs: list[str], out: str) -> str:
        gate = g.op(gate_op, xs, f"{node.name}.gate", **attributes)
        return g.op("Mul", [xs[0], gate], out)

    return export


def _multiply(g: _Graph, node: Node, xs: list[str], out: str) -> str:
    """A (C,) input is unsqueezed to (C, 1, 1) to scale a (C, H, W) one."""
    shapes = node.input_shapes
    factors = list(xs)
    for i, shape in enumerate(shapes):
        if len(shape) == 1 and len(shapes[1 - i]) == 3:
            axes = g.constant(f"{node.name}.axes{i}", np.array([2, 3]), np.int64)
            factors[i] = g.op("Unsqueeze", [xs[i], axes], f"{node.name}.spread{i}")
    return g.op("Mul", factors, out)


EXPORTERS: dict[str, Exporter] = {
    "conv": _conv,
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "relu": _simple("Relu"),
    "leaky_relu": lambda g, node, xs, out: g.op(
        "LeakyRelu", xs, out, alpha=float(node.layer.config["slope"])
    ),
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "gelu": _gelu,
    "silu": _times("Sigmoid"),
    "hardswish": _times("HardSigmoid", alpha=1 / 6, beta=0.5),
    "elu": lambda g, node, xs, out: g.op("Elu", xs, out, alpha=float(node.layer.config["alpha"])),
    "identity": lambda g, node, xs, out: xs[0],
    "maxpool": _pool("MaxPool"),
    "avgpool": _pool("AveragePool", count_include_pad=1),  # padding counts, as in cnnbuild
    "global_avgpool": _global_pool("GlobalAveragePool"),
    "global_maxpool": _global_pool("GlobalMaxPool"),
    "flatten": _simple("Flatten", axis=1),
    "dense": _dense,
    "dropout": lambda g, node, xs, out: xs[0],  # the identity at inference
    "add": _simple("Sum"),
    "concat": _simple("Concat", axis=1),
    "multiply": _multiply,
    "softmax": _simple("Softmax", axis=1),
}


def _value(name: str) -> str:
    """The ONNX value a layer computes: its name, unless it is one of the graph's own."""
    return f"{name}.out" if name in (IMAGES, PROBABILITIES) else name


def _normalize(g: _Graph, normalization: Normalization, channels: int) -> str:
    """images * scale - shift, with the float32 constants of ``batches.to_float``."""
    mean = np.broadcast_to(np.asarray(normalization.mean, np.float64).reshape(-1), channels)
    std = np.broadcast_to(np.asarray(normalization.std, np.float64).reshape(-1), channels)
    scale = (1.0 / (255.0 * std)).reshape(-1, 1, 1)
    shift = (mean / std).reshape(-1, 1, 1)
    scaled = g.op("Mul", [IMAGES, g.constant("input.scale", scale)], "input.scaled")
    return g.op("Sub", [scaled, g.constant("input.shift", shift)], INPUT)


def to_onnx(
    net: Network,
    normalization: Normalization,
    class_names: list[str],
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """The network as an ONNX model from 0..255 ``images`` to ``probabilities``."""
    onnx = _require("onnx")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise CnnbuildError(
            f"opset {opset} is not available: use {MIN_OPSET} to {newest} (onnx {onnx.__version__})"
        )
    g = _Graph(onnx)
    values = {INPUT: _normalize(g, normalization, net.input_shape[0])}
    for node in net.nodes:
        exporter = EXPORTERS.get(node.layer.type_name)
        if exporter is None:
            raise CnnbuildError(
                f"layer '{node.name}': type {node.layer.type_name!r} has no ONNX exporter"
            )
        out = PROBABILITIES if node is net.output else _value(node.name)
        values[node.name] = exporter(g, node, [values[name] for name in node.inputs], out)
    float32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        g.nodes,
        net.name,
        [onnx.helper.make_tensor_value_info(IMAGES, float32, ["N", *net.input_shape])],
        [onnx.helper.make_tensor_value_info(PROBABILITIES, float32, ["N", net.classes])],
        g.initializers,
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
        producer_name="cnnbuild",
        producer_version=cnnbuild.__version__,
    )
    onnx.helper.set_model_props(
        model,
        {
            "name": net.name,
            "class_names": json.dumps(class_names),
            "input_shape": json.dumps(list(net.input_shape)),
            "cnnbuild_version": cnnbuild.__version__,
        },
    )
    return model


def default_output(checkpoint: str | Path) -> Path:
    """Where ``export`` writes by default: the checkpoint's path with ``.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def export_checkpoint(
    checkpoint: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """Write a checkpoint's network as a checked ONNX file; returns its path.

    ``out`` given is overwritten if it exists; the default path is not.
    """
    from cnnbuild.files import atomic_write
    from cnnbuild.inference import load_trained

    onnx = _require("onnx")
    path = Path(out) if out is not None else default_output(checkpoint)
    if out is None and path.exists():
        raise CnnbuildError(f"{path} exists: give -o {path} to overwrite it, or another -o FILE")
    model = load_trained(checkpoint)
    proto = to_onnx(model.net, model.run.normalization, model.class_names, opset)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(path, lambda file: file.write(data))
    return path


def onnx_probabilities(model: str | Path | bytes, images: np.ndarray) -> np.ndarray:
    """Run an ONNX model (file or bytes) with onnxruntime on images (N, C, H, W) 0..255."""
    ort = _require("onnxruntime")
    if isinstance(model, Path):
        model = str(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run([PROBABILITIES], {IMAGES: images.astype(np.float32)})[0]


def check_export(checkpoint: str | Path, onnx_file: str | Path) -> tuple[str, bool]:
    """Compare onnxruntime with cnnbuild on up to CHECK_IMAGES test images (random ones
    when the data cannot be loaded): (the report, whether it passes)."""
    from cnnbuild.commands import _checkpoint_dataset
    from cnnbuild.data.dataset import DataError
    from cnnbuild.inference import load_trained

    model = load_trained(checkpoint)
    try:
        dataset = _checkpoint_dataset(model.run.config, "test", None, model.net)
        images = np.asarray(dataset.images[:CHECK_IMAGES])
        source = f"{len(images):,} test images of {dataset.name}"
    except DataError as error:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (CHECK_IMAGES, *model.net.input_shape), dtype=np.uint8)
        reason = str(error).splitlines()[0]
        source = f"{len(images):,} random images (the test data cannot be loaded: {reason})"
    expected = model.probabilities(images)
    got = onnx_probabilities(Path(onnx_file), images)
    difference = float(np.abs(got - expected).max()) if len(images) else 0.0
    agree = int((got.argmax(axis=1) == expected.argmax(axis=1)).sum())
    passed = difference <= TOLERANCE and agree == len(images)
    report = (
        f"checked on {source}\n"
        f"largest probability difference: {difference:.2e} (limit {TOLERANCE:.0e})\n"
        f"top-1 agreement: {agree:,} of {len(images):,}\n"
        f"{'OK' if passed else 'FAILED'}"
    )
    return report, passed
