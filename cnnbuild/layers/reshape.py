"""Reshaping without arithmetic."""

from __future__ import annotations

import math

import numpy as np

from cnnbuild.layers.base import Layer, Shape, register


@register
class Flatten(Layer):
    """y = x.reshape(N, -1)."""

    type_name = "flatten"
    description = "Flattens each sample to one axis: (channels, height, width) -> (features,)."

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        return (math.prod(input_shapes[0]),)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> (N, prod(...)); a view when x is contiguous."""
        (x,) = xs
        self._x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, D) -> dx: (N, ...), a view of dy."""
        return [dy.reshape(self._x_shape)]
