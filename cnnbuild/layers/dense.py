"""Fully connected layer."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild.layers.base import INIT, TRAINABLE, Layer, Shape, register
from cnnbuild.layers.init import init_weights
from cnnbuild.options import Option, boolean, integer


@register
class Dense(Layer):
    """y = x.reshape(N, D) @ W + b: everything after the batch axis is flattened first."""

    type_name = "dense"
    description = "Fully connected layer; flattens its input, so it also follows a conv or pool."
    options: ClassVar[dict[str, Option]] = {
        "units": integer(1, "Number of outputs."),
        "bias": boolean("Add a learned bias per output.", True),
        "init": INIT,
        "trainable": TRAINABLE,
    }

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        return (self.config["units"],)

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(input_shapes[0]) * self.config["units"]

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        fan_in, units = math.prod(input_shapes[0]), self.config["units"]
        shapes = {"W": (fan_in, units)}
        if self.config["bias"]:
            shapes["b"] = (units,)
        return shapes

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        shapes = self.parameter_shapes(input_shapes)
        fan_in, units = shapes["W"]
        weights = init_weights(self.config["init"], shapes["W"], fan_in, units, rng, dtype)
        self.add_param("W", weights, decay=True)
        if "b" in shapes:
            self.add_param("b", np.zeros(shapes["b"], dtype=dtype))

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, *input_shape) -> (N, units)."""
        (x,) = xs
        self._x_shape = x.shape
        self._x = x.reshape(len(x), -1)  # (N, D)
        y = self._x @ self.params["W"]
        if self.config["bias"]:
            y += self.params["b"]
        return y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, units) -> dx: (N, *input_shape); fills grads W (D, units) and b (units,)."""
        self.backward_params(dy)
        return [(dy @ self.params["W"].T).reshape(self._x_shape)]

    def backward_params(self, dy: np.ndarray) -> None:
        np.matmul(self._x.T, dy, out=self.grads["W"])
        if self.config["bias"]:
            np.sum(dy, axis=0, out=self.grads["b"])
