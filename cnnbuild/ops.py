"""Array kernels for convolution and pooling: window views, im2col / col2im, pooling backward.

Windows never pad on the right or bottom: a window that would run past the (padded) input
is dropped, so output sizes round down, as in ``shapes.window_output``.

Memory layout: ``im2col`` puts the channel and kernel offsets first and the batch next,
``(C*kh*kw, N*Ho*Wo)``, so that a convolution is one GEMM ``W (F, C*kh*kw) @ cols`` whose
result is ``(F, N*Ho*Wo)``. The convolution hands that back as an ``(N, F, Ho, Wo)`` transposed
view rather than copying it; ``col2im`` likewise returns a view. Every caller treats results as
ordinary arrays (any layout); only ``reshape`` of such a view copies.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def strided(start: int, stride: int, count: int) -> slice:
    """The indices start, start + stride, ..., count of them."""
    return slice(start, start + stride * count, stride)


def pad2d(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the last two axes by ``pad`` on every side; x itself when pad is 0.

    x: (..., H, W) -> (..., H + 2*pad, W + 2*pad)
    """
    if pad == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)]
    return np.pad(x, widths)


def windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Read-only view of every (kh, kw) window at the given stride; no copy.

    x: (N, C, H, W) -> (N, C, Ho, Wo, kh, kw), Ho = (H - kh) // stride + 1.
    """
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, pad: int) -> np.ndarray:
    """Unfold every window of the padded input into a column.

    x: (N, C, H, W) -> cols: (C*kh*kw, N*Ho*Wo). Rows are ordered (c, i, j), matching
    ``W.reshape(F, C*kh*kw)``; columns are ordered (n, oh, ow).
    """
    view = windows(pad2d(x, pad), kh, kw, stride)  # (N, C, Ho, Wo, kh, kw)
    n, c, ho, wo = view.shape[:4]
    # The reshape of the transposed view is the one copy im2col makes.
    return view.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)


def col2im(
    cols: np.ndarray, x_shape: tuple[int, ...], kh: int, kw: int, stride: int, pad: int
) -> np.ndarray:
    """The adjoint of ``im2col``: add each column back onto the window it came from.

    cols: (C*kh*kw, N*Ho*Wo) -> (N, C, H, W), a view of a (C, N, H + 2*pad, W + 2*pad) buffer.
    """
    n, c, h, w = x_shape
    hp, wp = h + 2 * pad, w + 2 * pad
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    patches = cols.reshape(c, kh, kw, n, ho, wo)
    out = np.zeros((c, n, hp, wp), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # Offset (i, j) of every window lands on rows i, i + stride, ... (likewise columns).
            out[:, :, strided(i, stride, ho), strided(j, stride, wo)] += patches[:, i, j]
    return out[:, :, pad : pad + h, pad : pad + w].transpose(1, 0, 2, 3)


def maxpool_forward(x: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window, and where it was.

    x: (N, C, H, W) -> y: (N, C, Ho, Wo), argmax: (N, C, Ho, Wo) int, the row-major offset
    ``i*size + j`` of the maximum inside its window (the first one on ties).
    """
    view = windows(x, size, size, stride)
    flat = view.reshape(*view.shape[:4], size * size)
    argmax = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return y, argmax


def maxpool_backward(
    dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, ...], size: int, stride: int
) -> np.ndarray:
    """Route each output gradient to the one input that was the window's maximum.

    dy, argmax: (N, C, Ho, Wo) -> dx: (N, C, H, W). Overlapping windows (stride < size)
    accumulate.
    """
    ho, wo = dy.shape[2:]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(size):
        for j in range(size):
            hit = argmax == i * size + j
            dx[:, :, strided(i, stride, ho), strided(j, stride, wo)] += np.where(hit, dy, 0)
    return dx


def avgpool_forward(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Mean over each window. x: (N, C, H, W) -> (N, C, Ho, Wo)."""
    return windows(x, size, size, stride).mean(axis=(4, 5))


def avgpool_backward(
    dy: np.ndarray, x_shape: tuple[int, ...], size: int, stride: int
) -> np.ndarray:
    """Spread each output gradient evenly over its window. dy: (N, C, Ho, Wo) -> (N, C, H, W)."""
    ho, wo = dy.shape[2:]
    share = dy / (size * size)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(size):
        for j in range(size):
            dx[:, :, strided(i, stride, ho), strided(j, stride, wo)] += share
    return dx
