"""The network: named layers in topological order, forward and backward passes, named
parameters ("conv1.W"), gradients and buffers ("bn1.running_mean")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbuild.layers import Layer
from cnnbuild.layers.base import Shape
from cnnbuild.layers.output import Softmax

if TYPE_CHECKING:
    from cnnbuild.summary import Summary

INPUT = "input"  # the name by which layers refer to the network's input


@dataclass
class Node:
    """One layer in the graph, with where its inputs come from and the shapes it sees."""

    layer: Layer
    inputs: list[str]
    input_shapes: list[Shape]
    output_shape: Shape

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
        rng: np.random.Generator,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.input_shape = input_shape
        self.classes = classes
        self.nodes = nodes
        self.rng = rng
        self.spec = spec or {}
        self._last_use = _last_uses(nodes)

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
    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state such as batch-norm running statistics."""
        return self._collect("buffers")

    def _collect(self, attribute: str) -> dict[str, np.ndarray]:
        return {
            f"{node.name}.{key}": value
            for node in self.nodes
            for key, value in getattr(node.layer, attribute).items()
        }

    # --- computation -----------------------------------------------------------------------

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x: (N, *input_shape) -> the output layer's activations, (N, classes)."""
        values = {INPUT: x}
        for step, node in enumerate(self.nodes):
            xs = [values[name] for name in node.inputs]
            values[node.name] = node.layer.forward(xs if node.layer.merge else xs[0], train)
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
        self._backpropagate({self.output.inputs[0]: dlogits}, self.nodes[:-1], to_input=False)

    def _backpropagate(
        self, pending: dict[str, np.ndarray], nodes: list[Node], to_input: bool = True
    ) -> np.ndarray | None:
        for node in reversed(nodes):
            dy = pending.pop(node.name)
            if not to_input and all(name == INPUT for name in node.inputs):
                node.layer.backward_params(dy)
                continue
            dxs = node.layer.backward(dy)
            for name, dx in zip(node.inputs, dxs if node.layer.merge else [dxs], strict=True):
                pending[name] = pending[name] + dx if name in pending else dx
        return pending.get(INPUT)

    def summary(self, batch_size: int = 128) -> Summary:
        """The layer table with exact counts; ``print(net.summary())`` shows it."""
        from cnnbuild.summary import summarize

        return summarize(self, batch_size)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, classes) in batches, without keeping activations."""
        chunks = [
            self.forward(x[start : start + batch_size], train=False)
            for start in range(0, len(x), batch_size)
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
