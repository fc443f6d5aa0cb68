"""Inverted dropout: scaled at train time, the identity at test time."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild.layers.base import Layer, Shape, register
from cnnbuild.options import Option, number


@register
class Dropout(Layer):
    """Train: y = x * mask / (1 - rate), each element kept with probability 1 - rate.

    Test: y = x (returned as is). Masks are drawn from the generator passed to ``build``.
    """

    type_name = "dropout"
    description = "Inverted dropout: zeroes a fraction rate of the inputs while training."
    options: ClassVar[dict[str, Option]] = {
        "rate": number("Probability of zeroing each input.", 0.5, minimum=0, exclusiveMaximum=1)
    }

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The scaled mask, kept for backward (as large as the output)."""
        return math.prod(output_shape)

    def inference_scratch(
        self, input_shapes: list[Shape], output_shape: Shape, batch_size: int
    ) -> int:
        return 0  # nothing kept at test time but the output

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        self._rng = rng

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        if not train:
            self._scale = None
            return x
        keep = 1 - self.config["rate"]
        # The kept elements carry 1 / keep, the dropped ones 0.
        self._scale = (self._rng.random(x.shape, dtype=x.dtype) < keep) / x.dtype.type(keep)
        return x * self._scale

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        return [dy if self._scale is None else dy * self._scale]
