"""Slow loop versions of convolution and pooling, written to be obviously right.

Each output element is computed on its own from the definition, in float64.
"""

from __future__ import annotations

import numpy as np


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    """x: (N, C, H, W), w: (F, C, kh, kw), b: (F,) or None -> (N, F, Ho, Wo)."""
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    xp = np.zeros((n, x.shape[1], h + 2 * pad, width + 2 * pad))
    xp[:, :, pad : pad + h, pad : pad + width] = x
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (width + 2 * pad - kw) // stride + 1
    y = np.zeros((n, f, ho, wo))
    for sample in range(n):
        for filt in range(f):
            for row in range(ho):
                for col in range(wo):
                    top, left = row * stride, col * stride
                    patch = xp[sample, :, top : top + kh, left : left + kw]
                    y[sample, filt, row, col] = np.sum(patch * w[filt])
                    if b is not None:
                        y[sample, filt, row, col] += b[filt]
    return y


def _pool(x: np.ndarray, size: int, stride: int, reduce) -> np.ndarray:
    n, c, h, w = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    y = np.zeros((n, c, ho, wo))
    for sample in range(n):
        for channel in range(c):
            for row in range(ho):
                for col in range(wo):
                    top, left = row * stride, col * stride
                    window = x[sample, channel, top : top + size, left : left + size]
                    y[sample, channel, row, col] = reduce(window)
    return y


def maxpool2d(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, Ho, Wo), the maximum of each window."""
    return _pool(x, size, stride, np.max)


def avgpool2d(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, Ho, Wo), the mean of each window."""
    return _pool(x, size, stride, np.mean)


def maxpool2d_backward(x: np.ndarray, dy: np.ndarray, size: int, stride: int) -> np.ndarray:
    """x: (N, C, H, W), dy: (N, C, Ho, Wo) -> dx: each dy goes to its window's first maximum.

    "First" is in row-major order inside the window; overlapping windows add up.
    """
    n, c, ho, wo = dy.shape
    dx = np.zeros(x.shape)
    for sample in range(n):
        for channel in range(c):
            for row in range(ho):
                for col in range(wo):
                    top, left = row * stride, col * stride
                    best = (top, left)
                    for i in range(top, top + size):
                        for j in range(left, left + size):
                            if x[sample, channel, i, j] > x[sample, channel, best[0], best[1]]:
                                best = (i, j)
                    dx[sample, channel, best[0], best[1]] += dy[sample, channel, row, col]
    return dx
