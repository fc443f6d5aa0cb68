"""2-D convolution by im2col and one matrix product (one per group for grouped convolution)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild import ops
from cnnbuild.errors import ConfigError, ShapeError
from cnnbuild.layers.base import INIT, TRAINABLE, Layer, Shape, register
from cnnbuild.layers.init import init_weights
from cnnbuild.options import REQUIRED, Option, boolean, integer
from cnnbuild.shapes import Pair, dilated, divisors, pair, same_padding, window_output

# Bytes of columns that inference unfolds at a time: its memory does not grow with the batch.
CHUNK = 4 * 2**20


def sizes(minimum: int, description: str, default: Any = REQUIRED) -> Option:
    """An option given as one number (both axes) or as [height, width]."""
    return Option(_sizes_schema(minimum), description, default)


def _sizes_schema(minimum: int) -> dict[str, Any]:
    """A number or a list of two; ``minimum`` applies to numbers, ``items`` to lists, so a
    bad value gets a precise message."""
    number = {"type": "integer", "minimum": minimum}
    return {
        "type": ["integer", "array"],
        "minimum": minimum,
        "items": number,
        "minItems": 2,
        "maxItems": 2,
    }


PADDING = Option(
    {"oneOf": [{"type": "string", "enum": ["same", "valid"]}, _sizes_schema(0)]},
    "Zero padding on each side: 'valid' (none), 'same' ((kernel-1)*dilation/2, odd kernels "
    "only; keeps the size at stride 1), a number of pixels or [height, width].",
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
    """y[n, f] = sum over c in f's group, i, j of
    W[f, c, i, j] * x_padded[n, c, sh*oh + dh*i, sw*ow + dw*j] + b[f].

    With ``groups`` G, the input channels and the filters are split into G groups and the
    filters of group g see only the channels of group g (W is (F, C/G, kh, kw)); G = C is a
    depthwise convolution. After construction ``kernel``, ``stride``, ``padding`` (pixels)
    and ``dilation`` are (height, width) pairs and ``groups`` a number.
    """

    type_name = "conv"
    description = "2-D convolution over (channels, height, width) inputs, grouped or dilated."
    options: ClassVar[dict[str, Option]] = {
        "filters": integer(1, "Number of output channels."),
        "kernel": sizes(1, "Kernel size: one number, or [height, width]."),
        "stride": sizes(1, "Step between windows: one number, or [height, width].", 1),
        "padding": PADDING,
        "dilation": sizes(
            1, "Spacing between kernel taps (1: a plain convolution); or [height, width].", 1
        ),
        "groups": integer(
            1,
            "Split channels and filters into this many groups, each filter seeing its group's "
            "channels only; both must be divisible by it. Equal to the input channels: "
            "a depthwise convolution.",
            1,
        ),
        "bias": boolean("Add a learned bias per output channel.", True),
        "init": INIT,
        "trainable": TRAINABLE,
    }
    # The array kernels forward and backward use; an engine may put compiled ones in.
    unfold = staticmethod(ops.im2col)
    fold = staticmethod(ops.col2im)

    def __init__(self, name: str | None = None, **config: Any) -> None:
        super().__init__(name, **config)
        self._buffer: np.ndarray | None = None  # columns, reused from call to call
        self.kernel: Pair = pair(self.config["kernel"])
        self.stride: Pair = pair(self.config["stride"])
        self.dilation: Pair = pair(self.config["dilation"])
        self.groups: int = self.config["groups"]
        padding = self.config["padding"]
        if padding == "same":
            if self.kernel[0] % 2 == 0 or self.kernel[1] % 2 == 0:
                raise ConfigError(
                    f"conv '{self.name}': padding 'same' needs an odd kernel, "
                    f"received kernel={self.config['kernel']}"
                )
            kernels = zip(self.kernel, self.dilation, strict=True)
            self.padding: Pair = tuple(same_padding(k, d) for k, d in kernels)
        else:
            self.padding = (0, 0) if padding == "valid" else pair(padding)
        if self.config["filters"] % self.groups:
            raise ConfigError(
                f"conv '{self.name}': received filters={self.config['filters']} and "
                f"groups={self.groups}: the filters must be divisible by groups"
            )

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        c, h, w = spatial_input(self, input_shapes)
        if c % self.groups:
            raise ShapeError(
                f"conv '{self.name}': groups={self.groups} must divide the input channels, "
                f"received {c} channels {input_shapes[0]} — use one of {divisors(c)}"
            )
        sizes_out = []
        axes = zip(
            ("height", "width"),
            (h, w),
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            strict=True,
        )
        for axis, size, k, s, p, d in axes:
            what = f"conv '{self.name}': kernel"
            if isinstance(self.config["kernel"], list):
                what += f" {axis}"
            if d > 1:
                what += f" {k} dilated by {d} spans"
            sizes_out.append(window_output(size, dilated(k, d), s, p, what))
        return (self.config["filters"], *sizes_out)

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        f, ho, wo = output_shape
        kh, kw = self.kernel
        return f * (input_shapes[0][0] // self.groups) * kh * kw * ho * wo

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The im2col columns training keeps, C*kh*kw*Ho*Wo per image, in a buffer that
        backward reuses for the unfolded dy (F*kh*kw*H*W at stride 1) or joins with the
        columns of dx (col2im, another C*kh*kw*Ho*Wo)."""
        c, h, w = input_shapes[0]
        f, ho, wo = output_shape
        kh, kw = self.kernel
        columns = c * kh * kw * ho * wo
        if self._backward_by_convolution():
            return max(columns, f * kh * kw * h * w)
        return 2 * columns

    def inference_scratch(
        self, input_shapes: list[Shape], output_shape: Shape, batch_size: int
    ) -> int:
        """Inference unfolds CHUNK bytes of columns at a time, one image's at least."""
        c = input_shapes[0][0]
        _, ho, wo = output_shape
        columns = c * self.kernel[0] * self.kernel[1] * ho * wo
        return min(batch_size * columns, max(CHUNK // 4, columns))

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        self.output_shape(input_shapes)
        f, c = self.config["filters"], input_shapes[0][0]
        shapes = {"W": (f, c // self.groups, *self.kernel)}
        if self.config["bias"]:
            shapes["b"] = (f,)
        return shapes

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        shapes = self.parameter_shapes(input_shapes)
        f, c_group, kh, kw = shapes["W"]
        area = kh * kw
        weights = init_weights(
            self.config["init"], shapes["W"], c_group * area, f * area, rng, dtype
        )
        self.add_param("W", weights, decay=True)
        if "b" in shapes:
            self.add_param("b", np.zeros(shapes["b"], dtype=dtype))

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, F, Ho, Wo), a channel-major view of an (F, N, Ho, Wo) array.

        Training unfolds the whole batch into one matrix, kept for backward in a buffer
        reused from step to step: one product per pass (per group), the fewest calls into
        BLAS. Inference unfolds at most CHUNK bytes of columns at a time, so its buffer
        stays small. The columns' rows are ordered by channel, so group g's are block g.
        """
        (x,) = xs
        (kh, kw), groups = self.kernel, self.groups
        f, ho, wo = self.output_shape([x.shape[1:]])
        weights = self.params["W"].reshape(groups, f // groups, -1)  # (G, F/G, C/G*kh*kw)
        rows = x.shape[1] * kh * kw
        self._parts = [slice(0, len(x))] if train else self._chunks(x, rows * ho * wo)
        if not train and self._buffer is not None and self._buffer.nbytes > CHUNK:
            self._buffer = None  # give a training batch's memory back
        y = np.empty((f, len(x), ho, wo), x.dtype)
        for part in self._parts:
            cols = self._scratch(rows, len(x[part]) * ho * wo, x.dtype)
            self.unfold(x[part], kh, kw, self.stride, self.padding, cols, self.dilation)
            out = y[:, part].reshape(groups, f // groups, -1)
            np.matmul(weights, cols.reshape(groups, -1, cols.shape[1]), out=out)
        if self.config["bias"]:
            y += self.params["b"][:, None, None, None]
        self._x, self._cols = x, cols if train else None
        return y.transpose(1, 0, 2, 3)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: (N, F, Ho, Wo) -> dx: (N, C, H, W), channel-major; fills grads W
        (F, C/G, kh, kw) and b (F,)."""
        (kh, kw), (dh, dw), groups = self.kernel, self.dilation, self.groups
        x, weights = self._x, self.params["W"]
        f, c_group = weights.shape[:2]
        n, c, h, w = x.shape
        dx = np.empty((c, n, h, w), dy.dtype)
        # Stride 1: dx is dy, padded by (k-1)*d - pad, convolved with the kernel turned by
        # 180 degrees and its channel axes swapped; unfolding dy costs less than col2im.
        by_convolution = self._backward_by_convolution()
        turned = (
            weights[:, :, ::-1, ::-1]
            .reshape(groups, f // groups, c_group, kh, kw)
            .transpose(0, 2, 1, 3, 4)
            .reshape(groups, c_group, -1)
        )  # (G, C/G, F/G*kh*kw)
        dy_pad = ((kh - 1) * dh - self.padding[0], (kw - 1) * dw - self.padding[1])
        for part in self._weight_gradients(dy):
            dx_part = dx[:, part]  # (C, n, H, W)
            if by_convolution:
                dy_cols = self._scratch(f * kh * kw, dx_part[0].size, dy.dtype)
                self.unfold(dy[part], kh, kw, 1, dy_pad, dy_cols, self.dilation)
                dy_groups = dy_cols.reshape(groups, -1, dy_cols.shape[1])
                np.matmul(turned, dy_groups, out=dx_part.reshape(groups, c_group, -1))
            else:
                dy_rows = ops.channel_rows(dy[part]).reshape(groups, f // groups, -1)
                dcols = weights.reshape(groups, f // groups, -1).transpose(0, 2, 1) @ dy_rows
                dx_part[...] = self.fold(
                    dcols.reshape(c * kh * kw, -1),
                    x[part].shape,
                    kh,
                    kw,
                    self.stride,
                    self.padding,
                    self.dilation,
                ).transpose(1, 0, 2, 3)
        return [dx.transpose(1, 0, 2, 3)]

    def backward_params(self, dy: np.ndarray) -> None:
        for _ in self._weight_gradients(dy):
            pass

    def _backward_by_convolution(self) -> bool:
        """Whether backward finds dx as a convolution of dy (stride 1, padding at most the
        kernel's span - 1), rather than by col2im."""
        return self.stride == (1, 1) and all(
            p <= (k - 1) * d
            for p, k, d in zip(self.padding, self.kernel, self.dilation, strict=True)
        )

    def _weight_gradients(self, dy: np.ndarray) -> Iterator[slice]:
        """Fill grads W and b, part by part of the batch as forward split it, from the
        columns training kept (or x unfolded again); yields each part once its share of dW
        is added, so that backward can reuse the columns' buffer for it."""
        (kh, kw), groups = self.kernel, self.groups
        x, cols = self._x, self._cols
        self._cols = None
        f, c_group = self.params["W"].shape[:2]
        rows = x.shape[1] * kh * kw  # C*kh*kw
        dw = np.zeros((groups, c_group * kh * kw, f // groups), dy.dtype)  # dW^T per group
        for part in self._parts:
            dy_part = ops.channel_rows(dy[part]).reshape(groups, f // groups, -1)
            if cols is None:
                cols = self._scratch(rows, dy_part.shape[2], x.dtype)
                self.unfold(x[part], kh, kw, self.stride, self.padding, cols, self.dilation)
            # cols @ dy^T runs faster in OpenBLAS than dy @ cols^T
            dw += cols.reshape(groups, -1, cols.shape[1]) @ dy_part.transpose(0, 2, 1)
            cols = None
            yield part
        self.grads["W"].reshape(groups, f // groups, -1)[...] = dw.transpose(0, 2, 1)
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
