"""Softmax output and the cross-entropy loss it pairs with."""

from __future__ import annotations

import numpy as np

from cnnbuild.errors import ShapeError
from cnnbuild.layers.base import Layer, Shape, register

# Probabilities are clipped to at least this before the log, so a confident mistake costs
# about 27.6 rather than infinity.
MIN_PROBABILITY = 1e-12


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true classes.

    probs: (N, D) rows summing to one; labels: (N,) integer class indices.
    """
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, MIN_PROBABILITY)).mean())


@register
class Softmax(Layer):
    """p = exp(x - max x) / sum(exp(x - max x)) over the features of each sample."""

    type_name = "softmax"
    description = "Softmax over the classes; the output layer for cross-entropy training."

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        (input_shape,) = input_shapes
        if len(input_shape) != 1:
            raise ShapeError(
                f"softmax '{self.name}' needs a flat (classes,) input, received {input_shape}; "
                "put a flatten or dense layer before it"
            )
        return input_shape

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, D) logits -> (N, D) probabilities."""
        (x,) = xs
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self._p = e / e.sum(axis=1, keepdims=True)
        return self._p

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, D) -> dx = p * (dy - sum(dy * p)), the vector-Jacobian product."""
        p = self._p
        return [p * (dy - (dy * p).sum(axis=1, keepdims=True))]

    def loss_gradient(self, labels: np.ndarray) -> np.ndarray:
        """Gradient of cross_entropy(p, labels) w.r.t. the logits: (p - onehot(labels)) / N.

        labels: (N,) integer class indices -> (N, D). Uses the last forward's probabilities.
        """
        n = len(labels)
        dx = self._p.copy()
        dx[np.arange(n), labels] -= 1
        dx /= n
        return dx
