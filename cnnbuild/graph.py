"""The network: named layers in topological order, forward and backward passes, named
parameters ("conv1.W") with their roles, gradients and buffers ("bn1.running_mean")."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbuild.layers import Layer
from cnnbuild.layers.base import Role, Shape
from cnnbuild.layers.output import Softmax

if TYPE_CHECKING:
    from cnnbuild.summary import Summary

INPUT = "input"  # the name by which layers refer to the network's input
# Images per batch in inference: a training batch's size, so that evaluating between epochs
# holds no more than training did (each layer keeps its last batch's values), at the same speed.
PREDICT_BATCH = 128


class Observer:
    """Watches a network's passes: called after each layer, in the order layers run.

    Subclass and override what you need; register with ``Network.observed``.
    """

    def after_forward(self, name: str, output: np.ndarray) -> None:
        """Layer ``name`` computed ``output``."""

    def after_backward(self, name: str, gradients: list[np.ndarray]) -> None:
        """Layer ``name`` computed the gradients w.r.t. its inputs (an empty list for a
        layer that reads the network's input, when no input gradient is asked for)."""


@dataclass
class Node:
    """One layer in the graph, with where its inputs come from and the shapes it sees."""

    layer: Layer
    inputs: list[str]
    input_shapes: list[Shape]
    output_shape: Shape
    blocks: tuple[str, ...] = ()  # the repeat blocks holding it, outermost first

    @property
    def name(self) -> str:
        return self.layer.name


class Network:
    """A built network. ``nodes`` are in topological order; the last one is the output."""

    def __init__(
        self,
        name: str,
        input_shape: Shape,
        classes: int,
        nodes: list[Node],
        rng: np.random.Generator | None,
        spec: dict[str, Any] | None = None,
        allocated: bool = True,
    ) -> None:
        self.name = name
        self.allocated = allocated  # False: planned (shapes only), no weights yet
        self.input_shape = input_shape
        self.classes = classes
        self.nodes = nodes
        self.rng = rng  # None while planned: numpy's random module loads only for weights
        self.spec = spec or {}
        self._last_use = _last_uses(nodes)
        self._observers: list[Observer] = []

    @property
    def layers(self) -> dict[str, Layer]:
        return {node.name: node.layer for node in self.nodes}

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays keyed ``layer.param``; the layers' own arrays, not copies."""
        return self._collect("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._collect("grads")

    @property
    def roles(self) -> dict[str, Role]:
        """How the optimizer treats each parameter: weight decay, trainable."""
        return self._collect("roles")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state such as batch-norm running statistics."""
        return self._collect("buffers")

    def _collect(self, attribute: str) -> dict[str, Any]:
        return {
            f"{node.name}.{key}": value
            for node in self.nodes
            for key, value in getattr(node.layer, attribute).items()
        }

    # --- computation -----------------------------------------------------------------------

    @contextlib.contextmanager
    def observed(self, observer: Observer) -> Iterator[Observer]:
        """Call ``observer`` after each layer of every pass while the block runs."""
        self._observers.append(observer)
        try:
            yield observer
        finally:
            self._observers.remove(observer)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x: (N, *input_shape) -> the output layer's activations, (N, classes)."""
        if not self.allocated:
            raise RuntimeError(
                f"the network {self.name!r} is only planned: allocate its weights first "
                "(cnnbuild.builder.allocate, or build instead of plan)"
            )
        values = {INPUT: x}
        for step, node in enumerate(self.nodes):
            output = node.layer.forward([values[name] for name in node.inputs], train)
            values[node.name] = output
            for observer in self._observers:
                observer.after_forward(node.name, output)
            for name in set(node.inputs):  # a layer may name one input twice
                if self._last_use[name] == step:
                    del values[name]
        return values[self.output.name]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy: gradient w.r.t. the output -> gradient w.r.t. the input; fills every grad."""
        return self._backpropagate({self.output.name: dy}, self.nodes)

    def backward_loss(self, labels: np.ndarray) -> None:
        """Backpropagate the mean cross-entropy of the last forward pass against ``labels``,
        using the fused softmax + cross-entropy gradient (p - onehot) / N."""
        softmax = self.output.layer
        if not isinstance(softmax, Softmax):
            raise TypeError(f"the output layer {softmax.name!r} is not a softmax")
        dlogits = softmax.loss_gradient(labels)
        for observer in self._observers:
            observer.after_backward(self.output.name, [dlogits])
        self._backpropagate({self.output.inputs[0]: dlogits}, self.nodes[:-1], to_input=False)

    def _backpropagate(
        self, pending: dict[str, np.ndarray], nodes: list[Node], to_input: bool = True
    ) -> np.ndarray | None:
        for node in reversed(nodes):
            dy = pending.pop(node.name)
            if not to_input and all(name == INPUT for name in node.inputs):
                node.layer.backward_params(dy)
                dxs = []
            else:
                dxs = node.layer.backward(dy)
                for name, dx in zip(node.inputs, dxs, strict=True):
                    pending[name] = pending[name] + dx if name in pending else dx
            for observer in self._observers:
                observer.after_backward(node.name, dxs)
        return pending.get(INPUT)

    def summary(self, batch_size: int = 128) -> Summary:
        """The layer table with exact counts; ``print(net.summary())`` shows it."""
        from cnnbuild.summary import summarize

        return summarize(self, batch_size)

    def predict(
        self,
        x: np.ndarray,
        batch_size: int = PREDICT_BATCH,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Class probabilities (N, classes), a batch at a time, in inference mode.

        ``prepare`` turns each batch of ``x`` into network input (e.g. normalises uint8
        images), so the whole set is never converted at once. Only one batch's activations
        are held at a time.
        """
        chunks = [
            self.forward(prepare(batch) if prepare else batch)
            for batch in (x[start : start + batch_size] for start in range(0, len(x), batch_size))
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.classes), np.float32)


def _last_uses(nodes: list[Node]) -> dict[str, int]:
    """For each value, the index of the last node that reads it (the output is kept)."""
    last = {}
    for step, node in enumerate(nodes):
        for name in node.inputs:
            last[name] = step
    last[nodes[-1].name] = len(nodes)
    return last
