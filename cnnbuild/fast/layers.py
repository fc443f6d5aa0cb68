"""The fast engine's layers: the numpy layers with their array passes replaced by the compiled
kernels. Same options, parameters and results (to float rounding); a network switches to
them in place (``cnnbuild.fast.accelerate``), so checkpoints do not change.
"""

from __future__ import annotations

import math

import numpy as np

from cnnbuild import ops
from cnnbuild.errors import ShapeError
from cnnbuild.fast import direct, kernels, winograd
from cnnbuild.layers import conv
from cnnbuild.layers.activation import ReLU
from cnnbuild.layers.base import Shape
from cnnbuild.layers.norm import BatchNorm
from cnnbuild.layers.pool import MaxPool
from cnnbuild.shapes import Pair, pair


def im2col(
    x: np.ndarray,
    kh: int,
    kw: int,
    stride: int | Pair,
    pad: int | Pair,
    out: np.ndarray | None = None,
    dilation: int | Pair = 1,
) -> np.ndarray:
    """``ops.im2col`` in one compiled pass, padding included."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    if out is None:
        ho, wo = ops.window_counts(h, w, kh, kw, stride, pad, dilation)
        out = np.empty((c * kh * kw, n * ho * wo), x.dtype)
    kernels.im2col(x.transpose(1, 0, 2, 3), kh, kw, sh, sw, ph, pw, dh, dw, out)
    return out


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, ...],
    kh: int,
    kw: int,
    stride: int | Pair,
    pad: int | Pair,
    dilation: int | Pair = 1,
) -> np.ndarray:
    """``ops.col2im`` in one compiled pass, parallel over channels."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    planes = np.empty((c, n, h, w), cols.dtype)
    kernels.col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, planes)
    return planes.transpose(1, 0, 2, 3)


# Fewer input or output channels than this and Winograd's products are too thin to run
# near BLAS's speed (measured with F(2x2, 3x3): a 3-channel first layer took twice as long
# as by im2col; with F(4x4, 3x3), cifar_resnet runs as fast with 8 as with 16, slower with 32).
WINOGRAD_MIN_CHANNELS = 16
# At most this many (filter, channel) pairs and a 3x3 stride-1 conv runs direct (direct.py).
# Measured as a first layer (forward and dW) at batch 128: 3 -> 8 channels 7.6 ms against
# 10.0 by im2col, 1 -> 4 1.7 against 2.4, but 3 -> 16 12.0 against 10.7 (im2col's dW is one
# product on the columns forward kept). With dx as well direct wins further (3 -> 16: 23
# against 54 ms); with 16 -> 16 Winograd wins.
DIRECT_MAX_PAIRS = 32


