"""Bounds on what a spec may ask for, and memory checks made before anything is allocated.

Two kinds of bound live here. The fixed limits (``MAX_SPEC_BYTES``, ``MAX_LAYERS``,
``MAX_PARAMETERS``, ``MAX_VALUES_PER_IMAGE``) hold whatever machine runs cnnbuild: values
beyond them are certainly mistakes (a stray zero, a repeat inside a repeat), so validation
and summary refuse them, located in the file. Memory is the other: ``check_memory`` compares
what a step would need (``training_memory``, ``inference_memory``, the weights) with the
memory this machine has free now, and raises ``ResourceError`` saying both, before the
arrays exist.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from cnnbuild.errors import CnnbuildError

if TYPE_CHECKING:
    from cnnbuild.graph import Network

MAX_SPEC_BYTES = 2**20  # an architecture file is a few KB
MAX_LAYERS = 10_000  # after repeat blocks are expanded; cifar_resnet has 52
MAX_PARAMETERS = 2**31  # trainable and non-trainable values of one network (8 GiB float32)
MAX_VALUES_PER_IMAGE = 2**31  # values one image keeps in training (outputs and scratch)
FLOAT_BYTES = 4  # float32, what cnnbuild trains in
FLOAT64_BYTES = 8  # weights are drawn in float64, then cast (cnnbuild.layers.init)
OPTIMIZER_SCRATCH = 2  # arrays per parameter every optimizer keeps besides its slots


class ResourceError(CnnbuildError):
    """The work asked for needs more memory than this machine has (or than cnnbuild allows)."""


def format_bytes(count: int) -> str:
    """``512 B``, ``399.8 KiB``, ``6.0 MiB``, ``37.2 GiB``, ``1.5 TiB``, ``3.0 PiB``;
    beyond 1,024 PiB, ``about 10^24 bytes``."""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024:
            return f"{size:,.1f} {unit}"
        size /= 1024
    return f"about 10^{len(str(int(count))) - 1} bytes"


def format_count(count: int) -> str:
    """``1,234,567``; astronomically large counts as ``about 10^40``."""
    return f"{count:,}" if count < 10**18 else f"about 10^{len(str(count)) - 1}"


def available_memory() -> int:
    """Bytes of memory available to new allocations now: MemAvailable from /proc/meminfo,
    else free physical pages (os.sysconf), else an unknown amount taken as unlimited."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


def check_memory(need_bytes: int, what: str, fix: str) -> None:
    """Raise ResourceError when ``need_bytes`` exceed the memory available now:
    "``what`` would need 37.2 GiB, but 21.3 GiB of memory is available — ``fix``"."""
    available = available_memory()
    if need_bytes > available:
        raise ResourceError(
            f"{what} would need {format_bytes(need_bytes)}, but {format_bytes(available)} "
            f"of memory is available — {fix}"
        )


# --- estimates ------------------------------------------------------------------------------


def parameter_values(net: Network) -> tuple[int, int]:
    """(trainable, non-trainable) values of ``net``, from the layers' declared shapes, so
    the same for a planned network as for a built one."""
    trainable = non_trainable = 0
    for node in net.nodes:
        trainable += sum(map(math.prod, node.layer.parameter_shapes(node.input_shapes).values()))
        non_trainable += sum(map(math.prod, node.layer.buffer_shapes(node.input_shapes).values()))
    return trainable, non_trainable


def weight_memory(net: Network, itemsize: int = FLOAT_BYTES) -> int:
    """Bytes that allocating ``net``'s weights takes at its peak: parameters, their
    gradients and buffers in ``itemsize``, plus the largest layer's weights drawn in float64
    before the cast."""
    trainable, non_trainable = parameter_values(net)
    largest = max(
        (
            math.prod(shape)
            for node in net.nodes
            for shape in node.layer.parameter_shapes(node.input_shapes).values()
        ),
        default=0,
    )
    return (2 * trainable + non_trainable) * itemsize + largest * FLOAT64_BYTES


def allocated_memory(net: Network) -> int:
    """Bytes of the weights, gradients and buffers ``net`` holds now (0 for a plan)."""
    layers = [node.layer for node in net.nodes]
    return sum(
        array.nbytes
        for layer in layers
        for arrays in (layer.params, layer.grads, layer.buffers)
        for array in arrays.values()
    )


def activation_values(net: Network) -> int:
    """Values one image keeps in a training step: the input, every layer's output and what
    each layer keeps besides it for backward (``Layer.training_scratch``)."""
    return math.prod(net.input_shape) + sum(
        math.prod(node.output_shape)
        + node.layer.training_scratch(node.input_shapes, node.output_shape)
        for node in net.nodes
    )


def training_memory(net: Network, batch_size: int, optimizer_slots: int) -> int:
    """Bytes a training step of ``net`` at ``batch_size`` allocates, in float32: weights,
    gradients and buffers; per trainable parameter ``optimizer_slots`` state arrays (Adam: 2)
    and the optimizer's 2 scratch arrays; per image the input batch, every layer's output and
    scratch kept for backward, and two of the largest outputs for gradients in flight."""
    trainable, non_trainable = parameter_values(net)
    weights = (2 + OPTIMIZER_SCRATCH + optimizer_slots) * trainable + non_trainable
    largest = max((math.prod(node.output_shape) for node in net.nodes), default=0)
    per_image = activation_values(net) + 2 * largest
    return (weights + batch_size * per_image) * FLOAT_BYTES


def inference_memory(net: Network, batch_size: int) -> int:
    """Bytes that classifying one batch of ``batch_size`` images allocates, in float32:
    weights and buffers (and the gradients building allocates), the input batch, every
    layer's output (layers keep references to their inputs and outputs between passes) and
    what each layer keeps besides (``Layer.inference_scratch``)."""
    trainable, non_trainable = parameter_values(net)
    values = math.prod(net.input_shape) + sum(math.prod(n.output_shape) for n in net.nodes)
    scratch = sum(
        node.layer.inference_scratch(node.input_shapes, node.output_shape, batch_size)
        for node in net.nodes
    )
    return (2 * trainable + non_trainable + batch_size * values + scratch) * FLOAT_BYTES
