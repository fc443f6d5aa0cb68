"""Where a training step spends its time: per-layer forward and backward milliseconds, as
``caffe time`` reports them.

Each layer's ``forward`` and ``backward`` (``backward_params`` for a layer that reads the
network's input, ``loss_gradient`` for the softmax output, whose gradient is fused with the
loss) is timed on random data through the network's own passes,
then the optimizer step. Times are medians over the timed steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from cnnbuild.graph import Network
from cnnbuild.optim import make_optimizer
from cnnbuild.tables import aligned

DEFAULT_OPTIMIZER = {"type": "adam"}


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float
    backward_ms: float


@dataclass
class StepTime:
    """Median times of one training step at ``batch_size``."""

    name: str
    batch_size: int
    steps: int
    layers: list[LayerTime]
    update_ms: float  # the optimizer step
    step_ms: float  # forward + backward + update, timed as a whole

    @property
    def images_per_second(self) -> float:
        return self.batch_size / (self.step_ms / 1000)


def time_step(
    net: Network,
    batch_size: int = 128,
    steps: int = 10,
    warmup: int = 2,
    optimizer: dict | None = None,
    seed: int = 0,
) -> StepTime:
    """Train ``net`` for ``warmup + steps`` steps on random data and time every layer.

    optimizer: a config such as ``{"type": "adam"}``; default: the spec's ``training:``
    optimizer, else Adam. The network's weights change, as in training.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *net.input_shape), dtype=np.float32)
    labels = rng.integers(0, net.classes, batch_size)
    config = optimizer or net.spec.get("training", {}).get("optimizer", DEFAULT_OPTIMIZER)
    opt = make_optimizer(config, net.params)
    names = [node.name for node in net.nodes]
    laps: dict[str, list[float]] = {f"{name}/{way}": [] for name in names for way in "fb"}
    updates, totals = [], []
    with _stopwatches(net, laps):
        for step in range(warmup + steps):
            started = time.perf_counter()
            net.forward(x, train=True)
            net.backward_loss(labels)
            updated = time.perf_counter()
            opt.step(net.grads)
            done = time.perf_counter()
            if step < warmup:
                for lap in laps.values():
                    lap.clear()
            else:
                updates.append(done - updated)
                totals.append(done - started)
    layers = [
        LayerTime(
            node.name,
            node.layer.type_name,
            _median_ms(laps[f"{node.name}/f"]),
            _median_ms(laps[f"{node.name}/b"]),
        )
        for node in net.nodes
    ]
    return StepTime(net.name, batch_size, steps, layers, _median_ms(updates), _median_ms(totals))


def render(timing: StepTime) -> str:
    """The per-layer table, then the totals."""
    layer_total = sum(t.forward_ms + t.backward_ms for t in timing.layers)
    header = ("layer", "type", "forward ms", "backward ms", "share")
    rows = [
        (
            t.name,
            t.type,
            f"{t.forward_ms:.2f}",
            f"{t.backward_ms:.2f}",
            f"{100 * (t.forward_ms + t.backward_ms) / layer_total:.1f}%",
        )
        for t in timing.layers
    ]
    forward = sum(t.forward_ms for t in timing.layers)
    backward = sum(t.backward_ms for t in timing.layers)
    return "\n".join(
        [
            f"{timing.name}: batch {timing.batch_size}, median of {timing.steps} training steps",
            "",
            *aligned(header, rows, right={2, 3, 4}),
            f"forward:   {forward:9.2f} ms",
            f"backward:  {backward:9.2f} ms",
            f"update:    {timing.update_ms:9.2f} ms",
            f"step:      {timing.step_ms:9.2f} ms  ({timing.images_per_second:,.0f} images/s)",
        ]
    )


@contextlib.contextmanager
def _stopwatches(net: Network, laps: dict[str, list[float]]) -> Iterator[None]:
    """Time every layer's forward and backward into ``laps`` while the block runs."""
    wrapped = []
    for node in net.nodes:
        layer = node.layer
        backwards = ["loss_gradient"] if node is net.output else ["backward", "backward_params"]
        for method, way in [("forward", "f")] + [(name, "b") for name in backwards]:
            setattr(layer, method, _timed(getattr(layer, method), laps[f"{node.name}/{way}"]))
            wrapped.append((layer, method))
    try:
        yield
    finally:
        for layer, method in wrapped:
            delattr(layer, method)  # the class's method shows through again


def _timed(function: Callable, lap: list[float]) -> Callable:
    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        lap.append(time.perf_counter() - started)
        return result

    return timed


def _median_ms(seconds: list[float]) -> float:
    return 1000 * float(np.median(seconds)) if seconds else 0.0
