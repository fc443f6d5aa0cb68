"""Winograd's minimal filtering F(2x2, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016).

Each 2x2 block of outputs ("tile") is ``A^T [(G w G^T) * (B^T d B)] A`` for the 4x4 input
patch d under it: 16 products per tile and channel pair instead of im2col's 36, and the
transformed input is 4 times the input instead of im2col's 9. With the 16 transformed
positions as a batch, the products become 16 matrix products ``U[k] (F, C) @ V[k] (C, T)``
over the T tiles; the transforms are compiled, vectorised across a row of tiles.

The same three transforms give the backward pass: dx is the forward transform of dy with
the kernel turned and its channel axes swapped (padding 2 - p), and dW is
``G^T [sum over tiles (A dy A^T) * (B^T d B)] G``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from cnnbuild.fast.kernels import compiled

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def tiles(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of 2x2 output tiles covering a (height, width) output."""
    return -(-height // 2), -(-width // 2)


def transform_weights(weights: np.ndarray) -> np.ndarray:
    """W (F, C, 3, 3) -> U (16, F, C) = G W G^T at each of the 16 positions (float64 maths)."""
    f, c = weights.shape[:2]
    u = np.einsum("ik,fckl,jl->ijfc", G, weights.astype(np.float64), G)
    return u.reshape(16, f, c).astype(weights.dtype)


def weights_gradient(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_weights``: dU (16, F, C) -> dW (F, C, 3, 3)."""
    f, c = du.shape[1:]
    dw = np.einsum("ik,ijfc,jl->fckl", G, du.astype(np.float64).reshape(4, 4, f, c), G)
    return dw.astype(du.dtype)


def products(u: np.ndarray, v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[k] = u[k] @ v[k] for the 16 positions, one BLAS call each (numpy's stacked matmul
    is slower for these shapes)."""
    for k in range(16):
        np.matmul(u[k], v[k], out=out[k])
    return out


@compiled
def input_tiles(x, pad, th, tw, v):
    """V[4i + j, c, tile] = (B^T d B)[i, j] for the 4x4 patch d of planes x (C, N, H, W) at
    each tile (n, a, b), rows from 2a - pad and columns from 2b - pad, zero off x."""
    channels, n, height, width = x.shape
    for c in prange(channels):
        row = np.zeros((4, 2 * tw + 2), x.dtype)  # input rows, padded with zeros
        t = np.empty((4, 4, tw), x.dtype)
        count = min(width, 2 * tw + 2 - pad)  # the input columns the tiles read
        for image in range(n):
            plane = x[c, image]
            for a in range(th):
                for i in range(4):
                    source = 2 * a - pad + i
                    if 0 <= source < height:
                        row[i, pad : pad + count] = plane[source, :count]
                    else:
                        row[i] = 0
                for j in range(4):
                    for b in range(tw):
                        d0, d1 = row[0, 2 * b + j], row[1, 2 * b + j]
                        d2, d3 = row[2, 2 * b + j], row[3, 2 * b + j]
                        t[0, j, b] = d0 - d2
                        t[1, j, b] = d1 + d2
                        t[2, j, b] = d2 - d1
                        t[3, j, b] = d1 - d3
                k = (image * th + a) * tw
                for i in range(4):
                    for b in range(tw):
                        v[4 * i, c, k + b] = t[i, 0, b] - t[i, 2, b]
                        v[4 * i + 1, c, k + b] = t[i, 1, b] + t[i, 2, b]
                        v[4 * i + 2, c, k + b] = t[i, 2, b] - t[i, 1, b]
                        v[4 * i + 3, c, k + b] = t[i, 1, b] - t[i, 3, b]


@compiled
def output_tiles(m, bias, th, tw, y):
    """y (F, N, H, W) = A^T M A + bias for each tile of M (16, F, T); tiles past the edge
    of y (odd sizes) are cut."""
    filters, n, height, width = y.shape
    for f in prange(filters):
        s = np.empty((2, 4, tw), m.dtype)
        out = np.empty((2, 2, tw), m.dtype)
        for image in range(n):
            for a in range(th):
                k = (image * th + a) * tw
                for j in range(4):
                    for b in range(tw):
                        s[0, j, b] = m[j, f, k + b] + m[4 + j, f, k + b] + m[8 + j, f, k + b]
                        s[1, j, b] = m[4 + j, f, k + b] - m[8 + j, f, k + b] - m[12 + j, f, k + b]
                for i in range(2):
                    for b in range(tw):
                        out[i, 0, b] = s[i, 0, b] + s[i, 1, b] + s[i, 2, b] + bias[f]
                        out[i, 1, b] = s[i, 1, b] - s[i, 2, b] - s[i, 3, b] + bias[f]
                for i in range(min(2, height - 2 * a)):
                    row = y[f, image, 2 * a + i]
                    for b in range(tw):
                        row[2 * b] = out[i, 0, b]
                        if 2 * b + 1 < width:
                            row[2 * b + 1] = out[i, 1, b]


@compiled
def output_tiles_adjoint(dy, th, tw, z):
    """The adjoint of ``output_tiles`` (without bias): Z (16, F, T) = A g A^T for each 2x2
    tile g of dy (F, N, H, W), zero past its edge."""
    filters, n, height, width = dy.shape
    for f in prange(filters):
        g = np.empty((2, 2, tw), dy.dtype)
        r = np.empty((4, 2, tw), dy.dtype)
        for image in range(n):
            for a in range(th):
                for i in range(2):
                    if 2 * a + i < height:
                        row = dy[f, image, 2 * a + i]
                        for b in range(tw):
                            g[i, 0, b] = row[2 * b]
                            g[i, 1, b] = row[2 * b + 1] if 2 * b + 1 < width else 0
                    else:
                        g[i] = 0
                for j in range(2):
                    for b in range(tw):
                        r[0, j, b] = g[0, j, b]
                        r[1, j, b] = g[0, j, b] + g[1, j, b]
                        r[2, j, b] = g[0, j, b] - g[1, j, b]
                        r[3, j, b] = -g[1, j, b]
                k = (image * th + a) * tw
                for i in range(4):
                    for b in range(tw):
                        z[4 * i, f, k + b] = r[i, 0, b]
                        z[4 * i + 1, f, k + b] = r[i, 0, b] + r[i, 1, b]
                        z[4 * i + 2, f, k + b] = r[i, 0, b] - r[i, 1, b]
                        z[4 * i + 3, f, k + b] = -r[i, 1, b]


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
    by ``pad``, with transformed weights U (16, F, C), plus ``bias``. Fills v (16, C, T)
    with the transformed input and uses m (16, F, T) as scratch."""
    th, tw = tiles(*y.shape[2:])
    input_tiles(planes, pad, th, tw, v)
    products(u, v, m)
    output_tiles(m, bias, th, tw, y)


def weight_products(dy: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """dU (16, F, C) = sum over tiles of (A dy A^T) * V, for dW = G^T dU G; dy (F, N, Ho,
    Wo) planes, v (16, C, T) the transformed input, z (16, F, T) scratch."""
    th, tw = tiles(*dy.shape[2:])
    output_tiles_adjoint(dy, th, tw, z)
    du = np.empty((16, z.shape[1], v.shape[1]), dy.dtype)
    for k in range(16):
        np.matmul(z[k], v[k].T, out=du[k])
    return du


def tile_count(n: int, height: int, width: int) -> int:
    """Tiles of a batch of n (height, width) outputs."""
    return n * math.prod(tiles(height, width))
