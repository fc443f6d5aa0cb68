"""Layers with several inputs: elementwise sum and product, and channel concatenation."""

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


@register
class Multiply(Layer):
    """y = a * b elementwise, for two inputs of one shape, or a (C, H, W) input and a (C,)
    one whose value per channel scales that channel (squeeze-excitation); either order."""

    type_name = "multiply"
    description = (
        "Elementwise product of two inputs of identical shape, or of a (channels, height, "
        "width) input with a (channels,) one that scales each channel (squeeze-excitation)."
    )
    arity = (2, 2)

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        a, b = input_shapes
        if a == b or (len(a) == 3 and b == a[:1]):
            return a
        if len(b) == 3 and a == b[:1]:
            return b
        raise ShapeError(
            f"multiply '{self.name}' needs inputs of identical shapes, or (C, H, W) and (C,) "
            f"with the same C, received {a}, {b}"
        )

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """xs: two (N, ...) arrays of one shape, or (N, C, H, W) and (N, C) -> the larger."""
        a, b = self._xs = xs
        return self._spread(a, b.ndim) * self._spread(b, a.ndim)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: like the output -> one gradient per input, each shaped as its input; a (C,)
        input's gradient is summed over height and width."""
        a, b = self._xs
        da = dy * self._spread(b, a.ndim)
        db = dy * self._spread(a, b.ndim)
        return [self._gather(da, a.ndim), self._gather(db, b.ndim)]

    @staticmethod
    def _spread(x: np.ndarray, other_ndim: int) -> np.ndarray:
        """(N, C) -> a (N, C, 1, 1) view when the other input is (N, C, H, W)."""
        return x[:, :, None, None] if x.ndim == 2 and other_ndim == 4 else x

    @staticmethod
    def _gather(grad: np.ndarray, ndim: int) -> np.ndarray:
        """A (N, C, H, W) gradient summed back to (N, C) for an input of ``ndim`` 2."""
        return grad.sum(axis=(2, 3)) if grad.ndim == 4 and ndim == 2 else grad
