"""Compiled kernels of the fast engine: numba, parallel over channels or planes, one pass where
numpy needs several.

Every kernel reads channel-major data, ``(C, N, H, W)`` planes or ``(C, count)`` rows (the
engine's memory layout, see ``cnnbuild.ops``), in any strides, and writes into arrays the
caller allocates. They are compiled on first use for each dtype and cached on disk
(``cache=True``), so later runs load them in milliseconds.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import prange

# Idle OpenMP threads sleep at once instead of spinning, which would take the cores from
# the BLAS threads running the products next (read when numba starts its thread pool).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

compiled = numba.njit(parallel=True, cache=True, nogil=True)
# Sums of many terms may be reordered, so that they vectorise; nothing else is.
reductions = numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "nsz"})


# --- batch norm, with the ReLU after it fused in ------------------------------------------
# The sums may be reordered (vectorised); the affine value whose sign is the ReLU's mask is
# computed by one exact function, so forward and backward agree on every mask bit. Values
# written are computed in the arrays' dtype: a bare 0 would make numba select, and compute
# after, in float64 (batch norm backward measured 5.5 against 3.8 ms on 32 x 131072 float32
# values). Terms of the float64 sums stay float64: summed as float32, a kernel freshly compiled
# and the same kernel loaded from numba's cache gave different gradients.


@numba.njit(cache=True)
def _affine(value, mu, inv, gamma, beta):
    return (value - mu) * inv * gamma + beta


@reductions
def batchnorm_train_forward(z, gamma, beta, eps, relu, y, mean, inv_std, var):
    """Normalise each row of z (C, count) by its mean and biased variance (two passes,
    accumulated in float64), scale and shift, and clip at zero when ``relu``; fills y (C,
    count) and mean, inv_std, var (C,) in z's dtype."""
    channels, count = z.shape
    zero = y.dtype.type(0)
    for c in prange(channels):
        total = 0.0
        for m in range(count):
            total += z[c, m]
        mu = total / count
        squares = 0.0
        for m in range(count):
            d = z[c, m] - mu
            squares += d * d
        variance = squares / count
        mean[c] = mu
        var[c] = variance
        inv_std[c] = 1.0 / np.sqrt(variance + eps)
        mu, inv, w, b = mean[c], inv_std[c], gamma[c], beta[c]
        for m in range(count):
            value = _affine(z[c, m], mu, inv, w, b)
            y[c, m] = zero if relu and value <= 0 else value


@reductions
def batchnorm_train_backward(dy, z, mean, inv_std, gamma, beta, relu, dx, dgamma, dbeta):
    """Gradients of ``batchnorm_train_forward`` from its input z and statistics (the ReLU's
    mask is recomputed from z): dx = gamma*inv_std * (g - dbeta/count - xhat*dgamma/count),
    with g = dy masked by the ReLU; only the sums are in float64."""
    channels, count = z.shape
    kind = dx.dtype.type
    zero = kind(0)
    for c in prange(channels):
        mu, inv, w, b = mean[c], inv_std[c], gamma[c], beta[c]
        sum_g = 0.0
        sum_gx = 0.0
        for m in range(count):
            g = 0.0 if relu and _affine(z[c, m], mu, inv, w, b) <= 0 else dy[c, m]
            sum_g += g
            sum_gx += g * ((z[c, m] - mu) * inv)
        dgamma[c] = sum_gx
        dbeta[c] = sum_g
        scale = w * inv
        shift = kind(sum_g / count)
        slope = kind(sum_gx / count) * inv
        for m in range(count):
            g = zero if relu and _affine(z[c, m], mu, inv, w, b) <= 0 else dy[c, m]
            dx[c, m] = scale * (g - shift - (z[c, m] - mu) * slope)


