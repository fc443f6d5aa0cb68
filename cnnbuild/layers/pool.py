"""Pooling over square windows (no padding, sizes round down) and global average pooling."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from cnnbuild import ops
from cnnbuild.layers.base import Layer, Shape, register
from cnnbuild.layers.conv import spatial_input
from cnnbuild.options import Option, integer
from cnnbuild.shapes import window_output


class Pool(Layer):
    """Shared options and shapes of max and average pooling."""

    options: ClassVar[dict[str, Option]] = {
        "size": integer(1, "Window height and width."),
        "stride": Option(
            {"type": ["integer", "null"], "minimum": 1},
            "Step between windows; null means the same as size (windows that do not overlap).",
            None,
        ),
    }

    @property
    def size(self) -> int:
        return self.config["size"]

    @property
    def stride(self) -> int:
        return self.config["stride"] or self.config["size"]

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        c, h, w = spatial_input(self, input_shapes)
        what = f"{self.type_name} '{self.name}': window"
        return (
            c,
            window_output(h, self.size, self.stride, 0, what),
            window_output(w, self.size, self.stride, 0, what),
        )


@register
class MaxPool(Pool):
    """y[n, c, oh, ow] = max of x[n, c] over the window at (stride*oh, stride*ow)."""

    type_name = "maxpool"
    description = "Maximum over square windows; the gradient goes to one maximum per window."

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """Where each maximum was, kept for backward: three byte masks at size 2, stride 2;
        else int64 offsets, found in a copy of the windows (size*size values per output)."""
        values = math.prod(output_shape)
        if self.size == self.stride == 2:
            return -(-3 * values // 4)
        return 2 * values + self.size**2 * values

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, C, Ho, Wo)."""
        (x,) = xs
        self._x_shape = x.shape
        if self.size == self.stride == 2:
            y, self._where = ops.maxpool2x2_forward(x)
        else:
            y, self._where = ops.maxpool_forward(x, self.size, self.stride)
        return y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W); ties go to the first maximum (row-major)."""
        if self.size == self.stride == 2:
            return [ops.maxpool2x2_backward(dy, self._where, self._x_shape)]
        return [ops.maxpool_backward(dy, self._where, self._x_shape, self.size, self.stride)]


@register
class AvgPool(Pool):
    """y[n, c, oh, ow] = mean of x[n, c] over the window at (stride*oh, stride*ow)."""

    type_name = "avgpool"
    description = "Mean over square windows."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, C, Ho, Wo)."""
        (x,) = xs
        self._x_shape = x.shape
        return ops.avgpool_forward(x, self.size, self.stride)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W)."""
        return [ops.avgpool_backward(dy, self._x_shape, self.size, self.stride)]


@register
class GlobalAvgPool(Layer):
    """y[n, c] = mean of x[n, c] over all positions."""

    type_name = "global_avgpool"
    description = "Mean over the whole height and width: (channels, height, width) -> (channels,)."

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        return spatial_input(self, input_shapes)[:1]

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, C)."""
        (x,) = xs
        self._x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, C) -> dx: (N, C, H, W)."""
        h, w = self._x_shape[2:]
        dx = ops.channel_major(self._x_shape, dy.dtype)
        dx[...] = (dy / (h * w))[:, :, None, None]
        return [dx]
