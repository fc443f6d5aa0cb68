"""Array kernels for convolution and pooling: im2col / col2im, max and average pooling;
and the error function.

Windows never pad on the right or bottom: a window that would run past the (padded) input
is dropped, so output sizes round down, as in ``shapes.window_output``.

Memory layout: ``im2col`` puts the channel and kernel offsets first and the batch next,
``(C*kh*kw, N*Ho*Wo)``, so that a convolution is one GEMM ``W (F, C*kh*kw) @ cols`` whose
result ``(F, N*Ho*Wo)`` holds the output channel-major, ``(F, N, Ho, Wo)`` in memory. Layers
hand such arrays on as ``(N, F, Ho, Wo)`` transposed views ("channel-major views").
Elementwise numpy operations keep the memory order of their inputs, so batch norm, ReLU,
2x2 max pooling and the next ``im2col`` all read channel-major memory without a transpose.
Every kernel here accepts any layout. ``im2col``, ``col2im`` and the 2x2 max pooling
allocate channel-major; the general pooling kernels (any size and stride) are the exception:
they allocate batch-major (C-contiguous) arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnbuild.shapes import Pair, dilated, pair


def strided(start: int, stride: int, count: int) -> slice:
    """The indices start, start + stride, ..., count of them."""
    return slice(start, start + stride * count, stride)


def channel_major(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new uninitialised (N, C, H, W) array laid out as (C, N, H, W) in memory."""
    n, c, h, w = shape
    return np.empty((c, n, h, w), dtype).transpose(1, 0, 2, 3)


def channel_rows(x: np.ndarray) -> np.ndarray:
    """The values of each channel (or feature) as one row.

    x: (N, C, H, W) -> (C, N*H*W), a view when x is channel-major (a copy otherwise);
    x: (N, D) -> (D, N), a view.
    """
    if x.ndim == 2:
        return x.T
    return x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)


def from_channel_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``channel_rows``: rows (C, count) -> a view shaped ``shape``."""
    if len(shape) == 2:
        return rows.T
    n, c, h, w = shape
    return rows.reshape(c, n, h, w).transpose(1, 0, 2, 3)


def overlap(offset: int, pad: int, stride: int, size: int, out_size: int) -> tuple[slice, slice]:
    """Along one axis, the outputs whose kernel ``offset`` reads real input, not padding.

    Output ``o`` reads input ``stride*o + offset - pad``. Returns (outputs, inputs): the
    slice of outputs for which that index lies in [0, size), and the slice of those indices.
    """
    first = min(out_size, max(0, -((offset - pad) // stride)))
    last = max(first, min(out_size, (size - 1 + pad - offset) // stride + 1))
    start = stride * first + offset - pad
    return slice(first, last), strided(start, stride, last - first)


def window_counts(
    h: int, w: int, kh: int, kw: int, stride: int | Pair, pad: int | Pair, dilation: int | Pair
) -> tuple[int, int]:
    """Rows and columns of (kh, kw) windows over an (h, w) image padded by ``pad``."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    return (h + 2 * ph - dilated(kh, dh)) // sh + 1, (w + 2 * pw - dilated(kw, dw)) // sw + 1


