"""Winograd's minimal filtering F(4x4, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016; the points 0, ±1, ±2 and ∞).

Each 4x4 block of outputs ("tile") is ``A^T [(G w G^T) * (B^T d B)] A`` for the 6x6 input
patch d under it: 36 products per tile and channel pair instead of im2col's 144, and the
transformed input is 2.25 times the input instead of im2col's 9. With the 36 transformed
positions as a batch, the products become 36 matrix products ``U[k] (F, C) @ V[k] (C, T)``
over the T tiles. The transforms are compiled and take a channel's tiles BLOCK at a time,
each stage one loop across the block. With few channels those products are too thin for
BLAS: ``convolve_in_cache`` then computes them compiled too, transforming, multiplying and
transforming back one block of tiles while it is in cache.

The same three transforms give the backward pass: dx is the forward transform of dy with
the kernel turned and its channel axes swapped (padding 2 - p), and dW is
``G^T [sum over tiles (A dy A^T) * (B^T d B)] G``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from cnnbuild.fast.kernels import compiled

TILE, PATCH = 4, 6  # outputs and inputs along a side of a tile
POSITIONS = PATCH * PATCH  # transformed values per tile and channel: the products' batch
BLOCK = 256  # tiles a transform takes at a time: 36 KB per stage in float32, kept in cache
# With at most this many channels in and out the products run compiled, IN_CACHE_TILES
# tiles at a time, their transforms in cache (576 KB at 32 channels): the products are too
# thin for BLAS. Forward at batch 128 measured 14 against 22 ms by BLAS for 16 channels on
# 32x32, 30 against 39 ms for 32; 64 channels were faster by BLAS (19 against 25 ms).
IN_CACHE_MAX_CHANNELS, IN_CACHE_TILES = 32, 128

G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)


@numba.njit(cache=True, inline="always")
def _constants(a):
    """2, 4, 5 and 8 in the dtype of the array ``a``: with Python's numbers, float32 maths
    would run in float64."""
    kind = a.dtype.type
    return kind(2), kind(4), kind(5), kind(8)


@numba.njit(cache=True, inline="always")
def _input_transform(k, d0, d1, d2, d3, d4, d5):
    """B^T d for six values d along a side of a patch; k: ``_constants``."""
    two, four, five, _ = k
    return (
        four * d0 - five * d2 + d4,
        d3 + d4 - four * (d1 + d2),
        d4 - d3 + four * (d1 - d2),
        d4 - d2 + two * (d3 - d1),
        d4 - d2 + two * (d1 - d3),
        four * d1 - five * d3 + d5,
    )


@numba.njit(cache=True, inline="always")
def _output_transform(k, m0, m1, m2, m3, m4, m5):
    """A^T m for six transformed values m along a side of a tile; k: ``_constants``."""
    two, four, _, eight = k
    return (
        m0 + m1 + m2 + m3 + m4,
        m1 - m2 + two * (m3 - m4),
        m1 + m2 + four * (m3 + m4),
        m1 - m2 + eight * (m3 - m4) + m5,
    )


@numba.njit(cache=True, inline="always")
def _output_adjoint(k, g0, g1, g2, g3):
    """A g for four outputs g along a side of a tile, the adjoint of ``_output_transform``;
    k: ``_constants``."""
    two, four, _, eight = k
    return (
        g0,
        g0 + g1 + g2 + g3,
        g0 - g1 + g2 - g3,
        g0 + two * g1 + four * g2 + eight * g3,
        g0 - two * g1 + four * g2 - eight * g3,
        g3,
    )


@numba.njit(cache=True, inline="always")
def _tile_place(tile, th, tw):
    """(image, tile row, tile column) of a tile's index in a batch of th x tw tiles each."""
    image, rest = divmod(tile, th * tw)
    a, b = divmod(rest, tw)
    return image, a, b


