"""The array kernels against loops and against their own adjoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnbuild import ops


@st.composite
def window_cases(draw, pad: bool = True):
    """(x_shape, kernel, stride, pad) with at least one window."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    p = draw(st.integers(0, 2)) if pad else 0
    h = draw(st.integers(max(1, kh - 2 * p), 9))
    w = draw(st.integers(max(1, kw - 2 * p), 9))
    return (n, c, h, w), (kh, kw), stride, p


def output_size(size: int, window: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - window) // stride + 1


@settings(max_examples=60, deadline=None)
@given(window_cases())
def test_im2col_places_each_pixel_at_its_row_and_column(case):
    x_shape, (kh, kw), stride, pad = case
    n, c, h, w = x_shape
    x = np.random.default_rng(0).standard_normal(x_shape)
    cols = ops.im2col(x, kh, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    assert cols.shape == (c * kh * kw, n * ho * wo)
    expected = np.empty_like(cols)
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                for sample in range(n):
                    for row in range(ho):
                        for col in range(wo):
                            value = xp[sample, ch, row * stride + i, col * stride + j]
                            expected[(ch * kh + i) * kw + j, (sample * ho + row) * wo + col] = value
    np.testing.assert_array_equal(cols, expected)


@settings(max_examples=60, deadline=None)
@given(window_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: col2im is the transpose of im2col.
    x_shape, (kh, kw), stride, pad = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    c = rng.standard_normal(ops.im2col(x, kh, kw, stride, pad).shape)
    dx = ops.col2im(c, x_shape, kh, kw, stride, pad)
    assert dx.shape == x_shape
    np.testing.assert_allclose(
        np.sum(ops.im2col(x, kh, kw, stride, pad) * c), np.sum(x * dx), rtol=1e-12
    )


@st.composite
def dilated_cases(draw):
    """(x_shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw)) with at least one window."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, (kh - 1) * dh + 1 - 2 * ph), 10))
    w = draw(st.integers(max(1, (kw - 1) * dw + 1 - 2 * pw), 10))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw)


@settings(max_examples=60, deadline=None)
@given(dilated_cases())
def test_dilated_im2col_with_per_axis_sizes_matches_the_loop(case):
    x_shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = case
    n, c, h, w = x_shape
    x = np.random.default_rng(0).standard_normal(x_shape)
    cols = ops.im2col(x, kh, kw, (sh, sw), (ph, pw), dilation=(dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    wo = (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    expected = np.empty((c, kh, kw, n, ho, wo))
    for i in range(kh):
        for j in range(kw):
            for row in range(ho):
                for col in range(wo):
                    expected[:, i, j, :, row, col] = xp[
                        :, :, row * sh + i * dh, col * sw + j * dw
                    ].T
    np.testing.assert_array_equal(cols, expected.reshape(c * kh * kw, -1))


@settings(max_examples=60, deadline=None)
@given(dilated_cases())
def test_dilated_col2im_is_the_adjoint_of_dilated_im2col(case):
    x_shape, (kh, kw), stride, pad, dilation = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    cols = ops.im2col(x, kh, kw, stride, pad, dilation=dilation)
    c = rng.standard_normal(cols.shape)
    dx = ops.col2im(c, x_shape, kh, kw, stride, pad, dilation)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * dx), rtol=1e-12)


def test_erf_matches_math_erf_to_double_precision_and_keeps_the_dtype():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 0.5, -0.5, 4.0, -4.0, 30.0, -30.0]])
    expected = [math.erf(v) for v in x]
    np.testing.assert_allclose(ops.erf(x), expected, rtol=0, atol=4e-16)
    assert ops.erf(x.astype(np.float32)).dtype == np.float32


def test_col2im_counts_how_many_windows_cover_each_pixel():
    x_shape = (1, 1, 4, 4)
    cols = ops.im2col(np.ones(x_shape), 3, 3, 1, 0)
    counts = ops.col2im(cols, x_shape, 3, 3, 1, 0)[0, 0]
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(counts, expected)


def test_conv_as_one_matrix_product_matches_the_loop():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    cols = ops.im2col(x, 3, 2, 2, 1)
    y = (w.reshape(4, -1) @ cols).reshape(4, 2, 4, 4).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(y, reference.conv2d(x, w, None, 2, 1), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(window_cases())
def test_im2col_writes_every_element_of_out(case):
    # A reused buffer holds old values (NaN here); im2col must overwrite all of them.
    x_shape, (kh, kw), stride, pad = case
    x = np.random.default_rng(8).standard_normal(x_shape)
    expected = ops.im2col(x, kh, kw, stride, pad)
    out = np.full(expected.shape, np.nan)
    assert ops.im2col(x, kh, kw, stride, pad, out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_overlap_lists_the_outputs_that_read_real_input(size, stride, pad, offset):
    out_size = max(0, (size + 2 * pad - offset - 1) // stride + 1)
    outputs, inputs = ops.overlap(offset, pad, stride, size, out_size)
    reads = [(o, stride * o + offset - pad) for o in range(out_size)]
    inside = [(o, i) for o, i in reads if 0 <= i < size]
    assert list(range(out_size))[outputs] == [o for o, _ in inside]
    assert list(range(size))[inputs] == [i for _, i in inside]


def test_kernels_accept_channel_major_input_and_return_it():
    x = np.random.default_rng(9).standard_normal((2, 3, 5, 5))
    channel_major = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    cols = ops.im2col(x, 3, 3, 1, 1)
    np.testing.assert_array_equal(ops.im2col(channel_major, 3, 3, 1, 1), cols)
    dx = ops.col2im(cols, x.shape, 3, 3, 1, 1)
    assert dx.transpose(1, 0, 2, 3).flags.c_contiguous


POOLS = [(2, 2, 4), (2, 2, 5), (3, 1, 5), (3, 2, 7), (2, 3, 8), (1, 1, 3), (4, 4, 4)]


@pytest.mark.parametrize(("size", "stride", "hw"), POOLS)
def test_pooling_kernels_match_the_loops(size, stride, hw):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, hw, hw + 1))
    y, argmax = ops.maxpool_forward(x, size, stride)
    np.testing.assert_array_equal(y, reference.maxpool2d(x, size, stride))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        ops.maxpool_backward(dy, argmax, x.shape, size, stride),
        reference.maxpool2d_backward(x, dy, size, stride),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        ops.avgpool_forward(x, size, stride), reference.avgpool2d(x, size, stride), rtol=1e-12
    )


@pytest.mark.parametrize(("size", "stride", "hw"), POOLS)
def test_maxpool_backward_sends_ties_to_the_first_maximum(size, stride, hw):
    # Few distinct values, so most windows hold ties; overlapping windows share pixels.
    x = np.random.default_rng(4).integers(0, 3, (2, 2, hw, hw)).astype(np.float64)
    y, argmax = ops.maxpool_forward(x, size, stride)
    dy = np.random.default_rng(5).standard_normal(y.shape)
    np.testing.assert_allclose(
        ops.maxpool_backward(dy, argmax, x.shape, size, stride),
        reference.maxpool2d_backward(x, dy, size, stride),
        rtol=1e-12,
    )


@pytest.mark.parametrize("hw", [(4, 4), (5, 7), (2, 3), (6, 2)])
@pytest.mark.parametrize("levels", [2, 3, 1000], ids=["ties", "some ties", "distinct"])
@pytest.mark.parametrize("layout", ["batch-major", "channel-major"])
def test_maxpool2x2_matches_the_general_kernel(hw, levels, layout):
    # Few levels make most windows hold ties: exactly one maximum per window gets dy.
    rng = np.random.default_rng(10)
    x = rng.integers(0, levels, (3, 2, *hw)).astype(np.float64)
    if layout == "channel-major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    y, argmax = ops.maxpool_forward(x, 2, 2)
    fast_y, first = ops.maxpool2x2_forward(x)
    np.testing.assert_array_equal(fast_y, y)
    dy = rng.standard_normal(y.shape)
    dx = ops.maxpool2x2_backward(dy, first, x.shape)
    np.testing.assert_array_equal(dx, ops.maxpool_backward(dy, argmax, x.shape, 2, 2))
    np.testing.assert_array_equal(dx, reference.maxpool2d_backward(x, dy, 2, 2))
    assert np.count_nonzero(dx) == np.count_nonzero(dy)


@pytest.mark.parametrize(("size", "stride", "hw"), POOLS)
def test_avgpool_backward_is_the_adjoint_of_avgpool(size, stride, hw):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, hw, hw))
    y = ops.avgpool_forward(x, size, stride)
    dy = rng.standard_normal(y.shape)
    dx = ops.avgpool_backward(dy, x.shape, size, stride)
    np.testing.assert_allclose(np.sum(y * dy), np.sum(x * dx), rtol=1e-12)


def test_kernels_keep_float32():
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 6)).astype(np.float32)
    cols = ops.im2col(x, 3, 3, 1, 1)
    assert cols.dtype == np.float32
    assert ops.col2im(cols, x.shape, 3, 3, 1, 1).dtype == np.float32
    y, argmax = ops.maxpool_forward(x, 2, 2)
    assert y.dtype == np.float32
    assert ops.maxpool_backward(y, argmax, x.shape, 2, 2).dtype == np.float32
    y, first = ops.maxpool2x2_forward(x)
    assert y.dtype == np.float32
    assert ops.maxpool2x2_backward(y, first, x.shape).dtype == np.float32
    assert ops.avgpool_forward(x, 2, 2).dtype == np.float32
    assert ops.avgpool_backward(y, x.shape, 2, 2).dtype == np.float32
