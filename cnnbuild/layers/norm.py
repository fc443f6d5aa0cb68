"""Batch normalisation: per channel after a conv, per feature after a dense layer."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

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

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) not in (1, 3):
            raise ShapeError(
                f"batchnorm '{self.name}' normalises (features,) or (channels, height, width) "
                f"inputs, received {input_shape} ({len(input_shape)}-D)"
            )
        return input_shape

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """One per element: at inference the layer is a per-channel scale and shift."""
        return math.prod(input_shape)

    def build(
        self, input_shape: Shape, rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        channels = self.output_shape(input_shape)[0]
        self._set_params(gamma=np.ones(channels, dtype), beta=np.zeros(channels, dtype))
        self.buffers = {
            "running_mean": np.zeros(channels, dtype),
            "running_var": np.ones(channels, dtype),
        }

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x: (N, D) or (N, C, H, W) -> same shape."""
        # Statistics are per channel (axis 1); `shape` broadcasts (C,) arrays against x.
        self._axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        if train:
            count = x.size // x.shape[1]
            if count < 2:
                raise ShapeError(
                    f"batchnorm '{self.name}' needs more than one value per channel to train, "
                    f"received a batch of shape {x.shape}"
                )
            mean = x.mean(axis=self._axes)
            var = x.var(axis=self._axes)
            momentum = self.config["momentum"]
            for key, stat in (("running_mean", mean), ("running_var", var * count / (count - 1))):
                running = self.buffers[key]
                running *= momentum
                running += (1 - momentum) * stat
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self._train = train
        self._inv_std = (1 / np.sqrt(var + self.config["eps"])).reshape(shape)
        self._xhat = (x - mean.reshape(shape)) * self._inv_std
        gamma, beta = self.params["gamma"].reshape(shape), self.params["beta"].reshape(shape)
        return gamma * self._xhat + beta

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy: like x -> dx: like x; fills grads gamma and beta (C,)."""
        dgamma = (dy * self._xhat).sum(axis=self._axes)
        dbeta = dy.sum(axis=self._axes)
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        shape = self._inv_std.shape
        scale = self.params["gamma"].reshape(shape) * self._inv_std
        if not self._train:
            return dy * scale
        # The compact form of the gradient through the batch mean and variance.
        count = dy.size // dy.shape[1]
        return (scale / count) * (
            count * dy - dbeta.reshape(shape) - self._xhat * dgamma.reshape(shape)
        )