@compiled
def batchnorm_scale_forward(z, scale, shift, relu, y):
    """y = z * scale + shift per row (inference), clipped at zero when ``relu``."""
    channels, count = z.shape
    zero = y.dtype.type(0)
    for c in prange(channels):
        a, b = scale[c], shift[c]
        for m in range(count):
            value = z[c, m] * a + b
            y[c, m] = zero if relu and value <= 0 else value


@reductions
def batchnorm_scale_backward(dy, z, scale, shift, mean, inv_std, relu, dx, dgamma, dbeta):
    """Gradients of ``batchnorm_scale_forward`` (running statistics: constants here)."""
    channels, count = z.shape
    for c in prange(channels):
        a, b, mu, inv = scale[c], shift[c], mean[c], inv_std[c]
        sum_g = 0.0
        sum_gx = 0.0
        for m in range(count):
            g = 0.0 if relu and z[c, m] * a + b <= 0 else dy[c, m]
            sum_g += g
            sum_gx += g * ((z[c, m] - mu) * inv)
            dx[c, m] = g * a
        dgamma[c] = sum_gx
        dbeta[c] = sum_g


# --- elementwise ---------------------------------------------------------------------------


@compiled
def relu_forward(x, y):
    """y = max(x, 0) over flat arrays."""
    zero = y.dtype.type(0)
    for i in prange(x.shape[0]):
        y[i] = zero if x[i] <= 0 else x[i]  # NaN stays NaN, as in np.maximum


@compiled
def relu_backward(dy, y, dx):
    """dx = dy where the output y was positive, else 0."""
    zero = dx.dtype.type(0)
    for i in prange(dy.shape[0]):
        dx[i] = zero if y[i] <= 0 else dy[i]


# --- pooling ------------------------------------------------------------------------------


@compiled
def maxpool_forward(x, size, stride, pad, y, where):
    """Max over each (size, size) window of planes x (C, N, H, W), padding -infinity; fills
    y (C, N, Ho, Wo) and ``where``, the row-major offset i*size + j of each window's first
    maximum (the first NaN, if any, as np.maximum would give)."""
    channels, n, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    halves = size == stride == 2 and pad == 0
    for plane in prange(channels * n):
        c, image = plane // n, plane % n
        for oh in range(ho):
            if halves and _halve_finite_rows(
                x[c, image, 2 * oh], x[c, image, 2 * oh + 1], y[c, image, oh], where[c, image, oh]
            ):
                continue
            for ow in range(wo):
                best = -np.inf
                at = 0
                for i in range(size):
                    row = oh * stride + i - pad
                    if 0 <= row < h:
                        for j in range(size):
                            col = ow * stride + j - pad
                            if 0 <= col < w:
                                value = x[c, image, row, col]
                                if value > best or (np.isnan(value) and not np.isnan(best)):
                                    best = value
                                    at = i * size + j
                y[c, image, oh, ow] = best
                where[c, image, oh, ow] = at


@numba.njit(inline="always")
def _halve_finite_rows(top, bottom, out, at):
    """The 2x2, stride-2 windows over two rows, into one output row: a loop that vectorises
    because it leaves NaN aside. Returns whether every input was finite; if not, the caller
    redoes the row with NaN's rules."""
    check = 0.0
    for ow in range(out.shape[0]):
        a, b, c, d = top[2 * ow], top[2 * ow + 1], bottom[2 * ow], bottom[2 * ow + 1]
        best, offset = a, 0
        if b > best:
            best, offset = b, 1
        if c > best:
            best, offset = c, 2
        if d > best:
            best, offset = d, 3
        out[ow], at[ow] = best, offset
        check += a * 0 + b * 0 + c * 0 + d * 0  # NaN from any NaN or infinity
    return check == 0