class FastConv(conv.Conv):
    """A conv on compiled kernels. 3x3, stride 1, undilated and ungrouped: direct
    (``direct.py``) with few channels, by Winograd's F(4x4, 3x3) (``winograd.py``) with
    more, its products compiled in cache up to 32 channels, by BLAS a chunk of images at a
    time beyond, its scratch buffers shared by all convs; a training forward keeps x's
    transform (2.25 times x) for dW. The rest by im2col and col2im, compiled, the products
    in BLAS."""

    unfold = staticmethod(im2col)
    fold = staticmethod(col2im)
    _v: np.ndarray | None = None  # x's Winograd transform from a training forward

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        method = self._method()
        if method == "direct":
            return self._direct_forward(*xs)
        if method == "winograd":
            return self._winograd_forward(*xs, train)
        return super().forward(xs, train)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        method = self._method()
        if method == "direct":
            return self._direct_backward(dy)
        if method == "winograd":
            return self._winograd_backward(dy)
        return super().backward(dy)

    def backward_params(self, dy: np.ndarray) -> None:
        method = self._method()
        if method == "direct":
            self._direct_weights_gradient(dy.transpose(1, 0, 2, 3))
        elif method == "winograd":
            self._winograd_weights_gradient(dy.transpose(1, 0, 2, 3))
        else:
            super().backward_params(dy)

    def _method(self) -> str:
        """How this conv runs: "direct" or "winograd" for a 3x3 stride-1 conv (padding at
        most 2) with few or with many channels, "im2col" otherwise (and between the two,
        where both would be slower)."""
        if not (
            self.kernel == (3, 3)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and max(self.padding) <= 2
        ):
            return "im2col"
        filters, channels = self.params["W"].shape[:2]
        if filters * channels <= DIRECT_MAX_PAIRS:
            return "direct"
        if min(filters, channels) >= WINOGRAD_MIN_CHANNELS and len(set(self.padding)) == 1:
            return "winograd"
        return "im2col"

    def _bias_or_zeros(self, dtype: np.dtype) -> np.ndarray:
        """The bias, or zeros for a conv without one (the kernels always add one)."""
        if self.config["bias"]:
            return self.params["b"]
        return np.zeros(self.config["filters"], dtype)

    def _turned_kernel(self) -> np.ndarray:
        """W turned by 180 degrees, its channel axes swapped: (C, F, 3, 3), contiguous; the
        kernel whose convolution of dy is dx."""
        return np.ascontiguousarray(self.params["W"][:, :, ::-1, ::-1].transpose(1, 0, 2, 3))

    def _bias_gradient(self, dy: np.ndarray) -> None:
        """grads b from dy planes (F, N, Ho, Wo), when the conv has a bias."""
        if self.config["bias"]:
            kernels.plane_sums(dy, self.grads["b"])

    def _direct_forward(self, x: np.ndarray) -> np.ndarray:
        f, ho, wo = self.output_shape([x.shape[1:]])
        bias = self._bias_or_zeros(x.dtype)
        y = np.empty((f, len(x), ho, wo), x.dtype)
        direct.convolve(x, self.params["W"], bias, *self.padding, y)
        self._x = x
        return y.transpose(1, 0, 2, 3)

    def _direct_backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dx is the direct convolution of dy with the kernel turned by 180 degrees and its
        channel axes swapped, padded by 2 - padding."""
        n, c, h, w = self._x.shape
        turned = self._turned_kernel()
        dx = np.empty((c, n, h, w), dy.dtype)
        ph, pw = self.padding
        direct.convolve(dy, turned, np.zeros(c, dy.dtype), 2 - ph, 2 - pw, dx)
        self._direct_weights_gradient(dy.transpose(1, 0, 2, 3))
        return [dx.transpose(1, 0, 2, 3)]

    def _direct_weights_gradient(self, dy: np.ndarray) -> None:
        """Fill grads W and b from dy planes (F, N, Ho, Wo)."""
        self.grads["W"][...] = direct.weights_gradient(self._x, dy, *self.padding)
        self._bias_gradient(dy)

    def _winograd_forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, c = x.shape[:2]
        f, ho, wo = self.output_shape([x.shape[1:]])
        planes = x.transpose(1, 0, 2, 3)
        u = winograd.transform_weights(self.params["W"])
        bias = self._bias_or_zeros(x.dtype)
        y = np.empty((f, n, ho, wo), x.dtype)
        budget = (TRAINING_CHUNK if train else INFERENCE_CHUNK) * conv.CHUNK
        keep = None
        if train:  # keep x's transform for dW
            shape = (winograd.POSITIONS, c, n * winograd.tile_count(1, ho, wo))
            kept = None if self._v is None else self._v.ravel()
            size = math.prod(shape)
            self._v = keep = grown(kept, size, x.dtype)[:size].reshape(shape)
        else:
            self._v = None
            release_scratch(budget)  # what training grew, evaluation does not need
        self._winograd(planes, u, bias, self.padding[0], y, keep, budget)
        self._x = x
        return y.transpose(1, 0, 2, 3)

    def _winograd_backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dx is the forward transform of dy with the kernel turned by 180 degrees and its
        channel axes swapped, padded by 2 - padding."""
        n, c, h, w = self._x.shape
        planes = dy.transpose(1, 0, 2, 3)
        self._winograd_weights_gradient(planes)
        u = winograd.transform_weights(self._turned_kernel())
        dx = np.empty((c, n, h, w), dy.dtype)
        no_bias = np.zeros(c, dy.dtype)
        budget = TRAINING_CHUNK * conv.CHUNK
        self._winograd(planes, u, no_bias, 2 - self.padding[0], dx, None, budget)
        return [dx.transpose(1, 0, 2, 3)]

    def _winograd(
        self,
        planes: np.ndarray,
        u: np.ndarray,
        bias: np.ndarray,
        pad: int,
        y: np.ndarray,
        keep: np.ndarray | None,
        budget: int,
    ) -> None:
        """y (F, N, Ho, Wo) = the convolution of planes (C, N, H, W) padded by ``pad``, by
        Winograd with transformed weights u (36, F, C); the input's transform also into
        ``keep`` (36, C, T) when given. With few channels the products are compiled in with
        the transforms, a block of tiles at a time in cache; otherwise BLAS computes them,
        on ``budget`` bytes of transforms at a time."""
        channels, n = planes.shape[:2]
        f, ho, wo = y.shape[0], *y.shape[2:]
        if max(channels, f) <= winograd.IN_CACHE_MAX_CHANNELS:
            winograd.convolve_in_cache(planes, u, bias, pad, keep, y)
            return
        per_image = winograd.tile_count(1, ho, wo)
        for part in self._winograd_chunks(n, max(channels, f), ho, wo, y.itemsize, budget):
            count = winograd.tile_count(part.stop - part.start, ho, wo)
            if keep is None:
                v = scratch("v", (winograd.POSITIONS, channels, count), y.dtype)
            else:
                v = keep[:, :, part.start * per_image : part.stop * per_image]
            m = scratch("m", (winograd.POSITIONS, f, count), y.dtype)
            winograd.convolve(planes[:, part], u, bias, pad, v, m, y[:, part])

    def _winograd_weights_gradient(self, dy: np.ndarray) -> None:
        """Fill grads W and b from dy planes (F, N, Ho, Wo) and the transform of x that a
        training forward kept (after an inference forward, x transformed again), chunk by
        chunk of images."""
        x = self._x
        f, n, ho, wo = dy.shape
        th, tw = winograd.tiles(ho, wo)
        du = np.zeros((winograd.POSITIONS, f, x.shape[1]), dy.dtype)
        channels, budget = max(x.shape[1], f), TRAINING_CHUNK * conv.CHUNK
        per_image = winograd.tile_count(1, ho, wo)
        for part in self._winograd_chunks(n, channels, ho, wo, dy.itemsize, budget):
            count = winograd.tile_count(part.stop - part.start, ho, wo)
            if self._v is None:
                v = scratch("v", (winograd.POSITIONS, x.shape[1], count), x.dtype)
                winograd.input_tiles(x[part].transpose(1, 0, 2, 3), self.padding[0], th, tw, v)
            else:
                v = self._v[:, :, part.start * per_image : part.stop * per_image]
            z = scratch("m", (winograd.POSITIONS, f, count), dy.dtype)
            du += winograd.weight_products(dy[:, part], v, z)
        self.grads["W"][...] = winograd.weights_gradient(du)
        self._bias_gradient(dy)

    @staticmethod
    def _winograd_chunks(
        n: int, channels: int, height: int, width: int, itemsize: int, budget: int
    ) -> list[slice]:
        """Chunks of the batch whose transformed arrays (36 x channels x tiles of a
        (height, width) output) take at most ``budget`` bytes, one image at least."""
        tiles = winograd.tile_count(1, height, width)
        step = max(1, budget // (winograd.POSITIONS * channels * tiles * itemsize))
        return [slice(start, min(start + step, n)) for start in range(0, n, step)]


# Bytes of transforms a Winograd conv works on at a time, in units of conv.CHUNK (4 MB).
# Measured on cifar_deep with F(4x4, 3x3): a training step takes 6 to 8% longer with 32 MB or
# 128 MB chunks than with 64 MB, and 6 to 13% longer when backward transforms x again
# instead of keeping forward's transform (which costs about 95 MB). Inference: 16 MB chunks
# were 16% faster than 4 MB ones.
TRAINING_CHUNK, INFERENCE_CHUNK = 16, 4

_SCRATCH: dict[str, np.ndarray] = {}  # what lives only within one call, shared by all convs


def scratch(key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A view of the shared scratch buffer ``key``, grown when too small."""
    size = math.prod(shape)
    _SCRATCH[key] = grown(_SCRATCH.get(key), size, dtype)
    return _SCRATCH[key][:size].reshape(shape)


def release_scratch(budget: int) -> None:
    """Drop the shared scratch buffers larger than ``budget`` bytes."""
    for key, buffer in list(_SCRATCH.items()):
        if buffer.nbytes > budget:
            del _SCRATCH[key]


def grown(buffer: np.ndarray | None, size: int, dtype: np.dtype) -> np.ndarray:
    """``buffer``, or a new one when it is missing, smaller than ``size`` or of another dtype."""
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        return np.empty(size, dtype)
    return buffer


class FastBatchNorm(BatchNorm):
    """Batch norm in two compiled passes forward and two backward, parallel over channels.

    With ``fused_relu`` (set by ``accelerate`` when a ReLU is the only reader of this
    layer's output) it also applies that ReLU and its gradient, and the ReLU passes values
    through: one pass over the activations instead of three.
    """

    fused_relu = False

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        (x,) = xs
        z = ops.channel_rows(x)  # (C, count), a view when x is channel-major
        channels, count = z.shape
        eps = self.config["eps"]
        gamma, beta = self.params["gamma"], self.params["beta"]
        self._shape = x.shape
        self._train = train and self.config["trainable"]
        y = np.empty_like(z, order="C")
        if self._train:
            if count < 2:
                raise ShapeError(
                    f"batchnorm '{self.name}' needs more than one value per channel to train, "
                    f"received a batch of shape {x.shape}"
                )
            self._mean, self._inv_std, var = (np.empty(channels, z.dtype) for _ in range(3))
            kernels.batchnorm_train_forward(
                z, gamma, beta, eps, self.fused_relu, y, self._mean, self._inv_std, var
            )
            momentum = self.config["momentum"]
            for key, stat in (("running_mean", self._mean), ("running_var", var)):
                if key == "running_var":
                    stat = stat * (count / (count - 1))
                running = self.buffers[key]
                running *= momentum
                running += (1 - momentum) * stat
        else:
            self._mean = self.buffers["running_mean"].copy()
            self._inv_std = (1 / np.sqrt(self.buffers["running_var"] + eps)).astype(z.dtype)
            self._scale = gamma * self._inv_std
            self._shift = beta - self._mean * self._scale
            kernels.batchnorm_scale_forward(z, self._scale, self._shift, self.fused_relu, y)
        self._z = z
        return ops.from_channel_rows(y, x.shape)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        g = ops.channel_rows(dy)
        dx = np.empty_like(self._z, order="C")
        grads = (self.fused_relu, dx, self.grads["gamma"], self.grads["beta"])
        if self._train:
            gamma, beta = self.params["gamma"], self.params["beta"]
            statistics = (self._mean, self._inv_std, gamma, beta)
            kernels.batchnorm_train_backward(g, self._z, *statistics, *grads)
        else:
            statistics = (self._scale, self._shift, self._mean, self._inv_std)
            kernels.batchnorm_scale_backward(g, self._z, *statistics, *grads)
        return [ops.from_channel_rows(dx, self._shape)]


class FastReLU(ReLU):
    """ReLU in one compiled pass, its gradient from the output; a pass-through when the batch
    norm before it applies it (``fused``)."""

    fused = False

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        (x,) = xs
        if self.fused:
            return x
        y = np.empty_like(x)
        kernels.relu_forward(flat(x, y), flat(y, y))
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        if self.fused:
            return [dy]
        dx = np.empty_like(self._y)
        kernels.relu_backward(flat(dy, self._y), flat(self._y, self._y), flat(dx, self._y))
        return [dx]


def flat(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """a's values as one row, in the memory order of ``like`` (a view when a is laid out as
    like; a copy otherwise). ``like`` must be contiguous in some order of its axes."""
    order = np.argsort([-stride for stride in like.strides], kind="stable")
    return np.ascontiguousarray(a.transpose(order)).reshape(-1)


class FastMaxPool(MaxPool):
    """Max pooling in one compiled pass each way, padding included, parallel over planes;
    it keeps each maximum's offset in its window (int32)."""

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(output_shape)

    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        (x,) = xs
        n, c = x.shape[:2]
        _, ho, wo = self.output_shape([x.shape[1:]])
        y = np.empty((c, n, ho, wo), x.dtype)
        self._where = np.empty((c, n, ho, wo), np.int32)
        size, stride, pad = self.kernel[0], self.stride[0], self.padding[0]
        kernels.maxpool_forward(x.transpose(1, 0, 2, 3), size, stride, pad, y, self._where)
        self._x_shape = x.shape
        return y.transpose(1, 0, 2, 3)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        n, c, h, w = self._x_shape
        dx = np.empty((c, n, h, w), dy.dtype)
        size, stride, pad = self.kernel[0], self.stride[0], self.padding[0]
        kernels.maxpool_backward(dy.transpose(1, 0, 2, 3), self._where, size, stride, pad, dx)
        return [dx.transpose(1, 0, 2, 3)]
