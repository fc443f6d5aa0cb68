"""Elementwise activations; every one keeps the input's shape and dtype."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from cnnbuild import ops
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


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp(-|x|) never overflows, and 1/(1+e) for x >= 0
    and e/(1+e) for x < 0 are both exact."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


@register
class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed without overflow for large |x|."""

    type_name = "sigmoid"
    description = "Logistic sigmoid: 1 / (1 + exp(-x))."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape, in (0, 1)."""
        (x,) = xs
        self._y = sigmoid(x)
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


@register
class GELU(Layer):
    """y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))), the exact (erf) form."""

    type_name = "gelu"
    description = "Gaussian error linear unit: x * Phi(x), with the exact erf."

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """Phi(x), kept for backward (as large as the output)."""
        return math.prod(output_shape)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._x = x
        self._cdf = 0.5 * (1 + ops.erf(x * np.sqrt(0.5, dtype=x.dtype)))
        return x * self._cdf

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy/dx = Phi(x) + x * phi(x), phi the standard normal density."""
        x = self._x
        density = np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return [dy * (self._cdf + x * density)]


@register
class SiLU(Layer):
    """y = x * sigmoid(x) (swish)."""

    type_name = "silu"
    description = "Sigmoid linear unit (swish): x * sigmoid(x)."

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """sigmoid(x), kept for backward (as large as the output)."""
        return math.prod(output_shape)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._x = x
        self._sigmoid = sigmoid(x)
        return x * self._sigmoid

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy/dx = s * (1 + x * (1 - s)), s = sigmoid(x)."""
        s = self._sigmoid
        return [dy * s * (1 + self._x * (1 - s))]


@register
class HardSwish(Layer):
    """y = x * min(max(x + 3, 0), 6) / 6."""

    type_name = "hardswish"
    description = "Hard swish (MobileNetV3): x * relu6(x + 3) / 6."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._x = x
        return x * (np.clip(x + 3, 0, 6) / 6)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy/dx = 0 below -3, (2x + 3)/6 in [-3, 3], 1 above 3 (PyTorch's choice at the ends)."""
        x = self._x
        slope = np.where(x < -3, 0, np.where(x <= 3, (2 * x + 3) / 6, 1)).astype(x.dtype)
        return [dy * slope]


@register
class ELU(Layer):
    """y = x where x > 0, else alpha * (exp(x) - 1)."""

    type_name = "elu"
    description = "Exponential linear unit: x if x > 0, else alpha * (exp(x) - 1)."
    options: ClassVar[dict[str, Option]] = {
        "alpha": number("Value approached for very negative inputs is -alpha.", 1.0, minimum=0)
    }

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The mask of positive inputs, one byte per value, kept for backward."""
        return -(-math.prod(output_shape) // 4)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._positive = x > 0
        # expm1 of min(x, 0): accurate near 0, and no overflow for large positive x.
        self._y = np.where(self._positive, x, self.config["alpha"] * np.expm1(np.minimum(x, 0)))
        return self._y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy/dx = 1 where x > 0, else y + alpha."""
        return [np.where(self._positive, dy, dy * (self._y + self.config["alpha"]))]


@register
class Identity(Layer):
    """y = x."""

    type_name = "identity"
    description = "Passes its input on unchanged: a named junction in a graph."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> x itself."""
        return xs[0]

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [dy]
