"""Batch normalisation: per channel after a conv, per feature after a dense layer."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild import ops
from cnnbuild.errors import ShapeError
from cnnbuild.layers.base import Layer, Shape, register
from cnnbuild.options import Option, number


@register
class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta.

    Statistics are taken per channel over (N, H, W) for (C, H, W) inputs, per feature over N
    for (D,) inputs. Training normalises with the batch mean and biased variance and updates
    ``running = momentum * running + (1 - momentum) * batch`` with the unbiased variance
    (as PyTorch does, whose momentum is 1 - ours); inference uses the running statistics.
    Training therefore needs more than one value per channel (a ShapeError otherwise).
    """

    type_name = "batchnorm"
    description = "Batch normalisation per channel (conv inputs) or per feature (flat inputs)."
    options: ClassVar[dict[str, Option]] = {
        "momentum": number(
            "Weight of the old running statistics in each update.",
            0.9,
            minimum=0,
            exclusiveMaximum=1,
        ),
        "eps": number("Added to the variance before the square root.", 1e-5, exclusiveMinimum=0),
    }

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        (input_shape,) = input_shapes
        if len(input_shape) not in (1, 3):
            raise ShapeError(
                f"batchnorm '{self.name}' normalises (features,) or (channels, height, width) "
                f"inputs, received {input_shape} ({len(input_shape)}-D)"
            )
        return input_shape

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """One per element: at inference the layer is a per-channel scale and shift."""
        return math.prod(output_shape)

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The normalised input, kept for backward (as large as the output)."""
        return math.prod(output_shape)

    def inference_scratch(
        self, input_shapes: list[Shape], output_shape: Shape, batch_size: int
    ) -> int:
        return 0  # nothing kept at test time but the output

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        channels = self.output_shape(input_shapes)[0]
        return {"gamma": (channels,), "beta": (channels,)}

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        channels = self.output_shape(input_shapes)[0]
        return {"running_mean": (channels,), "running_var": (channels,)}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        channels = self.output_shape(input_shapes)[0]
        self.add_param("gamma", np.ones(channels, dtype))
        self.add_param("beta", np.zeros(channels, dtype))
        self.buffers = {
            "running_mean": np.zeros(channels, dtype),
            "running_var": np.ones(channels, dtype),
        }

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, D) or (N, C, H, W) -> same shape, in x's memory order."""
        (x,) = xs
        z = ops.channel_rows(x)  # (C, count)
        count = z.shape[1]
        eps = self.config["eps"]
        gamma, beta = self.params["gamma"][:, None], self.params["beta"][:, None]
        self._shape, self._train = x.shape, train
        if train:
            if count < 2:
                raise ShapeError(
                    f"batchnorm '{self.name}' needs more than one value per channel to train, "
                    f"received a batch of shape {x.shape}"
                )
            mean = z.mean(axis=1)
            xhat = z - mean[:, None]
            var = row_dots(xhat, xhat) / count
            self._inv_std = 1 / np.sqrt(var + eps)
            xhat *= self._inv_std[:, None]
            momentum = self.config["momentum"]
            for key, stat in (("running_mean", mean), ("running_var", var * count / (count - 1))):
                running = self.buffers[key]
                running *= momentum
                running += (1 - momentum) * stat
            self._cached = xhat
            y = xhat * gamma
            y += beta
        else:
            # Inference is a per-channel scale and shift; backward rebuilds xhat from z.
            self._inv_std = 1 / np.sqrt(self.buffers["running_var"] + eps)
            self._cached = z
            scale = gamma * self._inv_std[:, None]
            y = z * scale
            y += beta - self.buffers["running_mean"][:, None] * scale
        return ops.from_channel_rows(y, x.shape)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: like x -> dx: like x; fills grads gamma and beta (C,)."""
        g = ops.channel_rows(dy)
        count = g.shape[1]
        inv_std = self._inv_std[:, None]
        if self._train:
            xhat = self._cached
        else:
            xhat = self._cached - self.buffers["running_mean"][:, None]
            xhat *= inv_std
        dgamma, dbeta = row_dots(g, xhat), g.sum(axis=1)
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        scale = self.params["gamma"][:, None] * inv_std
        if not self._train:
            return [ops.from_channel_rows(g * scale, self._shape)]
        # The compact form of the gradient through the batch mean and variance:
        # dx = scale * (g - dbeta / count - xhat * dgamma / count).
        dx = xhat * (dgamma / count)[:, None]
        np.subtract(g, dx, out=dx)
        dx -= (dbeta / count)[:, None]
        dx *= scale
        return [ops.from_channel_rows(dx, self._shape)]


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum(a * b, axis=1) without the product array: a, b (C, M) -> (C,), as C BLAS dots."""
    return (a[:, None, :] @ b[:, :, None])[:, 0, 0]
