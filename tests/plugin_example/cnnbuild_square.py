"""Example cnnbuild plugin: ``square`` (registers itself on import) and ``cube`` (a plain
Layer class that cnnbuild registers through its entry point)."""

from typing import ClassVar

import numpy as np

from cnnbuild.layers import Layer, register
from cnnbuild.options import Option, number


@register
class Square(Layer):
    """y = scale * x * x."""

    type_name = "square"
    description = "Elementwise square: scale * x * x."
    options: ClassVar[dict[str, Option]] = {"scale": number("Factor.", 1.0, exclusiveMinimum=0)}

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        (x,) = xs
        self._x = x
        return self.config["scale"] * x * x

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [2 * self.config["scale"] * self._x * dy]


class Cube(Layer):
    """y = x * x * x."""

    type_name = "cube"
    description = "Elementwise cube: x * x * x."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        (x,) = xs
        self._x = x
        return x * x * x

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [3 * self._x * self._x * dy]