def windows(
    x: np.ndarray, kh: int, kw: int, stride: int | Pair, dilation: int | Pair = 1
) -> np.ndarray:
    """Read-only view of every (kh, kw) window at the given stride and dilation; no copy.

    x: (N, C, H, W) -> (N, C, Ho, Wo, kh, kw), Ho = (H - (kh-1)*dh - 1) // sh + 1.
    """
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    view = sliding_window_view(x, (dilated(kh, dh), dilated(kw, dw)), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def im2col(
    x: np.ndarray,
    kh: int,
    kw: int,
    stride: int | Pair,
    pad: int | Pair,
    out: np.ndarray | None = None,
    dilation: int | Pair = 1,
) -> np.ndarray:
    """Unfold every window of the zero-padded input into a column.

    x: (N, C, H, W), any memory layout -> cols: (C*kh*kw, N*Ho*Wo). Rows are ordered
    (c, i, j), matching ``W.reshape(F, C*kh*kw)``; columns are ordered (n, oh, ow).
    ``stride``, ``pad`` and ``dilation`` are one number or (height, width); kernel taps are
    ``dilation`` pixels apart. ``out``, a C-contiguous array of that shape, receives the
    result when given.
    """
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    ho, wo = window_counts(h, w, kh, kw, stride, pad, dilation)
    source = x.transpose(1, 0, 2, 3)  # (C, N, H, W), a view
    if ph or pw:
        source = np.zeros((c, n, h + 2 * ph, w + 2 * pw), x.dtype)
        source[:, :, ph : ph + h, pw : pw + w] = x.transpose(1, 0, 2, 3)
    view = windows(source, kh, kw, (sh, sw), (dh, dw))  # (C, N, Ho, Wo, kh, kw)
    if out is None:
        out = np.empty((c * kh * kw, n * ho * wo), x.dtype)
    # One copy of every window: the view's offsets become rows, its positions columns.
    np.copyto(out.reshape(c, kh, kw, n, ho, wo), view.transpose(0, 4, 5, 1, 2, 3))
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
    """The adjoint of ``im2col``: add each column back onto the pixels its window read.

    cols: (C*kh*kw, N*Ho*Wo) -> (N, C, H, W), a channel-major view of a new array; what
    fell on the padding is dropped.
    """
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    ho, wo = window_counts(h, w, kh, kw, stride, pad, dilation)
    patches = cols.reshape(c, kh, kw, n, ho, wo)
    out = np.zeros((c, n, h, w), dtype=cols.dtype)
    for i in range(kh):
        rows, in_rows = overlap(i * dh, ph, sh, h, ho)
        for j in range(kw):
            columns, in_columns = overlap(j * dw, pw, sw, w, wo)
            out[:, :, in_rows, in_columns] += patches[:, i, j, :, rows, columns]
    return out.transpose(1, 0, 2, 3)


def maxpool2x2_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Max over 2x2 windows at stride 2, and which element of each window was the maximum.

    x: (N, C, H, W), any layout -> y: (N, C, H//2, W//2) in x's memory order, and ``first``:
    three bool arrays shaped like y, (top row >= bottom row, top left >= top right, bottom
    left >= bottom right), which pick the first maximum in row-major order on ties.
    """
    ho, wo = x.shape[2] // 2, x.shape[3] // 2
    a, b, c, d = (x[:, :, strided(i, 2, ho), strided(j, 2, wo)] for i in (0, 1) for j in (0, 1))
    top, bottom = np.maximum(a, b), np.maximum(c, d)
    first = (top >= bottom, a >= b, c >= d)
    return np.maximum(top, bottom), first


def maxpool2x2_backward(
    dy: np.ndarray, first: tuple[np.ndarray, ...], x_shape: tuple[int, ...]
) -> np.ndarray:
    """Route each output gradient to the maximum ``maxpool2x2_forward`` picked.

    dy: (N, C, Ho, Wo) -> dx: (N, C, H, W), channel-major; rows and columns past 2*Ho and
    2*Wo (odd sizes) get zero.
    """
    in_top, left_top, left_bottom = first
    dx = channel_major(x_shape, dy.dtype)
    ho, wo = dy.shape[2:]
    if dx.shape[2] > 2 * ho or dx.shape[3] > 2 * wo:
        dx[:, :, 2 * ho :] = 0
        dx[:, :, :, 2 * wo :] = 0
    a, b, c, d = (dx[:, :, strided(i, 2, ho), strided(j, 2, wo)] for i in (0, 1) for j in (0, 1))
    # Each split is exact: g * 1 == g, g * 0 == 0, and g - g == 0. top and bottom take the
    # masks' layout (x's), whatever dy's, so that the operations below run in memory order.
    top = np.multiply(dy, in_top, out=np.empty_like(in_top, dtype=dy.dtype))
    bottom = np.subtract(dy, top, out=np.empty_like(top))
    np.multiply(top, left_top, out=a)
    np.subtract(top, a, out=b)
    np.multiply(bottom, left_bottom, out=c)
    np.subtract(bottom, c, out=d)
    return dx


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


# W. J. Cody's rational approximations of erf and erfc (Math. Comp. 23, 1969), as in CALERF:
# erf(x) for |x| <= 0.5; erfc(x) for 0.5 < x <= 4 and for x > 4. Double precision (max error
# about 2e-16 against math.erf); numpy has no erf and scipy is not a dependency.
_ERF_SMALL = (
    (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02),
    (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03),
    1.85777706184603153e-1,
    3.20937758913846947e03,
    2.84423683343917062e03,
)
_ERFC_MIDDLE = (
    (
        5.64188496988670089e-1,
        8.88314979438837594e00,
        6.61191906371416295e01,
        2.98635138197400131e02,
        8.81952221241769090e02,
        1.71204761263407058e03,
        2.05107837782607147e03,
    ),
    (
        1.57449261107098347e01,
        1.17693950891312499e02,
        5.37181101862009858e02,
        1.62138957456669019e03,
        3.29079923573345963e03,
        4.36261909014324716e03,
        3.43936767414372164e03,
    ),
    2.15311535474403846e-8,
    1.23033935479799725e03,
    1.23033935480374942e03,
)
_ERFC_LARGE = (
    (
        3.05326634961232344e-1,
        3.60344899949804439e-1,
        1.25781726111229246e-1,
        1.60837851487422766e-2,
    ),
    (
        2.56852019228982242e00,
        1.87295284992346725e00,
        5.27905102951428412e-1,
        6.05183413124413191e-2,
    ),
    1.63153871373020978e-2,
    6.58749161529837803e-4,
    2.33520497626869185e-3,
)


def _rational(z: np.ndarray, coefficients: tuple) -> np.ndarray:
    """P(z)/Q(z) in Cody's nested form, z > 0: (lead*z + p0)*z + ... + p_last over
    (z + q0)*z + ... + q_last."""
    numerators, denominators, lead, p_last, q_last = coefficients
    num, den = lead * z, z
    for p, q in zip(numerators, denominators, strict=True):
        num = (num + p) * z
        den = (den + q) * z
    return (num + p_last) / (den + q_last)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, computed in float64 and returned in x's dtype."""
    x64 = np.asarray(x, np.float64)
    y = np.abs(x64)
    out = np.empty_like(x64)
    small, large = y <= 0.5, y > 4
    middle = ~(small | large)
    out[small] = x64[small] * _rational(x64[small] ** 2, _ERF_SMALL)
    ym = y[middle]
    out[middle] = 1 - np.exp(-ym * ym) * _rational(ym, _ERFC_MIDDLE)
    yl = y[large]
    tail = (1 / math.sqrt(math.pi) - _rational(1 / (yl * yl), _ERFC_LARGE) / (yl * yl)) / yl
    out[large] = 1 - np.exp(-yl * yl) * tail
    np.copysign(out, x64, out=out)
    return out.astype(np.asarray(x).dtype, copy=False)
