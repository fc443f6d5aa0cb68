"""Pooling over square windows (sizes round down), and global average and max pooling."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from cnnbuild import ops
from cnnbuild.errors import ConfigError
from cnnbuild.layers.base import Layer, Shape, register
from cnnbuild.layers.conv import spatial_input
from cnnbuild.options import Option, integer
from cnnbuild.shapes import Pair, window_output


class Pool(Layer):
    """Shared options and shapes of max and average pooling.

    After construction ``kernel``, ``stride``, ``padding`` and ``dilation`` (always 1) are
    (height, width) pairs, as for a conv.
    """

    options: ClassVar[dict[str, Option]] = {
        "size": integer(1, "Window height and width."),
        "stride": Option(
            {"type": ["integer", "null"], "minimum": 1},
            "Step between windows; null means the same as size (windows that do not overlap).",
            None,
        ),
        "padding": integer(
            0,
            "Padding on every side, at most size/2: -infinity for maxpool, zeros for avgpool "
            "(they count in the mean, as in PyTorch's default).",
            0,
        ),
    }
    fill: ClassVar[float] = 0.0  # the value of the padding

    def __init__(self, name: str | None = None, **config: Any) -> None:
        super().__init__(name, **config)
        size, padding = self.config["size"], self.config["padding"]
        if padding > size // 2:
            raise ConfigError(
                f"{self.type_name} '{self.name}': received padding={padding} for size={size}: "
                f"the padding must be at most half the window, {size // 2}, so that every "
                "window holds some of the input"
            )
        self.kernel: Pair = (size, size)
        self.stride: Pair = (self.config["stride"] or size,) * 2
        self.padding: Pair = (padding, padding)
        self.dilation: Pair = (1, 1)

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        c, h, w = spatial_input(self, input_shapes)
        what = f"{self.type_name} '{self.name}': window"
        size, stride, pad = self.kernel[0], self.stride[0], self.padding[0]
        return (
            c,
            window_output(h, size, stride, pad, what),
            window_output(w, size, stride, pad, what),
        )

    def _padded(self, x: np.ndarray) -> np.ndarray:
        """x with ``padding`` pixels of ``fill`` on every side (x itself without padding)."""
        p = self.padding[0]
        if not p:
            return x
        return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill)

    def _unpadded(self, dx: np.ndarray) -> np.ndarray:
        """The gradient of the padded input cropped to the input's."""
        p = self.padding[0]
        return dx[:, :, p : dx.shape[2] - p, p : dx.shape[3] - p] if p else dx


@register
class MaxPool(Pool):
    """y[n, c, oh, ow] = max of x[n, c] over the window at (stride*oh - pad, stride*ow - pad)."""

    type_name = "maxpool"
    description = "Maximum over square windows; the gradient goes to one maximum per window."
    fill = -np.inf

    def _two_by_two(self) -> bool:
        return self.kernel == self.stride == (2, 2) and self.padding == (0, 0)

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """Where each maximum was, kept for backward: three byte masks at size 2, stride 2;
        else int64 offsets, found in a copy of the windows (size*size values per output)."""
        values = math.prod(output_shape)
        if self._two_by_two():
            return -(-3 * values // 4)
        return 2 * values + self.kernel[0] ** 2 * values

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, C, Ho, Wo)."""
        (x,) = xs
        x = self._padded(x)
        self._x_shape = x.shape
        if self._two_by_two():
            y, self._where = ops.maxpool2x2_forward(x)
        else:
            y, self._where = ops.maxpool_forward(x, self.kernel[0], self.stride[0])
        return y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W); ties go to the first maximum (row-major)."""
        if self._two_by_two():
            return [ops.maxpool2x2_backward(dy, self._where, self._x_shape)]
        size, stride = self.kernel[0], self.stride[0]
        dx = ops.maxpool_backward(dy, self._where, self._x_shape, size, stride)
        return [self._unpadded(dx)]


@register
class AvgPool(Pool):
    """y[n, c, oh, ow] = mean of x[n, c] over the window at (stride*oh - pad, stride*ow - pad),
    padding counted as zeros."""

    type_name = "avgpool"
    description = "Mean over square windows."

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, C, Ho, Wo)."""
        (x,) = xs
        x = self._padded(x)
        self._x_shape = x.shape
        return ops.avgpool_forward(x, self.kernel[0], self.stride[0])

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W)."""
        dx = ops.avgpool_backward(dy, self._x_shape, self.kernel[0], self.stride[0])
        return [self._unpadded(dx)]


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


@register
class GlobalMaxPool(Layer):
    """y[n, c] = max of x[n, c] over all positions; the gradient goes to the first maximum
    (row-major)."""

    type_name = "global_maxpool"
    description = (
        "Maximum over the whole height and width: (channels, height, width) -> (channels,)."
    )

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        return spatial_input(self, input_shapes)[:1]

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The int64 position of each maximum, kept for backward."""
        return 2 * math.prod(output_shape)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, C)."""
        (x,) = xs
        self._x_shape = x.shape
        flat = x.reshape(*x.shape[:2], -1)  # (N, C, H*W)
        self._argmax = flat.argmax(axis=2)
        return np.take_along_axis(flat, self._argmax[:, :, None], axis=2)[:, :, 0]

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, C) -> dx: (N, C, H, W), zero but at each maximum."""
        n, c, h, w = self._x_shape
        dx = np.zeros((n, c, h * w), dy.dtype)
        np.put_along_axis(dx, self._argmax[:, :, None], dy[:, :, None], axis=2)
        return [dx.reshape(n, c, h, w)]
