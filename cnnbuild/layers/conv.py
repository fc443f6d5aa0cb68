"""2-D convolution by im2col and one matrix product."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild import ops
from cnnbuild.errors import ConfigError, ShapeError
from cnnbuild.layers.base import INIT, Layer, Shape, register
from cnnbuild.layers.init import init_weights
from cnnbuild.options import Option, boolean, integer
from cnnbuild.shapes import same_padding, window_output

PADDING = Option(
    {"oneOf": [{"type": "string", "enum": ["same", "valid"]}, {"type": "integer", "minimum": 0}]},
    "Zero padding on every side: 'valid' (none), 'same' ((kernel-1)//2, odd kernels only; "
    "keeps the size at stride 1) or a number of pixels.",
    "valid",
)


def spatial_input(layer: Layer, input_shape: Shape) -> Shape:
    """Check that ``input_shape`` is (channels, height, width); ShapeError otherwise."""
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

    def output_shape(self, input_shape: Shape) -> Shape:
        _, h, w = spatial_input(self, input_shape)
        k, s = self.config["kernel"], self.config["stride"]
        what = f"conv '{self.name}': kernel"
        return (
            self.config["filters"],
            window_output(h, k, s, self.pad, what),
            window_output(w, k, s, self.pad, what),
        )

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        f, ho, wo = output_shape
        return f * input_shape[0] * self.config["kernel"] ** 2 * ho * wo

    def build(
        self, input_shape: Shape, rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        self.output_shape(input_shape)
        f, c, k = self.config["filters"], input_shape[0], self.config["kernel"]
        params = {
            "W": init_weights(self.config["init"], (f, c, k, k), c * k * k, f * k * k, rng, dtype)
        }
        if self.config["bias"]:
            params["b"] = np.zeros(f, dtype=dtype)
        self._set_params(**params)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) -> (N, F, Ho, Wo), a transposed view of an (F, N, Ho, Wo) buffer."""
        k, s = self.config["kernel"], self.config["stride"]
        f, ho, wo = self.output_shape(x.shape[1:])
        self._x_shape = x.shape
        self._cols = ops.im2col(x, k, k, s, self.pad)  # (C*k*k, N*Ho*Wo)
        y = self.params["W"].reshape(f, -1) @ self._cols  # (F, N*Ho*Wo)
        if self.config["bias"]:
            y += self.params["b"][:, None]
        return y.reshape(f, len(x), ho, wo).transpose(1, 0, 2, 3)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy: (N, F, Ho, Wo) -> dx: (N, C, H, W); fills grads W (F, C, k, k) and b (F,)."""
        k, s = self.config["kernel"], self.config["stride"]
        weights = self.params["W"]
        f = len(weights)
        # (F, N*Ho*Wo); no copy when dy has the layout of this layer's output.
        dy_mat = dy.transpose(1, 0, 2, 3).reshape(f, -1)
        self.grads["W"][...] = (dy_mat @ self._cols.T).reshape(weights.shape)
        if self.config["bias"]:
            self.grads["b"][...] = dy_mat.sum(axis=1)
        dcols = weights.reshape(f, -1).T @ dy_mat  # (C*k*k, N*Ho*Wo)
        return ops.col2im(dcols, self._x_shape, k, k, s, self.pad)
