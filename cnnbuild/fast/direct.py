"""Direct 3x3 stride-1 convolution, compiled, for layers with few channels (a first layer on
RGB or grey images): im2col's columns would be 9 times the input for a product too thin to
run at BLAS's speed, while here each image stays in cache.

Each image's channels are copied once into a zero-padded buffer, its rows laid end to end
(a row of ``wp`` = width + 2 x padding values). An output row-major over that padded width
is then one long run: output ``t`` sums the nine taps ``pad[t + i*wp + j]``, so the whole
plane is a single loop that vectorises, and only the ``wp - wo`` values at each row's end
are thrown away.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnbuild.fast.kernels import compiled, reductions


@numba.njit(cache=True, inline="always")
def _padded(x, n, ph, pw, out):
    """Copy image n of x (N, C, H, W) into the rows of out (C, >= (H + 2ph) * wp), leaving
    the zeros around it; wp = W + 2pw."""
    channels, height, width = x.shape[1:]
    wp = width + 2 * pw
    for c in range(channels):
        for r in range(height):
            for q in range(width):
                out[c, (r + ph) * wp + q + pw] = x[n, c, r, q]


@compiled
def convolve(x, w, bias, ph, pw, y):
    """y (F, N, Ho, Wo) = the 3x3 convolution of x (N, C, H, W, any strides) with w (F, C,
    3, 3), zero-padded by (ph, pw), plus bias (F,); parallel over images."""
    images, channels, height, width = x.shape
    filters, _, ho, wo = y.shape
    wp = width + 2 * pw
    span = (ho - 1) * wp + wo  # outputs from the first to the last, across the padded rows
    for n in prange(images):
        pad = np.zeros((channels, (height + 2 * ph) * wp + 2), x.dtype)
        _padded(x, n, ph, pw, pad)
        out = np.empty(span, y.dtype)
        for f in range(filters):
            out[:] = bias[f]
            for c in range(channels):
                w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                r0, r1, r2 = pad[c], pad[c, wp:], pad[c, 2 * wp :]
                for t in range(span):
                    u = numba.uint64(t)  # unsigned: no wrap-around test, so it vectorises
                    out[u] += (
                        w00 * r0[u] + w01 * r0[u + 1] + w02 * r0[u + 2]
                        + w10 * r1[u] + w11 * r1[u + 1] + w12 * r1[u + 2]
                        + w20 * r2[u] + w21 * r2[u + 1] + w22 * r2[u + 2]
                    )  # fmt: skip
            for r in range(ho):
                for q in range(wo):
                    y[f, n, r, q] = out[r * wp + q]


@reductions
def _weight_sums(x, dy, ph, pw, parts, dw):
    """dw[p] (F, C, 3, 3) = the weight gradient summed over the p-th of ``parts`` runs of
    images, from x (N, C, H, W) and dy planes (F, N, Ho, Wo); parallel over the runs."""
    images, channels, height, width = x.shape
    filters, _, ho, wo = dy.shape
    wp = width + 2 * pw
    span = (ho - 1) * wp + wo
    step = -(-images // parts)
    zero = x.dtype.type(0)
    for p in prange(parts):
        total = dw[p]
        total[...] = 0
        pad = np.zeros((channels, (height + 2 * ph) * wp + 2), x.dtype)
        g = np.zeros((filters, span), dy.dtype)  # dy's rows, spaced as the outputs
        for n in range(p * step, min(images, (p + 1) * step)):
            _padded(x, n, ph, pw, pad)
            for f in range(filters):
                for r in range(ho):
                    for q in range(wo):
                        g[f, r * wp + q] = dy[f, n, r, q]
            for f in range(filters):
                gf = g[f]
                for c in range(channels):
                    r0, r1, r2 = pad[c], pad[c, wp:], pad[c, 2 * wp :]
                    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = zero
                    for t in range(span):
                        u = numba.uint64(t)
                        v = gf[u]
                        a00 += v * r0[u]
                        a01 += v * r0[u + 1]
                        a02 += v * r0[u + 2]
                        a10 += v * r1[u]
                        a11 += v * r1[u + 1]
                        a12 += v * r1[u + 2]
                        a20 += v * r2[u]
                        a21 += v * r2[u + 1]
                        a22 += v * r2[u + 2]
                    total[f, c, 0, 0] += a00
                    total[f, c, 0, 1] += a01
                    total[f, c, 0, 2] += a02
                    total[f, c, 1, 0] += a10
                    total[f, c, 1, 1] += a11
                    total[f, c, 1, 2] += a12
                    total[f, c, 2, 0] += a20
                    total[f, c, 2, 1] += a21
                    total[f, c, 2, 2] += a22


def weights_gradient(x: np.ndarray, dy: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """dW (F, C, 3, 3) of ``convolve`` from its input x (N, C, H, W) and dy planes (F, N,
    Ho, Wo): each thread sums a run of images (float64 across images)."""
    parts = min(numba.get_num_threads(), len(x))
    sums = np.empty((parts, dy.shape[0], x.shape[1], 3, 3))
    _weight_sums(x, dy, ph, pw, parts, sums)
    return sums.sum(axis=0).astype(x.dtype)