@compiled
def maxpool_backward(dy, where, size, stride, pad, dx):
    """Route each output gradient to its window's maximum; dx (C, N, H, W) is overwritten,
    overlapping windows accumulate."""
    channels, n = dx.shape[:2]
    ho, wo = dy.shape[2], dy.shape[3]
    for plane in prange(channels * n):
        c, image = plane // n, plane % n
        dx[c, image] = 0
        for oh in range(ho):
            for ow in range(wo):
                at = where[c, image, oh, ow]
                row = oh * stride + at // size - pad
                col = ow * stride + at % size - pad
                dx[c, image, row, col] += dy[c, image, oh, ow]


# --- convolution --------------------------------------------------------------------------


@compiled
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
    """Pad and unfold planes x (C, N, H, W) into cols (C*kh*kw, N*Ho*Wo) in one pass: row
    (c, i, j), column (n, oh, ow) holds x[c, n, sh*oh + dh*i - ph, sw*ow + dw*j - pw], zero
    off the input."""
    channels, n, h, w = x.shape
    ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    for r in prange(channels * kh * kw):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        offset = j * dw - pw
        first, last = _inside(offset, sw, w, wo)
        for image in range(n):
            for oh in range(ho):
                start = (image * ho + oh) * wo
                row = oh * sh + i * dh - ph
                if row < 0 or row >= h:
                    for ow in range(wo):
                        cols[r, start + ow] = 0
                    continue
                for ow in range(first):
                    cols[r, start + ow] = 0
                if sw == 1:  # contiguous: vectorises
                    for ow in range(first, last):
                        cols[r, start + ow] = x[c, image, row, ow + offset]
                else:
                    for ow in range(first, last):
                        cols[r, start + ow] = x[c, image, row, ow * sw + offset]
                for ow in range(last, wo):
                    cols[r, start + ow] = 0


@compiled
def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, dx):
    """The adjoint of ``im2col``: dx (C, N, H, W) is overwritten with the sum of every
    column entry on the pixel it was read from."""
    channels, n, h, w = dx.shape
    ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    for c in prange(channels):
        dx[c] = 0
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                first, last = _inside(j * dw - pw, sw, w, wo)
                offset = j * dw - pw
                for image in range(n):
                    for oh in range(ho):
                        row = oh * sh + i * dh - ph
                        if 0 <= row < h:
                            start = (image * ho + oh) * wo
                            for ow in range(first, last):
                                dx[c, image, row, ow * sw + offset] += cols[r, start + ow]


@numba.njit(inline="always")
def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@numba.njit(inline="always")
def _inside(offset, stride, size, out_size):
    """The outputs [first, last) whose input stride*o + offset lies in [0, size)."""
    first = 0 if offset >= 0 else min(out_size, (-offset + stride - 1) // stride)
    last = max(first, min(out_size, (size - 1 - offset) // stride + 1))
    return first, last


@reductions
def plane_sums(planes, out):
    """out (C,) = the sum of each channel of planes (C, N, H, W), accumulated in float64."""
    channels, n, height, width = planes.shape
    for c in prange(channels):
        total = 0.0
        for image in range(n):
            for row in range(height):
                for col in range(width):
                    total += planes[c, image, row, col]
        out[c] = total


# --- optimizers ---------------------------------------------------------------------------


@compiled
def adam_update(p, g, m, v, lr, beta1, beta2, eps, t):
    """One Adam step on flat arrays in one pass, as ``cnnbuild.optim.Adam._update``."""
    step = lr / (1 - beta1**t)
    root = np.sqrt(1 - beta2**t)
    for k in prange(p.shape[0]):
        m[k] += (g[k] - m[k]) * (1 - beta1)
        v[k] = v[k] * beta2 + g[k] * g[k] * (1 - beta2)
        p[k] -= step * (m[k] / (np.sqrt(v[k]) / root + eps))


@compiled
def momentum_update(p, g, v, lr, momentum):
    """One heavy-ball step on flat arrays in one pass, as ``cnnbuild.optim.Momentum``."""
    for k in prange(p.shape[0]):
        v[k] = v[k] * momentum + g[k]
        p[k] -= lr * v[k]
