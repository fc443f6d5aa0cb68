"""2-D convolution by im2col and one matrix product."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild import ops
from cnnbuild.errors import ConfigError, ShapeError
from cnnbuild.layers.base import INIT, Layer, Shape, register
from cnnbuild.layers.init import init_weights
from cnnbuild.options import Option, boolean, integer
from cnnbuild.shapes import same_padding, window_output

# Bytes of columns that inference unfolds at a time: its memory does not grow with the batch.
CHUNK = 4 * 2**20

PADDING = Option(
    {"oneOf": [{"type": "string", "enum": ["same", "valid"]}, {"type": "integer", "minimum": 0}]},
    "Zero padding on every side: 'valid' (none), 'same' ((kernel-1)//2, odd kernels only; "
    "keeps the size at stride 1) or a number of pixels.",
    "valid",
)


def spatial_input(layer: Layer, input_shapes: list[Shape]) -> Shape:
    """The one input shape, checked to be (channels, height, width); ShapeError otherwise."""
    (input_shape,) = input_shapes
    if len(input_shape) != 3:
        raise ShapeError(
            f"{layer.type_name} '{layer.name}' expects a (channels, height, width) input, "
            f"received {input_shape} ({len(input_shape)}-D); give images as (C, H, W) or use "
            "a dense layer for flat features"
        )
    return input_shape


@register
class Conv(Layer):
    """y[n, f] = sum over c, i, j of W[f, c, i, j] * x_padded[n, c, s*oh + i, s*ow + j] + b[f]."""

    type_name = "conv"
    description = "2-D convolution with square kernels over (channels, height, width) inputs."
    options: ClassVar[dict[str, Option]] = {
        "filters": integer(1, "Number of output channels."),
        "kernel": integer(1, "Kernel height and width."),
        "stride": integer(1, "Step between windows.", 1),
        "padding": PADDING,
        "bias": boolean("Add a learned bias per output channel.", True),
        "init": INIT,
    }

    def __init__(self, name: str | None = None, **config: Any) -> None:
        super().__init__(name, **config)
        self._buffer: np.ndarray | None = None  # columns, reused from call to call
        kernel = self.config["kernel"]
        if self.config["padding"] == "same" and kernel % 2 == 0:
            raise ConfigError(
                f"conv '{self.name}': padding 'same' needs an odd kernel, received kernel={kernel}"
            )

    @property
    def pad(self) -> int:
        """Padding in pixels on every side."""
        padding = self.config["padding"]
        if padding == "valid":
            return 0
        if padding == "same":
            return same_padding(self.config["kernel"])
        return padding

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        _, h, w = spatial_input(self, input_shapes)
        k, s = self.config["kernel"], self.config["stride"]
        what = f"conv '{self.name}': kernel"
        return (
            self.config["filters"],
            window_output(h, k, s, self.pad, what),
            window_output(w, k, s, self.pad, what),
        )

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        f, ho, wo = output_shape
        return f * input_shapes[0][0] * self.config["kernel"] ** 2 * ho * wo

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The im2col columns training keeps, C*k*k*Ho*Wo per image, in a buffer that
        backward reuses for the unfolded dy (F*k*k*H*W at stride 1) or joins with the
        columns of dx (col2im, another C*k*k*Ho*Wo)."""
        c, h, w = input_shapes[0]
        f, ho, wo = output_shape
        k = self.config["kernel"]
        columns = c * k * k * ho * wo
        if self.config["stride"] == 1 and self.pad < k:
            return max(columns, f * k * k * h * w)
        return 2 * columns

    def inference_scratch(
        self, input_shapes: list[Shape], output_shape: Shape, batch_size: int
    ) -> int:
        """Inference unfolds CHUNK bytes of columns at a time, one image's at least."""
        c = input_shapes[0][0]
        _, ho, wo = output_shape
        columns = c * self.config["kernel"] ** 2 * ho * wo
        return min(batch_size * columns, max(CHUNK // 4, columns))

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        self.output_shape(input_shapes)
        f, c, k = self.config["filters"], input_shapes[0][0], self.config["kernel"]
        shapes = {"W": (f, c, k, k)}
        if self.config["bias"]:
            shapes["b"] = (f,)
        return shapes

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        shapes = self.parameter_shapes(input_shapes)
        f, c, k, _ = shapes["W"]
        weights = init_weights(self.config["init"], shapes["W"], c * k * k, f * k * k, rng, dtype)
        self.add_param("W", weights, decay=True)
        if "b" in shapes:
            self.add_param("b", np.zeros(shapes["b"], dtype=dtype))

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, F, Ho, Wo), a channel-major view of an (F, N, Ho, Wo) array.

        Training unfolds the whole batch into one matrix, kept for backward in a buffer
        reused from step to step: one product per pass, the fewest calls into BLAS.
        Inference unfolds at most CHUNK bytes of columns at a time, so its buffer stays small.
        """
        (x,) = xs
        k, s = self.config["kernel"], self.config["stride"]
        f, ho, wo = self.output_shape([x.shape[1:]])
        weights = self.params["W"].reshape(f, -1)  # (F, C*k*k)
        rows = weights.shape[1]
        self._parts = [slice(0, len(x))] if train else self._chunks(x, rows * ho * wo)
        if not train and self._buffer is not None and self._buffer.nbytes > CHUNK:
            self._buffer = None  # give a training batch's memory back
        y = np.empty((f, len(x), ho, wo), x.dtype)
        for part in self._parts:
            cols = self._scratch(rows, len(x[part]) * ho * wo, x.dtype)
            ops.im2col(x[part], k, k, s, self.pad, cols)
            np.matmul(weights, cols, out=y[:, part].reshape(f, -1))
        if self.config["bias"]:
            y += self.params["b"][:, None, None, None]
        self._x, self._cols = x, cols if train else None
        return y.transpose(1, 0, 2, 3)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, F, Ho, Wo) -> dx: (N, C, H, W), channel-major; fills grads W (F, C, k, k)
        and b (F,)."""
        k, s, pad = self.config["kernel"], self.config["stride"], self.pad
        x, weights = self._x, self.params["W"]
        f, c = weights.shape[:2]
        n, _, h, w = x.shape
        dx = np.empty((c, n, h, w), dy.dtype)
        # Stride 1: dx is dy, padded by k-1-pad, convolved with the kernel turned by 180
        # degrees and its channel axes swapped; unfolding dy costs less than col2im.
        by_convolution = s == 1 and pad < k
        turned = weights[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)  # (C, F*k*k)
        for part in self._weight_gradients(dy):
            dx_part = dx[:, part]  # (C, n, H, W)
            if by_convolution:
                dy_cols = self._scratch(turned.shape[1], dx_part[0].size, dy.dtype)
                ops.im2col(dy[part], k, k, 1, k - 1 - pad, dy_cols)
                np.matmul(turned, dy_cols, out=dx_part.reshape(c, -1))
            else:
                dcols = weights.reshape(f, -1).T @ ops.channel_rows(dy[part])
                dx_part[...] = ops.col2im(dcols, x[part].shape, k, k, s, pad).transpose(1, 0, 2, 3)
        return [dx.transpose(1, 0, 2, 3)]

    def backward_params(self, dy: np.ndarray) -> None:
        for _ in self._weight_gradients(dy):
            pass

    def _weight_gradients(self, dy: np.ndarray) -> Iterator[slice]:
        """Fill grads W and b, part by part of the batch as forward split it, from the
        columns training kept (or x unfolded again); yields each part once its share of dW
        is added, so that backward can reuse the columns' buffer for it."""
        k, s = self.config["kernel"], self.config["stride"]
        x, cols = self._x, self._cols
        self._cols = None
        rows = self.params["W"][0].size  # C*k*k
        dw = np.zeros((rows, len(self.params["W"])), dy.dtype)  # dW^T
        for part in self._parts:
            dy_part = ops.channel_rows(dy[part])  # (F, n*Ho*Wo)
            if cols is None:
                cols = self._scratch(rows, dy_part.shape[1], x.dtype)
                ops.im2col(x[part], k, k, s, self.pad, cols)
            dw += cols @ dy_part.T  # runs faster in OpenBLAS than dy_part @ cols.T
            cols = None
            yield part
        self.grads["W"].reshape(len(dw.T), rows)[...] = dw.T
        if self.config["bias"]:
            np.sum(dy, axis=(0, 2, 3), out=self.grads["b"])

    def _scratch(self, rows: int, columns: int, dtype: np.dtype) -> np.ndarray:
        """A (rows, columns) view of this layer's buffer, replaced by a larger one if need be."""
        size = rows * columns
        if self._buffer is None or self._buffer.size < size or self._buffer.dtype != dtype:
            self._buffer = np.empty(size, dtype)
        return self._buffer[:size].reshape(rows, columns)

    @staticmethod
    def _chunks(x: np.ndarray, values_per_image: int) -> list[slice]:
        """Slices of x's images whose columns take at most CHUNK bytes (one image at least)."""
        step = max(1, CHUNK // (values_per_image * x.itemsize))
        return [slice(start, start + step) for start in range(0, len(x), step)]
