"""The fast engine (``cnnbuild[fast]``): numba-compiled kernels behind the numpy layers.

Importing this package imports numba; ``cnnbuild.engine`` decides whether to.
"""

from __future__ import annotations

from collections import Counter

from numba.core import event

from cnnbuild.fast.layers import FastBatchNorm, FastConv, FastMaxPool, FastReLU
from cnnbuild.fast.optim import FastAdam, FastMomentum
from cnnbuild.graph import Network
from cnnbuild.layers.activation import ReLU
from cnnbuild.layers.conv import Conv
from cnnbuild.layers.norm import BatchNorm
from cnnbuild.layers.pool import MaxPool
from cnnbuild.optim import Adam, Momentum, Optimizer

FAST_LAYERS = {Conv: FastConv, BatchNorm: FastBatchNorm, ReLU: FastReLU, MaxPool: FastMaxPool}
FAST_OPTIMIZERS = {Adam: FastAdam, Momentum: FastMomentum}

_compiling = event.TimingListener()  # time numba spends compiling (not loading its cache)
event.register("numba:compile", _compiling)


def compile_seconds() -> float:
    """Seconds this process has spent compiling kernels so far."""
    return _compiling.duration if _compiling.done else 0.0


def accelerate(net: Network, optimizer: Optimizer | None = None) -> None:
    """Switch the network's layers (and the optimizer's update) to the fast engine's, in
    place: same parameters and state, compiled passes. A ReLU whose only input is a batch
    norm that feeds nothing else is fused into it. Layers and optimizers of other types
    (plugins included) keep their numpy code."""
    fast_optimizer = FAST_OPTIMIZERS.get(type(optimizer))
    if fast_optimizer is not None:
        optimizer.__class__ = fast_optimizer
    for node in net.nodes:
        fast = FAST_LAYERS.get(type(node.layer))
        if fast is not None:
            node.layer.__class__ = fast
    readers = Counter(name for node in net.nodes for name in node.inputs)
    layers = net.layers
    for node in net.nodes:
        source = layers.get(node.inputs[0]) if len(node.inputs) == 1 else None
        if (
            isinstance(node.layer, FastReLU)
            and isinstance(source, FastBatchNorm)
            and readers[source.name] == 1
        ):
            source.fused_relu = node.layer.fused = True
