"""Where a training step spends its time: per-layer forward and backward milliseconds, as
``caffe time`` reports them.

Training steps run on random data through the network's own passes, watched by an
``Observer`` that reads the clock after each layer: a layer's time is the time since the
previous layer finished (for the softmax output, its backward is the loss gradient, fused
with the loss). Then the optimizer step. Times are medians over the timed steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cnnbuild.engine import use as use_engine
from cnnbuild.graph import Network, Observer
from cnnbuild.limits import allocated_memory, check_memory, training_memory
from cnnbuild.optim import make_optimizer, optimizer_slots
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
    engine: str = "numpy"

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
    engine: str = "auto",
) -> StepTime:
    """Train ``net`` on ``engine`` for ``warmup + steps`` steps on random data and time
    every layer.

    optimizer: a config such as ``{"type": "adam"}``; default: the spec's ``training:``
    optimizer, else Adam. The network's weights change, as in training.
    """
    config = _optimizer_config(net, optimizer)
    check_step_memory(net, batch_size, config)
    opt = make_optimizer(config, net.params, net.roles)
    engine = use_engine(net, engine, opt)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *net.input_shape), dtype=np.float32)
    labels = rng.integers(0, net.classes, batch_size)
    updates, totals = [], []
    with net.observed(_Stopwatch()) as watch:
        for step in range(warmup + steps):
            if step == warmup:
                watch.laps.clear()
            started = watch.lap_start = time.perf_counter()
            net.forward(x, train=True)
            watch.lap_start = time.perf_counter()
            net.backward_loss(labels)
            updated = time.perf_counter()
            opt.step(net.grads)
            done = time.perf_counter()
            if step >= warmup:
                updates.append(done - updated)
                totals.append(done - started)
    layers = [
        LayerTime(
            node.name,
            node.layer.type_name,
            _median_ms(watch.laps.get((node.name, "forward"), [])),
            _median_ms(watch.laps.get((node.name, "backward"), [])),
        )
        for node in net.nodes
    ]
    return StepTime(
        net.name, batch_size, steps, layers, _median_ms(updates), _median_ms(totals), engine
    )


def check_step_memory(net: Network, batch_size: int, optimizer: dict | None = None) -> None:
    """ResourceError, before anything is allocated, when a training step of ``net`` at
    ``batch_size`` needs more memory than is available (what ``net`` already holds, its
    weights once built, is not counted twice)."""
    config = _optimizer_config(net, optimizer)
    need = training_memory(net, batch_size, optimizer_slots(config)) - allocated_memory(net)
    check_memory(
        need,
        f"timing {net.name} at batch {batch_size:,} (weights, optimizer state and the "
        "activations training keeps)",
        "use a smaller --batch-size",
    )


def _optimizer_config(net: Network, optimizer: dict | None) -> dict:
    return optimizer or (net.spec.get("training") or {}).get("optimizer", DEFAULT_OPTIMIZER)


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
            f"{timing.name}: batch {timing.batch_size}, {timing.engine} engine, median of "
            f"{timing.steps} training steps",
            "",
            *aligned(header, rows, right={2, 3, 4}),
            f"forward:   {forward:9.2f} ms",
            f"backward:  {backward:9.2f} ms",
            f"update:    {timing.update_ms:9.2f} ms",
            f"step:      {timing.step_ms:9.2f} ms  ({timing.images_per_second:,.0f} images/s)",
        ]
    )


class _Stopwatch(Observer):
    """Seconds per (layer, pass): each lap runs from ``lap_start`` or the previous layer's end."""

    def __init__(self) -> None:
        self.laps: dict[tuple[str, str], list[float]] = {}
        self.lap_start = 0.0

    def _lap(self, name: str, way: str) -> None:
        now = time.perf_counter()
        self.laps.setdefault((name, way), []).append(now - self.lap_start)
        self.lap_start = now

    def after_forward(self, name: str, output: np.ndarray) -> None:
        self._lap(name, "forward")

    def after_backward(self, name: str, gradients: list[np.ndarray]) -> None:
        self._lap(name, "backward")


def _median_ms(seconds: list[float]) -> float:
    return 1000 * float(np.median(seconds)) if seconds else 0.0
