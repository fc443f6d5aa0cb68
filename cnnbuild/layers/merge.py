"""Layers with several inputs: elementwise sum and channel concatenation."""

from __future__ import annotations

import numpy as np

from cnnbuild.errors import ShapeError
from cnnbuild.layers.base import Layer, Shape, register


@register
class Add(Layer):
    """y = x1 + x2 + ...; every input has the same shape."""

    type_name = "add"
    description = "Elementwise sum of two inputs or more of identical shape (residual links)."
    arity = (2, None)

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        first, *rest = input_shapes
        if any(shape != first for shape in rest):
            listed = ", ".join(str(shape) for shape in input_shapes)
            raise ShapeError(
                f"add '{self.name}' needs inputs of identical shapes, received {listed}"
            )
        return first

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """xs: k arrays (N, ...) of one shape -> (N, ...)."""
        self._count = len(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        return y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, ...) -> the same array for every input."""
        return [dy] * self._count


@register
class Concat(Layer):
    """Concatenation on the channel axis (axis 1 of the batch; the feature axis for flat inputs)."""

    type_name = "concat"
    description = "Concatenates two inputs or more on the channel (or feature) axis."
    arity = (2, None)

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        first, *rest = input_shapes
        for shape in rest:
            if len(shape) != len(first):
                raise ShapeError(
                    f"concat '{self.name}' needs inputs of equal rank: {first} vs {shape}"
                )
            if shape[1:] != first[1:]:
                raise ShapeError(
                    f"concat '{self.name}' needs equal spatial sizes: {first} vs {shape}"
                )
        return (sum(shape[0] for shape in input_shapes), *first[1:])

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """xs: arrays (N, C_k, ...) -> (N, sum of C_k, ...)."""
        self._splits = np.cumsum([x.shape[1] for x in xs[:-1]])
        return np.concatenate(xs, axis=1)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, sum of C_k, ...) -> views (N, C_k, ...), one per input."""
        return np.split(dy, self._splits, axis=1)
