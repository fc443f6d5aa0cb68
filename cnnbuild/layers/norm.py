"""Normalisation: batch norm (per channel after a conv, per feature after a dense layer),
layer norm (per sample) and group norm (per sample and group of channels)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from cnnbuild import ops
from cnnbuild.errors import ShapeError
from cnnbuild.layers.base import TRAINABLE, Layer, Shape, register
from cnnbuild.options import Option, integer, number
from cnnbuild.shapes import divisors

EPS = number("Added to the variance before the square root.", 1e-5, exclusiveMinimum=0)


@register
class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta.

    Statistics are taken per channel over (N, H, W) for (C, H, W) inputs, per feature over N
    for (D,) inputs. Training normalises with the batch mean and biased variance and updates
    ``running = momentum * running + (1 - momentum) * batch`` with the unbiased variance
    (as PyTorch does, whose momentum is 1 - ours); inference uses the running statistics.
    Training therefore needs more than one value per channel (a ShapeError otherwise).
    A frozen layer (``trainable: false``) uses and keeps its running statistics in training
    too, as a PyTorch BatchNorm in eval mode.
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
        "eps": EPS,
        "trainable": TRAINABLE,
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
        self._shape = x.shape
        self._train = train and self.config["trainable"]  # frozen: running statistics
        if self._train:
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


def standardize(z: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row to mean 0 and variance 1: z (R, D) -> xhat (R, D), 1/sqrt(var + eps) (R,),
    with the biased variance."""
    xhat = z - z.mean(axis=1, keepdims=True)
    inv_std = 1 / np.sqrt(row_dots(xhat, xhat) / z.shape[1] + eps)
    xhat *= inv_std[:, None]
    return xhat, inv_std


def standardize_backward(dxhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """The gradient through ``standardize``: dxhat, xhat (R, D), inv_std (R,) -> dz (R, D),
    inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) per row."""
    count = dxhat.shape[1]
    dz = xhat * (row_dots(dxhat, xhat) / count)[:, None]
    np.subtract(dxhat, dz, out=dz)
    dz -= dxhat.mean(axis=1, keepdims=True)
    dz *= inv_std[:, None]
    return dz


@register
class LayerNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, with the mean and biased variance of
    each sample over all its values ((C, H, W) or (D,)), and gamma and beta of the sample's
    shape (one per value): PyTorch's LayerNorm(input_shape). No batch statistics: training
    and inference compute the same."""

    type_name = "layernorm"
    description = (
        "Layer normalisation over each sample's values (channels, height and width, or "
        "features), with a learned scale and shift per value."
    )
    options: ClassVar[dict[str, Option]] = {"eps": EPS, "trainable": TRAINABLE}

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """One per element: the scale by gamma (as batch norm's)."""
        return math.prod(output_shape)

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The normalised input, kept for backward (as large as the output)."""
        return math.prod(output_shape)

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        (shape,) = input_shapes
        return {"gamma": shape, "beta": shape}

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        (shape,) = input_shapes
        self.add_param("gamma", np.ones(shape, dtype))
        self.add_param("beta", np.zeros(shape, dtype))

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, ...) -> same shape."""
        (x,) = xs
        self._xhat, self._inv_std = standardize(x.reshape(len(x), -1), self.config["eps"])
        y = self._xhat * self.params["gamma"].reshape(-1)
        y += self.params["beta"].reshape(-1)
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: like x -> dx: like x; fills grads gamma and beta (the sample's shape)."""
        g = dy.reshape(len(dy), -1)  # (N, D)
        gamma = self.params["gamma"]
        self.grads["gamma"][...] = row_dots(g.T, self._xhat.T).reshape(gamma.shape)
        self.grads["beta"][...] = g.sum(axis=0).reshape(gamma.shape)
        dx = standardize_backward(g * gamma.reshape(-1), self._xhat, self._inv_std)
        return [dx.reshape(dy.shape)]


@register
class GroupNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, with the mean and biased variance of
    each sample's group of C/groups channels (over those channels and all positions), and
    gamma and beta per channel: PyTorch's GroupNorm. groups = 1 normalises each sample as a
    whole; groups = C, each channel on its own. Training and inference compute the same."""

    type_name = "groupnorm"
    description = (
        "Group normalisation: over each sample's groups of channels, with a learned scale and "
        "shift per channel."
    )
    options: ClassVar[dict[str, Option]] = {
        "groups": integer(1, "Number of groups the channels are split into; must divide them."),
        "eps": EPS,
        "trainable": TRAINABLE,
    }

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        (shape,) = input_shapes
        groups = self.config["groups"]
        if len(shape) not in (1, 3):
            raise ShapeError(
                f"groupnorm '{self.name}' normalises (features,) or (channels, height, width) "
                f"inputs, received {shape} ({len(shape)}-D)"
            )
        if shape[0] % groups:
            raise ShapeError(
                f"groupnorm '{self.name}': groups={groups} must divide the channels, "
                f"received {shape[0]} channels {shape} — use one of {divisors(shape[0])}"
            )
        return shape

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """One per element: the scale by gamma (as batch norm's)."""
        return math.prod(output_shape)

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """The normalised input, kept for backward (as large as the output)."""
        return math.prod(output_shape)

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        channels = self.output_shape(input_shapes)[0]
        return {"gamma": (channels,), "beta": (channels,)}

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        return {}

    def build(
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
    ) -> None:
        channels = self.output_shape(input_shapes)[0]
        self.add_param("gamma", np.ones(channels, dtype))
        self.add_param("beta", np.zeros(channels, dtype))

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """x: (N, C) or (N, C, H, W) -> same shape."""
        (x,) = xs
        n, c = x.shape[:2]
        z = x.reshape(n * self.config["groups"], -1)  # one row per sample and group
        xhat, self._inv_std = standardize(z, self.config["eps"])
        self._xhat = xhat.reshape(n, c, -1)  # (N, C, H*W)
        y = self._xhat * self.params["gamma"][:, None]
        y += self.params["beta"][:, None]
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: like x -> dx: like x; fills grads gamma and beta (C,)."""
        n, c = dy.shape[:2]
        g = dy.reshape(n, c, -1)  # (N, C, H*W)
        xhat = self._xhat
        self.grads["gamma"][...] = np.einsum("ncs,ncs->c", g, xhat)
        self.grads["beta"][...] = g.sum(axis=(0, 2))
        rows = len(self._inv_std)
        dxhat = (g * self.params["gamma"][:, None]).reshape(rows, -1)
        dx = standardize_backward(dxhat, xhat.reshape(rows, -1), self._inv_std)
        return [dx.reshape(dy.shape)]