def tiles(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of 4x4 output tiles covering a (height, width) output."""
    return -(-height // TILE), -(-width // TILE)


def transform_weights(weights: np.ndarray) -> np.ndarray:
    """W (F, C, 3, 3) -> U (36, F, C) = G W G^T at each of the 36 positions (float64 maths)."""
    f, c = weights.shape[:2]
    u = np.empty((POSITIONS, f, c), weights.dtype)
    _transform_weights(np.ascontiguousarray(weights.transpose(0, 2, 3, 1)), G, u)
    return u


def weights_gradient(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_weights``: dU (36, F, C) -> dW (F, C, 3, 3)."""
    dw = np.empty((du.shape[1], 3, 3, du.shape[2]), du.dtype)
    _weights_gradient(du, G, dw)
    return dw.transpose(0, 3, 1, 2)


@compiled
def _transform_weights(w, g, u):
    """U = G W G^T from W (F, 3, 3, C), channels last: each step is one loop over channels,
    which vectorises."""
    filters, channels = w.shape[0], w.shape[3]
    for f in prange(filters):
        a = np.empty((6, 3, channels))  # G W for each channel's 3x3 kernel
        for i in range(6):
            for j in range(3):
                for c in range(channels):
                    a[i, j, c] = (
                        g[i, 0] * w[f, 0, j, c] + g[i, 1] * w[f, 1, j, c] + g[i, 2] * w[f, 2, j, c]
                    )
        for i in range(6):
            for j in range(6):
                for c in range(channels):
                    u[6 * i + j, f, c] = (
                        a[i, 0, c] * g[j, 0] + a[i, 1, c] * g[j, 1] + a[i, 2, c] * g[j, 2]
                    )


@compiled
def _weights_gradient(du, g, dw):
    """dW = G^T dU G into dw (F, 3, 3, C), channels last, as ``_transform_weights``."""
    filters, channels = du.shape[1:]
    for f in prange(filters):
        a = np.zeros((3, 6, channels))  # G^T dU
        b = np.zeros((3, 3, channels))  # G^T dU G
        for k in range(3):
            for j in range(6):
                for i in range(6):
                    for c in range(channels):
                        a[k, j, c] += g[i, k] * du[6 * i + j, f, c]
                for q in range(3):
                    for c in range(channels):
                        b[k, q, c] += a[k, j, c] * g[j, q]
        dw[f] = b


def products(u: np.ndarray, v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[k] = u[k] @ v[k] for the 36 positions, one BLAS call each (numpy's stacked matmul
    is slower for these shapes)."""
    for k in range(POSITIONS):
        np.matmul(u[k], v[k], out=out[k])
    return out


@numba.njit(cache=True, inline="always")
def _input_block(x, c, pad, th, tw, start, size, k, d, s, v, at):
    """V[6i + j, c, at + t] = (B^T d B)[i, j] for the 6x6 patch d of channel c of planes x
    (C, N, H, W) under each of the ``size`` tiles from ``start`` (n, a, b): rows from
    4a - pad, columns from 4b - pad, zero off x. d and s: (6, 6, >= size) scratch."""
    height, width = x.shape[2:]
    for t in range(size):
        image, a, b = _tile_place(start + t, th, tw)
        top, left = 4 * a - pad, 4 * b - pad
        if top >= 0 and top + 6 <= height and left >= 0 and left + 6 <= width:
            for i in range(6):
                for j in range(6):
                    d[i, j, t] = x[c, image, top + i, left + j]
        else:  # at an edge: zero off x
            for i in range(6):
                for j in range(6):
                    inside = 0 <= top + i < height and 0 <= left + j < width
                    d[i, j, t] = x[c, image, top + i, left + j] if inside else 0
    for i in range(6):
        for t in range(size):
            s0, s1, s2, s3, s4, s5 = _input_transform(
                k, d[i, 0, t], d[i, 1, t], d[i, 2, t], d[i, 3, t], d[i, 4, t], d[i, 5, t]
            )
            s[i, 0, t], s[i, 1, t], s[i, 2, t] = s0, s1, s2
            s[i, 3, t], s[i, 4, t], s[i, 5, t] = s3, s4, s5
    for j in range(6):
        for t in range(size):
            r0, r1, r2, r3, r4, r5 = _input_transform(
                k, s[0, j, t], s[1, j, t], s[2, j, t], s[3, j, t], s[4, j, t], s[5, j, t]
            )
            v[j, c, at + t], v[6 + j, c, at + t] = r0, r1
            v[12 + j, c, at + t], v[18 + j, c, at + t] = r2, r3
            v[24 + j, c, at + t], v[30 + j, c, at + t] = r4, r5


@numba.njit(cache=True, inline="always")
def _output_block(m, f, at, bias, th, tw, start, size, k, s, out, y):
    """y[f] = A^T M A + bias for the tiles from ``start`` (n, a, b), M[:, f, at + t] the
    transformed outputs of the t-th; tiles past the edge of y (odd sizes) are cut. s: (4, 6,
    >= size) and out: (4, 4, >= size) scratch."""
    height, width = y.shape[2:]
    for j in range(6):
        for t in range(size):
            s0, s1, s2, s3 = _output_transform(
                k,
                m[j, f, at + t],
                m[6 + j, f, at + t],
                m[12 + j, f, at + t],
                m[18 + j, f, at + t],
                m[24 + j, f, at + t],
                m[30 + j, f, at + t],
            )
            s[0, j, t], s[1, j, t], s[2, j, t], s[3, j, t] = s0, s1, s2, s3
    for i in range(4):
        for t in range(size):
            o0, o1, o2, o3 = _output_transform(
                k, s[i, 0, t], s[i, 1, t], s[i, 2, t], s[i, 3, t], s[i, 4, t], s[i, 5, t]
            )
            out[i, 0, t], out[i, 1, t] = o0 + bias, o1 + bias
            out[i, 2, t], out[i, 3, t] = o2 + bias, o3 + bias
    for t in range(size):
        image, a, b = _tile_place(start + t, th, tw)
        for i in range(min(4, height - 4 * a)):
            for q in range(min(4, width - 4 * b)):
                y[f, image, 4 * a + i, 4 * b + q] = out[i, q, t]


@compiled
def input_tiles(x, pad, th, tw, v):
    """V (36, C, T): ``_input_block`` for every channel and tile; parallel over channels."""
    channels = x.shape[0]
    k = _constants(v)
    tiles = v.shape[2]
    for c in prange(channels):
        d = np.empty((6, 6, BLOCK), x.dtype)  # d[i, j, t]: the patch of tile t
        s = np.empty((6, 6, BLOCK), x.dtype)
        for start in range(0, tiles, BLOCK):
            size = min(BLOCK, tiles - start)
            _input_block(x, c, pad, th, tw, start, size, k, d, s, v, start)


@compiled
def output_tiles(m, bias, th, tw, y):
    """y (F, N, H, W) = A^T M A + bias for each tile of M (36, F, T) (``_output_block``);
    parallel over filters."""
    filters = y.shape[0]
    k = _constants(y)
    tiles = m.shape[2]
    for f in prange(filters):
        s = np.empty((4, 6, BLOCK), m.dtype)
        out = np.empty((4, 4, BLOCK), m.dtype)
        for start in range(0, tiles, BLOCK):
            size = min(BLOCK, tiles - start)
            _output_block(m, f, start, bias[f], th, tw, start, size, k, s, out, y)


def convolve_in_cache(
    planes: np.ndarray,
    u: np.ndarray,
    bias: np.ndarray,
    pad: int,
    keep: np.ndarray | None,
    y: np.ndarray,
) -> None:
    """``convolve`` with the products compiled in with the transforms, IN_CACHE_TILES tiles
    at a time, so that their transforms stay in cache; x's transform also into ``keep`` (36,
    C, T) when given."""
    th, tw = tiles(*y.shape[2:])
    keep = np.empty((0, 0, 0), y.dtype) if keep is None else keep
    # Contiguous planes (a copy only when x was not channel-major, as layers hand it on):
    # one compiled version per dtype, since compiling one takes about 20 s.
    planes = np.ascontiguousarray(planes)
    _convolve_in_cache(planes, u, bias, pad, th, tw, IN_CACHE_TILES, keep, y)


@compiled
def _convolve_in_cache(x, u, bias, pad, th, tw, block, keep, y):
    channels = x.shape[0]
    filters = u.shape[1]
    tiles = x.shape[1] * th * tw
    k = _constants(y)
    for number in prange(-(-tiles // block)):
        start = number * block
        size = min(block, tiles - start)
        d = np.empty((6, 6, block), x.dtype)
        s = np.empty((6, 6, block), x.dtype)
        out = np.empty((4, 4, block), y.dtype)
        v = np.empty((POSITIONS, channels, block), x.dtype)
        m = np.empty((POSITIONS, filters, block), y.dtype)
        for c in range(channels):
            _input_block(x, c, pad, th, tw, start, size, k, d, s, v, 0)
        if keep.shape[2]:
            keep[:, :, start : start + size] = v[:, :, :size]
        for p in range(POSITIONS):
            for f in range(filters):
                row = m[p, f]
                row[:] = 0
                whole = channels - channels % 4
                for c in range(0, whole, 4):  # four channels a pass: fewer loads of the row
                    w0, w1, w2, w3 = u[p, f, c], u[p, f, c + 1], u[p, f, c + 2], u[p, f, c + 3]
                    v0, v1, v2, v3 = v[p, c], v[p, c + 1], v[p, c + 2], v[p, c + 3]
                    for t in range(size):
                        at = numba.uint64(t)  # unsigned: no wrap-around test, so it vectorises
                        row[at] += w0 * v0[at] + w1 * v1[at] + w2 * v2[at] + w3 * v3[at]
                for c in range(whole, channels):
                    weight, column = u[p, f, c], v[p, c]
                    for t in range(size):
                        at = numba.uint64(t)
                        row[at] += weight * column[at]
        for f in range(filters):
            _output_block(m, f, 0, bias[f], th, tw, start, size, k, s, out, y)


@compiled
def output_tiles_adjoint(dy, th, tw, z):
    """The adjoint of ``output_tiles`` (without bias): Z (36, F, T) = A g A^T for each 4x4
    tile g of dy (F, N, H, W), zero past its edge."""
    filters, _, height, width = dy.shape
    k = _constants(z)
    tiles = z.shape[2]
    for f in prange(filters):
        g = np.empty((4, 4, BLOCK), dy.dtype)  # g[i, q, t]: the 4x4 of dy under tile t
        r = np.empty((6, 4, BLOCK), dy.dtype)
        for start in range(0, tiles, BLOCK):
            size = min(BLOCK, tiles - start)
            for t in range(size):
                image, a, b = _tile_place(start + t, th, tw)
                for i in range(4):
                    for q in range(4):
                        inside = 4 * a + i < height and 4 * b + q < width
                        g[i, q, t] = dy[f, image, 4 * a + i, 4 * b + q] if inside else 0
            for q in range(4):
                for t in range(size):
                    r0, r1, r2, r3, r4, r5 = _output_adjoint(
                        k, g[0, q, t], g[1, q, t], g[2, q, t], g[3, q, t]
                    )
                    r[0, q, t], r[1, q, t], r[2, q, t] = r0, r1, r2
                    r[3, q, t], r[4, q, t], r[5, q, t] = r3, r4, r5
            for i in range(6):
                for t in range(size):
                    z0, z1, z2, z3, z4, z5 = _output_adjoint(
                        k, r[i, 0, t], r[i, 1, t], r[i, 2, t], r[i, 3, t]
                    )
                    z[6 * i, f, start + t], z[6 * i + 1, f, start + t] = z0, z1
                    z[6 * i + 2, f, start + t], z[6 * i + 3, f, start + t] = z2, z3
                    z[6 * i + 4, f, start + t], z[6 * i + 5, f, start + t] = z4, z5


def convolve(
    planes: np.ndarray,
    u: np.ndarray,
    bias: np.ndarray,
    pad: int,
    v: np.ndarray,
    m: np.ndarray,
    y: np.ndarray,
) -> None:
    """y (F, N, Ho, Wo) = the 3x3 stride-1 convolution of planes (C, N, H, W), zero-padded
    by ``pad``, with transformed weights U (36, F, C), plus ``bias``. Fills v (36, C, T)
    with the transformed input and uses m (36, F, T) as scratch."""
    th, tw = tiles(*y.shape[2:])
    input_tiles(planes, pad, th, tw, v)
    products(u, v, m)
    output_tiles(m, bias, th, tw, y)


def weight_products(dy: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """dU (36, F, C) = sum over tiles of (A dy A^T) * V, for dW = G^T dU G; dy (F, N, Ho,
    Wo) planes, v (36, C, T) the transformed input, z (36, F, T) scratch."""
    th, tw = tiles(*dy.shape[2:])
    output_tiles_adjoint(dy, th, tw, z)
    du = np.empty((POSITIONS, z.shape[1], v.shape[1]), dy.dtype)
    for k in range(POSITIONS):
        np.matmul(z[k], v[k].T, out=du[k])
    return du


def tile_count(n: int, height: int, width: int) -> int:
    """Tiles of a batch of n (height, width) outputs."""
    return n * math.prod(tiles(height, width))
