"""The fast engine (``cnnbuild[fast]``, numba kernels) against the numpy engine it replaces:
every fast layer on odd shapes, layouts and dtypes, numerical gradients, every file in
archs/, the fusion rules of ``accelerate``, PyTorch parity, and ``cnnbuild.engine.resolve``.

Skipped without numba, except in CI (``CI`` set), which installs the extra: there a missing
numba fails."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest
from conftest import ARCHS
from gradcheck import check_layer_gradients


def required(module: str, install: str, ci: str) -> Any:
    """``module`` imported; skipped when it is missing, failed when it is missing in CI
    (``ci`` says where CI installs it)."""
    if importlib.util.find_spec(module) is None and os.environ.get("CI"):
        pytest.fail(f"{module} is missing: {ci}", pytrace=False)
    return pytest.importorskip(module, reason=f"the fast engine tests need {module}: {install}")


numba = required(
    "numba", "pip install 'cnnbuild[fast]'", ".ci/run installs it (pip install -e '.[test]')"
)

from cnnbuild import engine  # noqa: E402
from cnnbuild.builder import load, loads  # noqa: E402
from cnnbuild.errors import CnnbuildError, ShapeError  # noqa: E402
from cnnbuild.fast import accelerate, winograd  # noqa: E402 (imports numba)
from cnnbuild.fast import layers as fast_layers  # noqa: E402
from cnnbuild.fast.layers import FastBatchNorm, FastConv, FastMaxPool, FastReLU  # noqa: E402
from cnnbuild.layers import conv, layer_class  # noqa: E402
from cnnbuild.layers.activation import ReLU  # noqa: E402
from cnnbuild.layers.conv import Conv  # noqa: E402
from cnnbuild.layers.norm import BatchNorm  # noqa: E402
from cnnbuild.layers.pool import MaxPool  # noqa: E402

DTYPES = {"float32": np.float32, "float64": np.float64}
# (forward, gradients) relative errors allowed against the numpy layer
TOLERANCE = {np.float32: (1e-5, 1e-4), np.float64: (1e-10, 1e-10)}
LAYOUTS = {
    # id: (layout of x, layout of dy)
    "contiguous": ("contiguous", "contiguous"),
    "channel-major": ("channel-major", "channel-major"),
    "x channel-major, dy contiguous": ("channel-major", "contiguous"),
    "x contiguous, dy channel-major": ("contiguous", "channel-major"),
}


def error(ours: np.ndarray, theirs: np.ndarray, floor: float = 1e-3) -> float:
    """max |ours - theirs| over the numpy value's largest magnitude, floored at ``floor``:
    outputs at 1e-3 (the inputs are of order 1), gradients at 1/1000 of the largest
    gradient of the layer or network (as tests/test_promise_torch.py), so that a gradient
    that is zero in exact arithmetic (a batch norm's dx over two values) is compared at the
    scale of the others, not to its own rounding noise."""
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.size == 0:
        return 0.0
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), floor))


def laid_out(a: np.ndarray, layout: str) -> np.ndarray:
    """``a`` C-contiguous, or channel-major: (N, C, H, W) over (C, N, H, W) memory, (N, D)
    over (D, N) memory, as the layers hand their outputs on."""
    if layout == "contiguous":
        return np.ascontiguousarray(a)
    if a.ndim == 2:
        return np.asfortranarray(a)
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def twins(type_name: str, config: dict, shape: tuple, dtype, fast_class, seed: int = 0):
    """The numpy layer and the fast one built from the same config and seed, with random
    parameters (biases and batch-norm scales included), the same in both."""
    layers = []
    for _ in range(2):
        layer = layer_class(type_name)("layer", **config)
        layer.build([shape], np.random.default_rng(seed), dtype)
        layers.append(layer)
    reference, fast = layers
    fast.__class__ = fast_class
    rng = np.random.default_rng(seed + 100)
    for key, param in reference.params.items():
        param[...] = rng.standard_normal(param.shape) + (1.0 if key == "gamma" else 0.0)
        fast.params[key][...] = param
    return reference, fast


def compare_passes(
    reference,
    fast,
    x: np.ndarray,
    dy: np.ndarray,
    train: bool,
    dtype,
    after: Any = None,
) -> None:
    """Forward and backward through both layers: the outputs, dx, every parameter gradient
    and every buffer (running statistics after a training forward) agree within the
    dtype's tolerance; the fast layer writes into neither x nor dy. ``after``: a numpy
    layer applied after the reference's forward, and before its backward (a fused ReLU)."""
    forward_tol, gradient_tol = TOLERANCE[dtype]
    x_copy, dy_copy = x.copy(), dy.copy()
    expected = reference.forward([x], train)
    if after is not None:
        expected = after.forward([expected], train)
    ours = fast.forward([x], train)
    assert ours.dtype == dtype and ours.shape == expected.shape
    assert error(ours, expected) <= forward_tol, ("forward", error(ours, expected))
    for key, buffer in reference.buffers.items():
        assert error(fast.buffers[key], buffer) <= forward_tol, (key, fast.buffers[key], buffer)
    g = dy if after is None else after.backward(dy)[0]
    (dx_expected,) = reference.backward(g)
    (dx,) = fast.backward(dy)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(x, x_copy, err_msg="the fast forward wrote into x")
    np.testing.assert_array_equal(dy, dy_copy, err_msg="the fast backward wrote into dy")
    assert fast.grads.keys() == reference.grads.keys()
    expected = {"dx": dx_expected, **reference.grads}
    ours = {"dx": dx, **fast.grads}
    floor = max(1e-3 * max(np.abs(grad).max() for grad in expected.values()), 1e-30)
    for key, grad in expected.items():
        assert error(ours[key], grad, floor) <= gradient_tol, (key, error(ours[key], grad, floor))


def batch(rng: np.random.Generator, n: int, shape: tuple, dtype, layout: str) -> np.ndarray:
    """n standard normal samples of ``shape``, laid out as asked."""
    return laid_out(rng.standard_normal((n, *shape)).astype(dtype), layout)


# --- conv -----------------------------------------------------------------------------------

CONVS = {
    # id: (config, per-sample input shape, batch); odd output sizes give Winograd F(4x4,
    # 3x3) partial tiles
    "k3 same": ({"filters": 4, "kernel": 3, "padding": "same"}, (3, 7, 5), 2),
    "k3 valid": ({"filters": 3, "kernel": 3}, (2, 8, 5), 1),
    "k3 pad2 no bias": ({"filters": 2, "kernel": 3, "padding": 2, "bias": False}, (3, 5, 4), 3),
    "k3 1x1 output": ({"filters": 2, "kernel": 3}, (3, 3, 3), 3),
    "k3 whole tiles": ({"filters": 3, "kernel": 3, "padding": "same"}, (2, 12, 12), 2),
    "k1": ({"filters": 3, "kernel": 1}, (2, 7, 5), 1),
    "k2 s2 valid": ({"filters": 2, "kernel": 2, "stride": 2}, (3, 7, 5), 3),
    "k5 s3 pad2": ({"filters": 2, "kernel": 5, "stride": 3, "padding": 2}, (2, 9, 7), 3),
    "k5 same batch 5": ({"filters": 3, "kernel": 5, "padding": "same"}, (2, 6, 5), 5),
    "k[3,1] s[2,1] pad[1,0]": (
        {"filters": 3, "kernel": [3, 1], "stride": [2, 1], "padding": [1, 0]},
        (2, 7, 5),
        3,
    ),
    "k3 pad[1,2]": ({"filters": 2, "kernel": 3, "padding": [1, 2]}, (2, 5, 4), 3),
    "k2 s3 (skipped pixels)": ({"filters": 2, "kernel": 2, "stride": 3}, (2, 8, 7), 1),
    "k2 pad3 (pad > kernel)": ({"filters": 2, "kernel": 2, "padding": 3}, (1, 4, 5), 3),
    "dilation 2 same": (
        {"filters": 2, "kernel": 3, "dilation": 2, "padding": "same"},
        (2, 7, 6),
        3,
    ),
    "dilation 2 s2 pad2": (
        {"filters": 3, "kernel": 3, "dilation": 2, "stride": 2, "padding": 2},
        (2, 7, 5),
        1,
    ),
    "dilation [2,1] groups 2": (
        {"filters": 4, "kernel": 2, "dilation": [2, 1], "groups": 2, "stride": 2},
        (4, 7, 5),
        3,
    ),
    "groups 2 no bias": (
        {"filters": 4, "kernel": 3, "groups": 2, "padding": 1, "bias": False},
        (2, 5, 7),
        3,
    ),
    "depthwise s2 same": (
        {"filters": 4, "kernel": 3, "groups": 4, "stride": 2, "padding": "same"},
        (4, 7, 5),
        3,
    ),
    "depthwise x2 no bias": (
        {"filters": 6, "kernel": 3, "groups": 3, "bias": False},
        (3, 5, 5),
        1,
    ),
}


# The 3x3 stride-1 cases and the methods besides im2col that take them (Winograd wants
# equal padding; its products run compiled with few channels, by BLAS with many); the rest
# go through im2col.
WINOGRAD = ("winograd in cache", "winograd by BLAS")
THREE_BY_THREE = {
    "k3 same": ("direct", *WINOGRAD),
    "k3 valid": ("direct", *WINOGRAD),
    "k3 pad2 no bias": ("direct", *WINOGRAD),
    "k3 1x1 output": ("direct", *WINOGRAD),
    "k3 whole tiles": ("direct", *WINOGRAD),
    "k3 pad[1,2]": ("direct", "im2col"),
}
CONV_PASSES = [(name, method) for name in CONVS for method in THREE_BY_THREE.get(name, ["im2col"])]


def prefer(monkeypatch, method: str) -> None:
    """Make FastConv take ``method`` wherever it can, whatever the channels: these tests use
    a few channels, where networks take direct convolution."""
    monkeypatch.setattr(fast_layers, "DIRECT_MAX_PAIRS", 10**9 if method == "direct" else 0)
    monkeypatch.setattr(fast_layers, "WINOGRAD_MIN_CHANNELS", 1)
    in_cache = 10**9 if method == "winograd in cache" else 0
    monkeypatch.setattr(winograd, "IN_CACHE_MAX_CHANNELS", in_cache)


@pytest.mark.parametrize("layouts", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(("name", "method"), CONV_PASSES, ids=[" ".join(p) for p in CONV_PASSES])
def test_fast_conv_matches_numpy_conv(monkeypatch, name, method, dtype, train, layouts):
    """FastConv's direct convolution, Winograd transforms and compiled im2col/col2im give
    the numpy conv's output and gradients for every kernel, stride, padding, dilation and
    grouping, in any input layout."""
    prefer(monkeypatch, method)
    config, shape, n = CONVS[name]
    reference, fast = twins("conv", config, shape, dtype, FastConv)
    assert fast._method() == method.split()[0]
    rng = np.random.default_rng(1)
    x = batch(rng, n, shape, dtype, layouts[0])
    dy = batch(rng, n, reference.output_shape([shape]), dtype, layouts[1])
    compare_passes(reference, fast, x, dy, train, dtype)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("name", ["dilation 2 s2 pad2", "k3 same"])
def test_fast_conv_in_inference_chunks(monkeypatch, name, dtype):
    """Inference unfolds (or transforms) one image at a time, a slice of a channel-major
    batch, when its columns would exceed conv.CHUNK: the same result as the numpy conv."""
    prefer(monkeypatch, "winograd by BLAS")
    monkeypatch.setattr(conv, "CHUNK", 1)
    config, shape, _ = CONVS[name]
    reference, fast = twins("conv", config, shape, dtype, FastConv)
    rng = np.random.default_rng(2)
    x = batch(rng, 4, shape, dtype, "channel-major")
    dy = batch(rng, 4, reference.output_shape([shape]), dtype, "channel-major")
    compare_passes(reference, fast, x, dy, False, dtype)


def test_networks_pick_direct_for_few_channels_and_winograd_for_many():
    """With the thresholds as shipped, an RGB first layer runs direct, a 16-channel 3x3
    conv by Winograd, and those between, or of other kernels, by im2col."""
    methods = {}
    for channels, filters, kernel in [(3, 8, 3), (1, 4, 3), (16, 16, 3), (3, 32, 3), (3, 8, 5)]:
        _, fast = twins(
            "conv", {"filters": filters, "kernel": kernel}, (channels, 9, 9), np.float32, FastConv
        )
        methods[channels, filters, kernel] = fast._method()
    assert methods == {
        (3, 8, 3): "direct",
        (1, 4, 3): "direct",
        (16, 16, 3): "winograd",
        (3, 32, 3): "im2col",
        (3, 8, 5): "im2col",
    }


# --- batch norm -----------------------------------------------------------------------------

BATCHNORMS = {
    # id: (config, per-sample input shape, batch)
    "conv input": ({}, (3, 5, 7), 2),
    "conv input, batch 1": ({"momentum": 0.5}, (2, 3, 1), 1),
    "flat input": ({"eps": 1e-3}, (5,), 3),
    "flat input, batch 5": ({}, (4,), 5),
}
MODES = ["training", "inference", "frozen"]


def run_batchnorm(reference, fast, n, shape, dtype, layouts, mode, fused, seed=3):
    """Train both for three steps (checking their running statistics), then compare a pass
    in ``mode``; a frozen layer gets random running statistics first."""
    rng = np.random.default_rng(seed)
    if mode == "frozen":
        mean = rng.standard_normal(shape[0]).astype(dtype)
        var = rng.uniform(0.5, 2.0, shape[0]).astype(dtype)
        for layer in (reference, fast):
            layer.buffers["running_mean"][...] = mean
            layer.buffers["running_var"][...] = var
    fast.fused_relu = fused
    after = layer_class("relu")("relu") if fused else None
    if mode == "inference":
        for _ in range(3):
            x = batch(rng, n, shape, dtype, layouts[0]) * 2 + 0.5
            reference.forward([x], True)
            fast.forward([x], True)
            for key, buffer in reference.buffers.items():
                assert error(fast.buffers[key], buffer) <= TOLERANCE[dtype][0], key
    x = batch(rng, n, shape, dtype, layouts[0]) * 2 + 0.5
    dy = batch(rng, n, shape, dtype, layouts[1])
    compare_passes(reference, fast, x, dy, mode != "inference", dtype, after)


@pytest.mark.parametrize("layouts", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused relu"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", BATCHNORMS.values(), ids=BATCHNORMS.keys())
def test_fast_batchnorm_matches_numpy_batchnorm(case, dtype, mode, fused, layouts):
    """FastBatchNorm (with the ReLU after it fused in, or not) gives the numpy batch norm's
    (followed by the numpy ReLU) output, gradients and running statistics, in training,
    in inference after training steps, and frozen."""
    config, shape, n = case
    config = {**config, "trainable": mode != "frozen"}
    reference, fast = twins("batchnorm", config, shape, dtype, FastBatchNorm)
    run_batchnorm(reference, fast, n, shape, dtype, layouts, mode, fused)


def test_fast_batchnorm_needs_two_values_per_channel_to_train():
    """As the numpy layer: a ShapeError, not a division by zero, for one value per channel."""
    _, fast = twins("batchnorm", {}, (4,), np.float64, FastBatchNorm)
    with pytest.raises(ShapeError, match="more than one value per channel"):
        fast.forward([np.ones((1, 4))], True)


# --- relu -----------------------------------------------------------------------------------

RELUS = {"conv input": ((3, 4, 5), 2), "flat input": ((7,), 3), "1x1, batch 1": ((2, 1, 1), 1)}


@pytest.mark.parametrize("layouts", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", RELUS.values(), ids=RELUS.keys())
def test_fast_relu_matches_numpy_relu(case, dtype, layouts):
    """FastReLU's output and gradient, exact zeros (of both signs) included."""
    shape, n = case
    reference, fast = twins("relu", {}, shape, dtype, FastReLU)
    rng = np.random.default_rng(4)
    values = rng.standard_normal((n, *shape))
    values.reshape(-1)[::4] = 0.0
    values.reshape(-1)[2::7] = -0.0
    x = laid_out(values.astype(dtype), layouts[0])
    dy = batch(rng, n, shape, dtype, layouts[1])
    compare_passes(reference, fast, x, dy, True, dtype)
    assert fast.forward([x], True).strides == x.strides  # keeps the layout


def test_fused_fast_relu_passes_values_and_gradients_through():
    """A fused ReLU leaves the work to the batch norm before it: the very same arrays."""
    _, fast = twins("relu", {}, (3,), np.float64, FastReLU)
    fast.fused = True
    x, dy = np.full((2, 3), -1.0), np.ones((2, 3))
    assert fast.forward([x], True) is x
    assert fast.backward(dy)[0] is dy


# --- max pooling ----------------------------------------------------------------------------

MAXPOOLS = {
    # id: (config, per-sample input shape, batch)
    "2x2": ({"size": 2}, (2, 6, 4), 3),
    "2x2 odd size": ({"size": 2}, (1, 5, 7), 1),
    "size 2 pad 1": ({"size": 2, "padding": 1}, (2, 5, 4), 3),
    "size 2 stride 3": ({"size": 2, "stride": 3}, (2, 7, 8), 3),
    "size 3 stride 1": ({"size": 3, "stride": 1}, (2, 5, 5), 3),
    "size 3 stride 2 pad 1": ({"size": 3, "stride": 2, "padding": 1}, (3, 7, 5), 1),
    "size 3 stride 3": ({"size": 3}, (2, 7, 5), 3),
    "size 3 stride 1 pad 1": ({"size": 3, "stride": 1, "padding": 1}, (1, 4, 3), 5),
    "1x1 output": ({"size": 3}, (2, 3, 3), 3),
}


@pytest.mark.parametrize("layouts", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("values", ["distinct", "ties", "non-finite"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", MAXPOOLS.values(), ids=MAXPOOLS.keys())
def test_fast_maxpool_matches_numpy_maxpool(case, dtype, values, layouts):
    """FastMaxPool's output and gradient; with ties (few distinct values, all negative
    under padding) each gradient goes to the first maximum in row-major order, as numpy's.
    Non-finite inputs give numpy's outputs: NaN where a window holds one, else the maximum
    with infinities compared as numbers."""
    config, shape, n = case
    reference, fast = twins("maxpool", config, shape, dtype, FastMaxPool)
    rng = np.random.default_rng(5)
    if values == "distinct":
        x = batch(rng, n, shape, dtype, layouts[0])
    else:
        x = rng.integers(-3, 0, (n, *shape)).astype(dtype)
        if values == "non-finite":
            x.flat[rng.choice(x.size, 3 * x.size // 4, replace=False)] = np.nan
            x.flat[rng.choice(x.size, x.size // 4, replace=False)] = np.inf
            x.flat[rng.choice(x.size, x.size // 4, replace=False)] = -np.inf
        x = laid_out(x, layouts[0])
    dy = batch(rng, n, reference.output_shape([shape]), dtype, layouts[1])
    if values == "non-finite":
        np.testing.assert_array_equal(fast.forward([x], True), reference.forward([x], True))
        return
    compare_passes(reference, fast, x, dy, True, dtype)
    if values == "ties":  # the same element, not just the same sum
        (dx,) = fast.backward(dy)
        np.testing.assert_array_equal(dx != 0, reference.backward(dy)[0] != 0)


# --- numerical gradients --------------------------------------------------------------------

GRADCHECKS = {
    # id: (type, config, per-sample input shape, batch, fast class); small, as every value
    # costs two forward passes
    "conv depthwise x2": ("conv", CONVS["depthwise x2 no bias"][0], (3, 4, 4), 2, FastConv),
    "conv k[3,1] s[2,1]": ("conv", CONVS["k[3,1] s[2,1] pad[1,0]"][0], (2, 5, 3), 2, FastConv),
    "conv dilation 2 s2": ("conv", CONVS["dilation 2 s2 pad2"][0], (2, 5, 5), 1, FastConv),
    "conv groups 2 stride 1": ("conv", CONVS["groups 2 no bias"][0], (2, 4, 5), 2, FastConv),
    "conv k3 pad 1": ("conv", CONVS["k3 same"][0], (2, 5, 3), 2, FastConv),
    "conv k3 pad 2": ("conv", CONVS["k3 pad2 no bias"][0], (2, 3, 4), 1, FastConv),
    "relu": ("relu", {}, (2, 3, 4), 2, FastReLU),
    "maxpool size 3 stride 2 pad 1": (
        "maxpool",
        MAXPOOLS["size 3 stride 2 pad 1"][0],
        (2, 5, 5),
        2,
        FastMaxPool,
    ),
    "maxpool 2x2": ("maxpool", {"size": 2}, (1, 5, 7), 2, FastMaxPool),
}
GRADCHECK_PASSES = [
    (name, train, method)
    for name in GRADCHECKS
    for train in ([True, False] if name.startswith("conv") else [True])  # conv: two paths
    for method in (("direct", *WINOGRAD) if name.startswith("conv k3") else ("",))
]


@pytest.fixture
def one_thread():
    """The kernels on one thread: a gradient check calls them hundreds of times on tiny
    arrays, and threads waiting on each other (on a busy machine) would cost most of it."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("name", "train", "method"),
    GRADCHECK_PASSES,
    ids=[
        " ".join([name, "train" if train else "inference", method]).strip()
        for name, train, method in GRADCHECK_PASSES
    ],
)
def test_fast_layer_gradients_match_central_differences(monkeypatch, name, train, method):
    """Each fast layer's backward is the derivative of its own forward (float64)."""
    type_name, config, shape, n, fast_class = GRADCHECKS[name]
    _, fast = twins(type_name, config, shape, np.float64, fast_class)
    if method:
        prefer(monkeypatch, method)
        assert fast._method() == method.split()[0]
    x = np.random.default_rng(6).standard_normal((n, *shape))
    x += np.where(x >= 0, 0.05, -0.05)  # away from the ReLU's kink
    check_layer_gradients(fast, [laid_out(x, "channel-major")], train=train)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused relu"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(2, 3, 3), (4,)], ids=["conv input", "flat input"])
def test_fast_batchnorm_gradients_match_central_differences(shape, mode, fused):
    """FastBatchNorm's backward, the fused ReLU's mask included, is the derivative of its
    forward; the inputs keep every output 1000 difference steps from the ReLU's kink."""
    config = {"trainable": mode != "frozen"}
    without_relu, fast = twins("batchnorm", config, shape, np.float64, FastBatchNorm, seed=7)
    rng = np.random.default_rng(8)
    mean, var = rng.standard_normal(shape[0]), rng.uniform(0.5, 2.0, shape[0])
    for layer in (without_relu, fast):
        layer.buffers["running_mean"][...] = mean
        layer.buffers["running_var"][...] = var
    fast.fused_relu = fused
    x = rng.standard_normal((3, *shape))
    train = mode != "inference"
    assert np.abs(without_relu.forward([x], train)).min() > 1e-3  # 1000 steps h from the kink
    check_layer_gradients(fast, [x], train=train)


# --- whole networks -------------------------------------------------------------------------


def compare_networks(reference, fast, x, labels, tolerance=1e-9) -> None:
    """A training step's outputs, gradients and running statistics, then an inference
    pass's outputs, agree between the two networks."""
    expected = reference.forward(x, True)
    ours = fast.forward(x, True)
    assert error(ours, expected) <= tolerance, ("training output", error(ours, expected))
    reference.backward_loss(labels)
    fast.backward_loss(labels)
    grads = fast.grads
    scale = 1e-3 * max(np.abs(g).max() for g in reference.grads.values())
    for key, grad in reference.grads.items():
        assert error(grads[key], grad, scale) <= tolerance, (key, error(grads[key], grad, scale))
    buffers = fast.buffers
    for key, buffer in reference.buffers.items():
        assert error(buffers[key], buffer) <= tolerance, key
    expected, ours = reference.forward(x), fast.forward(x)
    assert error(ours, expected) <= tolerance, ("inference output", error(ours, expected))


def fast_types(net) -> set[str]:
    """The names of the fast engine's layer classes in ``net``."""
    return {
        type(node.layer).__name__
        for node in net.nodes
        if type(node.layer).__module__.startswith("cnnbuild.fast")
    }


@pytest.mark.parametrize("path", ARCHS, ids=[path.stem for path in ARCHS])
def test_every_architecture_file_matches_numpy_on_the_fast_engine(path):
    """A training step and an inference pass of every archs/ file give the numpy engine's
    outputs, gradients and statistics (float64)."""
    reference, fast = (load(path, seed=0, dtype=np.float64) for _ in range(2))
    assert engine.use(fast, "fast") == "fast"
    wanted = {
        name
        for layer, name in (
            (Conv, "FastConv"),
            (BatchNorm, "FastBatchNorm"),
            (ReLU, "FastReLU"),
            (MaxPool, "FastMaxPool"),
        )
        if any(type(node.layer) is layer for node in reference.nodes)
    }
    assert wanted <= fast_types(fast)
    rng = np.random.default_rng(9)
    n = 2 if reference.input_shape[1] > 28 else 3
    x = rng.standard_normal((n, *reference.input_shape))
    compare_networks(reference, fast, x, rng.integers(0, reference.classes, n))


# --- accelerate's fusion rules --------------------------------------------------------------

HEAD = """\
  - {type: global_avgpool}
  - {type: dense, units: 3}
  - {type: softmax}
"""
FUSABLE = (
    """\
name: fusable
input: [2, 7, 5]
classes: 3
layers:
  - {name: c, type: conv, filters: 3, kernel: 3, padding: same}
  - {name: bn, type: batchnorm}
  - {name: r, type: relu}
  - {name: c2, type: conv, filters: 3, kernel: 3}
  - {name: r2, type: relu}
  - {name: mp, type: maxpool, size: 2}
"""
    + HEAD
)
SHARED = (
    """\
name: shared
input: [2, 7, 5]
classes: 3
layers:
  - {name: c, type: conv, filters: 3, kernel: 3, padding: same}
  - {name: bn, type: batchnorm}
  - {name: r, type: relu}
  - {name: sum, type: add, inputs: [r, bn]}
"""
    + HEAD
)


def twin_networks(text: str):
    reference, fast = (loads(text, seed=0, dtype=np.float64) for _ in range(2))
    x = np.random.default_rng(10).standard_normal((3, *reference.input_shape))
    return reference, fast, x, np.array([0, 2, 1])


def test_accelerate_fuses_a_relu_into_the_batchnorm_it_alone_reads():
    """bn -> relu fuses (both flags); a ReLU after a conv does not; the result is numpy's."""
    reference, fast, x, labels = twin_networks(FUSABLE)
    accelerate(fast)
    layers = fast.layers
    assert type(layers["bn"]) is FastBatchNorm and type(layers["r"]) is FastReLU
    assert layers["bn"].fused_relu and layers["r"].fused
    assert not layers["r2"].fused
    assert type(layers["c2"]) is FastConv and type(layers["mp"]) is FastMaxPool
    compare_networks(reference, fast, x, labels)


def test_accelerate_does_not_fuse_a_batchnorm_whose_output_has_another_reader():
    """bn read by a relu and by an add keeps its own output: no fusion, numpy's result."""
    reference, fast, x, labels = twin_networks(SHARED)
    accelerate(fast)
    layers = fast.layers
    assert type(layers["bn"]) is FastBatchNorm and type(layers["r"]) is FastReLU
    assert not layers["bn"].fused_relu and not layers["r"].fused
    compare_networks(reference, fast, x, labels)


class PluginConv(Conv):
    """A user's conv: its own code must keep running on the fast engine."""

    calls = 0

    def forward(self, xs, train=False):
        PluginConv.calls += 1
        return super().forward(xs, train)


class PluginBatchNorm(BatchNorm):
    """A user's batch norm: neither switched nor fused with the ReLU after it."""


def test_accelerate_leaves_plugin_subclasses_alone():
    """Subclasses of Conv and BatchNorm keep their class (and code); the ReLU after the
    plugin batch norm is switched but not fused; the network still computes numpy's."""
    reference, fast, x, labels = twin_networks(FUSABLE)
    for net in (reference, fast):
        net.layers["c"].__class__ = PluginConv
        net.layers["bn"].__class__ = PluginBatchNorm
    accelerate(fast)
    layers = fast.layers
    assert type(layers["c"]) is PluginConv and type(layers["bn"]) is PluginBatchNorm
    assert type(layers["r"]) is FastReLU and not layers["r"].fused
    assert not getattr(layers["bn"], "fused_relu", False)
    PluginConv.calls = 0
    compare_networks(reference, fast, x, labels)
    assert PluginConv.calls == 4  # two forwards in each network


# --- PyTorch parity -------------------------------------------------------------------------


def torch_cases() -> dict[str, tuple[str, int, int]]:
    """id: (spec text, net seed, batch seed), as tests/test_promise_torch.py runs them."""
    from test_promise_torch import LAYER_SPECS

    cases = {name: (text, 1, 2) for name, text in LAYER_SPECS.items()}
    mnist = next(path for path in ARCHS if path.stem == "mnist")
    cases["archs/mnist.yaml"] = (mnist.read_text(encoding="utf-8"), 3, 4)
    return cases


TORCH_NAMES = [
    "conv, pools, activations",
    "batch norm, dropout, dense",
    "add, concat, repeat, global pool",
    "grouped, dilated, normalisations, activations, squeeze-excitation, frozen",
    "archs/mnist.yaml",
]


@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_fast_engine_matches_pytorch(name, train):
    """The fast engine keeps promise 9: PyTorch's outputs within 1e-5 and gradients within
    1e-4 (float32), for the layer specs of test_promise_torch and archs/mnist.yaml."""
    required("torch", "pip install torch", ".ci/run installs it (pip install torch==2.13.0)")
    from test_promise_torch import FORWARD, GRADIENT, batch, compare
    from torch_reference import TorchNet

    text, seed, batch_seed = torch_cases()[name]
    net = loads(text, seed=seed)
    assert engine.use(net, "fast") == "fast"
    assert fast_types(net)
    model = TorchNet(net.spec, net.params, net.buffers)
    x, labels = batch(net, 4, batch_seed)
    errors = compare(net, model, x, labels, train)
    assert errors["forward"] < FORWARD, errors
    assert errors["gradients"] < GRADIENT and errors["input gradient"] < GRADIENT, errors
    assert errors.get("statistics", 0) < FORWARD, errors


def test_the_torch_cases_are_test_promise_torchs_specs():
    """A spec added to test_promise_torch.LAYER_SPECS is compared on the fast engine too."""
    required("torch", "pip install torch", ".ci/run installs it (pip install torch==2.13.0)")
    assert set(torch_cases()) == set(TORCH_NAMES)


# --- engine.resolve -------------------------------------------------------------------------


@pytest.fixture
def without_numba(monkeypatch):
    """importlib.util.find_spec as if numba were not installed."""
    find_spec = importlib.util.find_spec

    def find(name, *args, **kwargs):
        return None if name == "numba" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find)


def test_auto_resolves_to_fast_with_numba():
    """With numba installed, auto picks the fast engine; numpy and fast are taken as asked."""
    assert engine.resolve() == engine.resolve("auto") == "fast"
    assert engine.resolve("numpy") == "numpy"
    assert engine.resolve("fast") == "fast"


def test_fast_without_numba_says_what_to_install(without_numba):
    """Asking for fast without numba is an error naming the extra; auto falls back."""
    with pytest.raises(CnnbuildError, match="numba") as raised:
        engine.resolve("fast")
    assert "pip install 'cnnbuild[fast]'" in str(raised.value)
    assert engine.resolve("auto") == "numpy"
    assert engine.resolve("numpy") == "numpy"


def test_an_unknown_engine_is_an_error():
    """A misspelt engine is refused with the choices, not silently replaced."""
    with pytest.raises(CnnbuildError, match=r"unknown engine 'cuda'.*auto, numpy, fast"):
        engine.resolve("cuda")


def test_the_numpy_engine_leaves_the_network_alone():
    """use(net, 'numpy') switches nothing."""
    net = loads(FUSABLE, seed=0)
    assert engine.use(net, "numpy") == "numpy"
    assert not fast_types(net)
