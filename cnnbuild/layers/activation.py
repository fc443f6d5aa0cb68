"""Elementwise activations; every one keeps the input's shape and dtype."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from cnnbuild.layers.base import Layer, Shape, register
from cnnbuild.options import Option, number


@register
class ReLU(Layer):
    """y = max(x, 0)."""

    type_name = "relu"
    description = "Rectified linear unit: max(x, 0)."

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The mask of positive inputs, one byte per value, kept for backward."""
        return -(-math.prod(output_shape) // 4)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._positive = x > 0
        return np.maximum(x, 0)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [dy * self._positive]


@register
class LeakyReLU(Layer):
    """y = x where x > 0, else slope * x."""

    type_name = "leaky_relu"
    description = "Leaky rectified linear unit: x if x > 0, else slope * x."
    options: ClassVar[dict[str, Option]] = {
        "slope": number("Gradient for negative inputs.", 0.01, minimum=0)
    }

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The mask of positive inputs, one byte per value, kept for backward."""
        return -(-math.prod(output_shape) // 4)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._positive = x > 0
        return np.where(self._positive, x, self.config["slope"] * x)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [np.where(self._positive, dy, self.config["slope"] * dy)]


@register
class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed without overflow for large |x|."""

    type_name = "sigmoid"
    description = "Logistic sigmoid: 1 / (1 + exp(-x))."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape, in (0, 1)."""
        (x,) = xs
        # exp(-|x|) never overflows; 1/(1+e) for x >= 0 and e/(1+e) for x < 0 are both exact.
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1, e) / (1 + e)
        return self._y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [dy * self._y * (1 - self._y)]


@register
class Tanh(Layer):
    """y = tanh(x)."""

    type_name = "tanh"
    description = "Hyperbolic tangent."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape, in (-1, 1)."""
        (x,) = xs
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [dy * (1 - self._y * self._y)]
