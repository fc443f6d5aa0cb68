"""Every layer type: gradients, golden values, shapes, dtypes, constructor and shape errors."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import reference
from gradcheck import check_layer_gradients, numerical_gradient

from cnnbuild.errors import ConfigError, ShapeError
from cnnbuild.layers import REGISTRY, layer_class
from cnnbuild.layers.base import Role, Shape
from cnnbuild.layers.init import init_weights
from cnnbuild.layers.output import Softmax, cross_entropy

BATCH = 3


@dataclass
class Case:
    """A layer configuration and the per-sample input shape (a list of them for merges)."""

    config: dict[str, Any]
    shape: Shape | list[Shape]
    extra: dict[str, Any] = field(default_factory=dict)


# Every registered type needs an entry: collecting this module fails otherwise (cases_of).
CASES: dict[str, list[Case]] = {
    "conv": [
        Case({"filters": 3, "kernel": 3}, (2, 5, 5)),
        Case({"filters": 2, "kernel": 2, "stride": 2, "padding": 1, "bias": False}, (3, 5, 6)),
        Case({"filters": 2, "kernel": 3, "stride": 2, "padding": "same"}, (2, 6, 5)),
        Case({"filters": 2, "kernel": 1, "init": "xavier"}, (3, 3, 3)),
        Case({"filters": 2, "kernel": 2, "padding": 2}, (2, 3, 4)),
        Case({"filters": 4, "kernel": 3, "groups": 2, "padding": "same"}, (2, 5, 5)),
        Case({"filters": 3, "kernel": 3, "groups": 3, "stride": 2, "bias": False}, (3, 6, 5)),
        Case({"filters": 2, "kernel": 3, "dilation": 2, "padding": "same"}, (2, 6, 6)),
        Case({"filters": 2, "kernel": [3, 2], "stride": [1, 2], "padding": [1, 0]}, (2, 5, 6)),
        Case({"filters": 4, "kernel": 2, "dilation": [2, 1], "groups": 2, "stride": 2}, (4, 7, 5)),
    ],
    "maxpool": [
        Case({"size": 2}, (2, 4, 4)),
        Case({"size": 3, "stride": 1}, (2, 5, 5)),
        Case({"size": 2}, (1, 5, 7)),
        Case({"size": 3, "stride": 2}, (2, 7, 6)),
        Case({"size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
        Case({"size": 2, "padding": 1}, (1, 5, 4)),
    ],
    "avgpool": [
        Case({"size": 2}, (2, 4, 4)),
        Case({"size": 3, "stride": 1}, (2, 5, 5)),
        Case({"size": 2, "stride": 3}, (1, 5, 7)),
        Case({"size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
    ],
    "global_avgpool": [Case({}, (3, 4, 5))],
    "global_maxpool": [Case({}, (3, 4, 5)), Case({}, (2, 1, 1))],
    "dense": [
        Case({"units": 4}, (6,)),
        Case({"units": 3, "bias": False, "init": "normal"}, (2, 3, 3)),
    ],
    "batchnorm": [
        Case({}, (3, 4, 4)),
        Case({"momentum": 0.5, "eps": 1e-3}, (5,)),
        Case({"trainable": False}, (3, 2, 2)),
    ],
    "layernorm": [Case({}, (3, 4, 4)), Case({"eps": 1e-3}, (5,))],
    "groupnorm": [
        Case({"groups": 2}, (4, 3, 3)),
        Case({"groups": 1, "eps": 1e-3}, (3, 2, 2)),
        Case({"groups": 3}, (3, 4, 4)),
        Case({"groups": 2}, (6,)),
    ],
    "relu": [Case({}, (3, 4, 4)), Case({}, (7,))],
    "leaky_relu": [Case({"slope": 0.1}, (3, 4, 4)), Case({}, (7,))],
    "sigmoid": [Case({}, (3, 4, 4))],
    "tanh": [Case({}, (3, 4, 4))],
    "gelu": [Case({}, (3, 4, 4))],
    "silu": [Case({}, (3, 4, 4)), Case({}, (7,))],
    "hardswish": [Case({}, (3, 4, 4)), Case({}, (7,))],
    "elu": [Case({}, (3, 4, 4)), Case({"alpha": 0.5}, (7,))],
    "identity": [Case({}, (3, 4, 4)), Case({}, (5,))],
    "dropout": [Case({"rate": 0.3}, (3, 4, 4)), Case({"rate": 0.0}, (6,))],
    "add": [Case({}, [(2, 3, 3), (2, 3, 3)]), Case({}, [(4,), (4,), (4,)])],
    "concat": [Case({}, [(2, 3, 3), (1, 3, 3)]), Case({}, [(3,), (2,), (4,)])],
    "multiply": [
        Case({}, [(2, 3, 3), (2, 3, 3)]),
        Case({}, [(3, 4, 2), (3,)]),
        Case({}, [(2,), (2, 3, 3)]),
        Case({}, [(4,), (4,)]),
    ],
    "flatten": [Case({}, (2, 3, 3)), Case({}, (5,))],
    "softmax": [Case({}, (5,))],
}


def cases_of(type_name: str) -> list[Case]:
    if type_name not in CASES:
        pytest.fail(f"layer type {type_name!r} has no entry in CASES")
    return CASES[type_name]


def all_cases() -> list[tuple[str, Case]]:
    return [(name, case) for name in sorted(REGISTRY) for case in cases_of(name)]


def case_id(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_list(shape: Shape | list[Shape]) -> list[Shape]:
    """The input shapes a layer receives: a single shape becomes a list of one."""
    return shape if isinstance(shape, list) else [shape]


def distinct_inputs(
    shapes: list[Shape], rng: np.random.Generator, dtype=np.float64
) -> list[np.ndarray]:
    """Batches of distinct values, 0.02 apart or more and none within 0.01 of zero.

    Keeps central differences off the kinks of relu and away from ties under max-pooling.
    """
    sizes = [BATCH * math.prod(shape) for shape in shapes]
    total = sum(sizes)
    # Half-integers (never 0) spread over about [-2, 2].
    values = (rng.permutation(total) - total // 2 + 0.5) * max(4 / total, 0.02)
    arrays = np.split(values, np.cumsum(sizes)[:-1])
    return [a.reshape(BATCH, *shape).astype(dtype) for a, shape in zip(arrays, shapes, strict=True)]


def make(type_name: str, case: Case, dtype=np.float64, seed: int = 0):
    """A built layer with random params and buffers, and its inputs: one array per input."""
    layer = layer_class(type_name)(type_name + "1", **case.config)
    shapes = as_list(case.shape)
    rng = np.random.default_rng(seed)
    layer.build(shapes, rng, dtype)
    for param in layer.params.values():
        param[...] = rng.uniform(0.5, 1.5, param.shape) * rng.choice([-1, 1], param.shape)
    for key, buffer in layer.buffers.items():
        buffer[...] = rng.uniform(0.5, 2.0, buffer.shape) if key == "running_var" else 0.3
    xs = distinct_inputs(shapes, np.random.default_rng(seed + 1), dtype)
    return layer, xs, rng


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(("type_name", "case"), all_cases(), ids=case_id)
def test_config_round_trips(type_name, case):
    layer = layer_class(type_name)("x", **case.config)
    config = layer.get_config()
    assert config["type"] == type_name
    rebuilt = type(layer)(**{key: value for key, value in config.items() if key != "type"})
    assert rebuilt.get_config() == config


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradients_match_central_differences(type_name, train):
    for case in cases_of(type_name):
        layer, xs, rng = make(type_name, case)
        check_layer_gradients(layer, xs, train=train, rng=rng)


def test_softmax_loss_gradient_matches_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5))
    labels = np.array([0, 3, 4, 3])
    layer = Softmax("out")
    layer.forward([logits])
    fused = layer.loss_gradient(labels)

    def loss() -> float:
        return cross_entropy(Softmax("out").forward([logits]), labels)

    np.testing.assert_allclose(fused, numerical_gradient(loss, logits), rtol=1e-5, atol=1e-8)


def test_softmax_backward_chains_with_cross_entropy_to_the_fused_gradient():
    logits = np.random.default_rng(1).standard_normal((3, 4))
    labels = np.array([1, 0, 3])
    layer = Softmax("out")
    p = layer.forward([logits])
    dp = np.zeros_like(p)
    dp[np.arange(3), labels] = -1 / (3 * p[np.arange(3), labels])
    (dx,) = layer.backward(dp)
    np.testing.assert_allclose(dx, layer.loss_gradient(labels), atol=1e-12)


# --- golden values -----------------------------------------------------------------------------

CONVS = [
    # (kernel, stride, padding, bias, (C, H, W))
    (3, 1, "valid", True, (2, 6, 6)),
    (3, 1, "same", True, (3, 5, 7)),
    (3, 2, "same", False, (2, 7, 7)),
    (2, 1, "valid", True, (2, 5, 5)),
    (4, 2, "valid", False, (1, 9, 8)),
    (5, 2, 2, True, (2, 8, 8)),
    (1, 3, 0, True, (3, 7, 5)),
    (2, 2, 1, True, (2, 5, 6)),
]


@pytest.mark.parametrize(("kernel", "stride", "padding", "bias", "shape"), CONVS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_matches_the_loop(kernel, stride, padding, bias, shape, dtype):
    config = {"filters": 3, "kernel": kernel, "stride": stride, "padding": padding, "bias": bias}
    layer, (x,), _ = make("conv", Case(config, shape), dtype)
    w = layer.params["W"].astype(np.float64)
    b = layer.params["b"].astype(np.float64) if bias else None
    pad = {"valid": 0, "same": (kernel - 1) // 2}.get(padding, padding)
    expected = reference.conv2d(x.astype(np.float64), w, b, stride, pad)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(layer.forward([x]), expected, rtol=tolerance, atol=tolerance)


POOLS = [
    # (size, stride, (C, H, W)): non-overlapping, non-divisible, overlapping, gaps, whole input
    (2, None, (2, 4, 4)),
    (2, None, (2, 5, 7)),
    (3, 1, (1, 5, 5)),
    (3, 2, (2, 7, 6)),
    (2, 3, (1, 8, 8)),
    (4, None, (1, 4, 4)),
]


@pytest.mark.parametrize(("size", "stride", "shape"), POOLS)
@pytest.mark.parametrize(
    ("type_name", "loop"), [("maxpool", reference.maxpool2d), ("avgpool", reference.avgpool2d)]
)
def test_pooling_matches_the_loop(type_name, loop, size, stride, shape):
    layer, (x,), _ = make(type_name, Case({"size": size, "stride": stride}, shape))
    expected = loop(x, size, stride or size)
    np.testing.assert_allclose(layer.forward([x]), expected, rtol=1e-12)


# --- shapes ------------------------------------------------------------------------------------

SHAPES = [
    # (type, config, input shape(s), expected output shape)
    ("conv", {"filters": 8, "kernel": 3}, (3, 32, 32), (8, 30, 30)),
    ("conv", {"filters": 8, "kernel": 3, "padding": "same"}, (3, 32, 32), (8, 32, 32)),
    ("conv", {"filters": 4, "kernel": 3, "padding": "same", "stride": 2}, (1, 7, 8), (4, 4, 4)),
    ("conv", {"filters": 4, "kernel": 4, "stride": 2}, (1, 9, 10), (4, 3, 4)),
    ("conv", {"filters": 2, "kernel": 5, "padding": 2}, (1, 5, 5), (2, 5, 5)),
    ("conv", {"filters": 2, "kernel": 3, "stride": 3}, (2, 3, 5), (2, 1, 1)),
    ("conv", {"filters": 6, "kernel": 3, "groups": 3, "padding": "same"}, (3, 8, 8), (6, 8, 8)),
    ("conv", {"filters": 4, "kernel": 3, "groups": 4, "stride": 2}, (4, 9, 8), (4, 4, 3)),
    ("conv", {"filters": 2, "kernel": 3, "dilation": 2}, (1, 9, 7), (2, 5, 3)),
    ("conv", {"filters": 2, "kernel": 3, "dilation": 3, "padding": "same"}, (1, 9, 7), (2, 9, 7)),
    ("conv", {"filters": 2, "kernel": [1, 3], "padding": [0, 1]}, (1, 5, 6), (2, 5, 6)),
    ("conv", {"filters": 2, "kernel": [3, 5], "stride": [2, 1]}, (1, 7, 6), (2, 3, 2)),
    (
        "conv",
        {"filters": 2, "kernel": [3, 1], "padding": "same", "dilation": [2, 1]},
        (1, 6, 4),
        (2, 6, 4),
    ),
    ("maxpool", {"size": 2}, (4, 7, 9), (4, 3, 4)),
    ("maxpool", {"size": 3, "stride": 2}, (4, 7, 8), (4, 3, 3)),
    ("avgpool", {"size": 3, "stride": 1}, (2, 5, 6), (2, 3, 4)),
    ("avgpool", {"size": 5}, (2, 5, 5), (2, 1, 1)),
    ("maxpool", {"size": 3, "stride": 2, "padding": 1}, (4, 8, 7), (4, 4, 4)),
    ("avgpool", {"size": 2, "padding": 1}, (2, 5, 4), (2, 3, 3)),
    ("global_avgpool", {}, (6, 3, 2), (6,)),
    ("global_maxpool", {}, (6, 3, 2), (6,)),
    ("layernorm", {}, (4, 3, 2), (4, 3, 2)),
    ("layernorm", {}, (9,), (9,)),
    ("groupnorm", {"groups": 2}, (4, 3, 2), (4, 3, 2)),
    ("groupnorm", {"groups": 3}, (9,), (9,)),
    ("gelu", {}, (4, 3, 2), (4, 3, 2)),
    ("silu", {}, (4,), (4,)),
    ("hardswish", {}, (2, 2, 2), (2, 2, 2)),
    ("elu", {"alpha": 2.0}, (3,), (3,)),
    ("identity", {}, (2, 3, 3), (2, 3, 3)),
    ("multiply", {}, [(2, 3, 3), (2,)], (2, 3, 3)),
    ("multiply", {}, [(2,), (2, 3, 3)], (2, 3, 3)),
    ("multiply", {}, [(5,), (5,)], (5,)),
    ("flatten", {}, (4, 3, 2), (24,)),
    ("flatten", {}, (7,), (7,)),
    ("dense", {"units": 10}, (4, 3, 2), (10,)),
    ("dense", {"units": 1}, (9,), (1,)),
    ("batchnorm", {}, (4, 3, 2), (4, 3, 2)),
    ("batchnorm", {}, (9,), (9,)),
    ("relu", {}, (4, 3, 2), (4, 3, 2)),
    ("leaky_relu", {}, (4,), (4,)),
    ("sigmoid", {}, (2, 2, 2), (2, 2, 2)),
    ("tanh", {}, (3,), (3,)),
    ("dropout", {"rate": 0.5}, (2, 3, 3), (2, 3, 3)),
    ("softmax", {}, (10,), (10,)),
    ("add", {}, [(2, 3, 3), (2, 3, 3), (2, 3, 3)], (2, 3, 3)),
    ("concat", {}, [(2, 3, 3), (5, 3, 3)], (7, 3, 3)),
    ("concat", {}, [(2,), (5,)], (7,)),
]


@pytest.mark.parametrize(("type_name", "config", "shape", "expected"), SHAPES, ids=case_id)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_output_shape_is_the_shape_forward_produces(type_name, config, shape, expected, train):
    layer, xs, _ = make(type_name, Case(config, shape))
    assert layer.output_shape(as_list(shape)) == expected
    assert layer.forward(xs, train=train).shape == (BATCH, *expected)


def test_macs():
    conv = layer_class("conv")("c", filters=8, kernel=3)
    assert conv.macs([(3, 32, 32)], (8, 30, 30)) == 8 * 3 * 9 * 30 * 30
    grouped = layer_class("conv")("c", filters=8, kernel=[3, 1], groups=2, dilation=2)
    assert grouped.macs([(4, 32, 32)], (8, 28, 32)) == 8 * 2 * 3 * 28 * 32
    depthwise = layer_class("conv")("c", filters=16, kernel=3, groups=16, padding="same")
    assert depthwise.macs([(16, 8, 8)], (16, 8, 8)) == 16 * 9 * 64
    for norm in (layer_class("layernorm")("l"), layer_class("groupnorm")("g", groups=2)):
        assert norm.macs([(4, 3, 2)], (4, 3, 2)) == 24
    assert layer_class("multiply")("m").macs([(4, 3, 3), (4,)], (4, 3, 3)) == 0
    dense = layer_class("dense")("d", units=10)
    assert dense.macs([(4, 3, 2)], (10,)) == 240
    assert layer_class("batchnorm")("b").macs([(4, 3, 2)], (4, 3, 2)) == 24
    assert layer_class("maxpool")("p", size=2).macs([(4, 8, 8)], (4, 4, 4)) == 0
    assert layer_class("add")("a").macs([(4, 3, 3), (4, 3, 3)], (4, 3, 3)) == 0


# --- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("type_name", "case"), all_cases(), ids=case_id)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_float32_stays_float32(type_name, case, train):
    layer, xs, _ = make(type_name, case, np.float32)
    for key, array in {**layer.params, **layer.grads, **layer.buffers}.items():
        assert array.dtype == np.float32, key
    y = layer.forward(xs, train=train)
    assert y.dtype == np.float32
    dxs = layer.backward(np.ones_like(y))
    assert len(dxs) == len(xs)
    for dx in dxs:
        assert dx.dtype == np.float32
    for key, grad in layer.grads.items():
        assert grad.dtype == np.float32, key
    if isinstance(layer, Softmax):
        assert layer.loss_gradient(np.zeros(BATCH, dtype=int)).dtype == np.float32


# --- constructor checks ------------------------------------------------------------------------

BAD_CONFIGS = [
    ("conv", {"filters": 0, "kernel": 3}, "filters=0"),
    ("conv", {"filters": 4, "kernel": 0}, "kernel=0"),
    ("conv", {"filters": 4, "kernel": 3, "stride": 0}, "stride=0"),
    ("conv", {"filters": 4, "kernel": 3, "padding": "full"}, "padding='full'"),
    ("conv", {"filters": 4, "kernel": 3, "padding": -1}, "padding=-1"),
    (
        "conv",
        {"filters": 4, "kernel": 4, "padding": "same"},
        "padding 'same' needs an odd kernel, received kernel=4",
    ),
    ("conv", {"filters": 4, "kernel": 3, "init": "zeros"}, "init='zeros'"),
    ("conv", {"filters": 4, "kernel": 3, "bias": "yes"}, "bias='yes'"),
    ("conv", {"kernel": 3}, "'filters' is required"),
    ("conv", {"filters": 4, "kernel": 3, "dilation": 0}, "dilation=0"),
    ("conv", {"filters": 4, "kernel": [3, 3, 3]}, "kernel=[3, 3, 3]"),
    ("conv", {"filters": 4, "kernel": [3, 0]}, "kernel=[3, 0]"),
    ("conv", {"filters": 4, "kernel": 3, "stride": [1, 0]}, "stride=[1, 0]"),
    ("conv", {"filters": 4, "kernel": 3, "padding": [1, -1]}, "padding=[1, -1]"),
    ("conv", {"filters": 4, "kernel": 3, "groups": 0}, "groups=0"),
    (
        "conv",
        {"filters": 6, "kernel": 3, "groups": 4},
        "received filters=6 and groups=4: the filters must be divisible by groups",
    ),
    (
        "conv",
        {"filters": 4, "kernel": [3, 2], "padding": "same"},
        "padding 'same' needs an odd kernel, received kernel=[3, 2]",
    ),
    ("conv", {"filters": 4, "kernel": 3, "trainable": "no"}, "trainable='no'"),
    ("maxpool", {"size": 3, "padding": 2}, "received padding=2 for size=3"),
    ("avgpool", {"size": 2, "padding": -1}, "padding=-1"),
    ("groupnorm", {}, "'groups' is required"),
    ("groupnorm", {"groups": 0}, "groups=0"),
    ("layernorm", {"eps": 0}, "eps=0"),
    ("elu", {"alpha": -1}, "alpha=-1"),
    ("relu", {"trainable": False}, "unknown option 'trainable'"),
    ("maxpool", {"size": 0}, "size=0"),
    ("avgpool", {"size": 2, "stride": 0}, "stride=0"),
    ("dense", {"units": 0}, "units=0"),
    ("batchnorm", {"momentum": 1}, "momentum=1"),
    ("batchnorm", {"momentum": -0.1}, "momentum=-0.1"),
    ("batchnorm", {"eps": 0}, "eps=0"),
    ("leaky_relu", {"slope": -0.1}, "slope=-0.1"),
    ("dropout", {"rate": 1.0}, "rate=1.0"),
    ("dropout", {"rate": -0.5}, "rate=-0.5"),
    ("relu", {"slope": 0.1}, "unknown option 'slope'"),
]


@pytest.mark.parametrize(("type_name", "config", "message"), BAD_CONFIGS, ids=case_id)
def test_constructor_rejects_bad_values_and_echoes_them(type_name, config, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        layer_class(type_name)("bad", **config)
    assert f"{type_name} 'bad'" in str(caught.value)


# --- shape errors ------------------------------------------------------------------------------

BAD_SHAPES = [
    (
        "conv",
        {"filters": 2, "kernel": 5},
        (1, 3, 8),
        "conv 'bad': kernel 5 is larger than its input: size 3 + 2*padding 0 = 3 < 5",
    ),
    ("conv", {"filters": 2, "kernel": 5, "padding": 1}, (1, 8, 2), "size 2 + 2*padding 1 = 4 < 5"),
    ("conv", {"filters": 2, "kernel": 3}, (784,), "expects a (channels, height, width) input"),
    ("conv", {"filters": 2, "kernel": 3}, (1, 28, 28, 1), "received (1, 28, 28, 1) (4-D)"),
    ("maxpool", {"size": 3}, (4, 2, 2), "maxpool 'bad': window 3 is larger than its input"),
    ("avgpool", {"size": 2}, (10,), "expects a (channels, height, width) input"),
    ("global_avgpool", {}, (10,), "received (10,) (1-D)"),
    ("global_maxpool", {}, (4, 5), "received (4, 5) (2-D)"),
    (
        "conv",
        {"filters": 4, "kernel": 3, "groups": 2},
        (3, 8, 8),
        "conv 'bad': groups=2 must divide the input channels, received 3 channels (3, 8, 8) "
        "— use one of 1, 3",
    ),
    (
        "conv",
        {"filters": 2, "kernel": 3, "dilation": 3},
        (1, 6, 9),
        "conv 'bad': kernel 3 dilated by 3 spans 7 is larger than its input: size 6",
    ),
    (
        "conv",
        {"filters": 2, "kernel": [1, 4]},
        (1, 6, 3),
        "kernel width 4 is larger than its input",
    ),
    ("groupnorm", {"groups": 4}, (6, 2, 2), "groups=4 must divide the channels, received 6"),
    ("groupnorm", {"groups": 1}, (4, 5), "received (4, 5) (2-D)"),
    ("multiply", {}, [(3, 4, 4), (4,)], "received (3, 4, 4), (4,)"),
    ("multiply", {}, [(3, 4, 4), (3, 4, 5)], "(C, H, W) and (C,) with the same C"),
    ("batchnorm", {}, (4, 5), "received (4, 5) (2-D)"),
    ("softmax", {}, (3, 4, 4), "put a flatten or dense layer before it"),
    ("add", {}, [(8, 16, 16), (8, 15, 15)], "received (8, 16, 16), (8, 15, 15)"),
    ("add", {}, [(4,), (4,), (5,)], "received (4,), (4,), (5,)"),
    (
        "concat",
        {},
        [(8, 16, 16), (8, 15, 15)],
        "concat 'bad' needs equal spatial sizes: (8, 16, 16) vs (8, 15, 15)",
    ),
    ("concat", {}, [(8, 16, 16), (8,)], "needs inputs of equal rank: (8, 16, 16) vs (8,)"),
]


@pytest.mark.parametrize(("type_name", "config", "shape", "message"), BAD_SHAPES, ids=case_id)
def test_output_shape_explains_shapes_it_cannot_take(type_name, config, shape, message):
    layer = layer_class(type_name)("bad", **config)
    with pytest.raises(ShapeError) as caught:
        layer.output_shape(as_list(shape))
    assert message in str(caught.value)


# --- layer-specific behaviour ------------------------------------------------------------------


def test_batchnorm_trains_on_batch_statistics_and_updates_running_ones():
    layer = layer_class("batchnorm")("bn", momentum=0.8)
    layer.build([(2, 3, 3)], np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).normal(3.0, 2.0, (4, 2, 3, 3))
    y = layer.forward([x], train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    per_channel = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.2 * per_channel.mean(axis=1))
    unbiased = per_channel.var(axis=1, ddof=1)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.8 + 0.2 * unbiased)


def test_batchnorm_infers_with_running_statistics():
    layer = layer_class("batchnorm")("bn", eps=1e-3)
    layer.build([(3,)], np.random.default_rng(0), np.float64)
    layer.buffers["running_mean"][...] = [1.0, 2.0, 3.0]
    layer.buffers["running_var"][...] = [4.0, 1.0, 0.25]
    layer.params["gamma"][...] = 2.0
    layer.params["beta"][...] = 0.5
    x = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    expected = 2.0 * (x - [1.0, 2.0, 3.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-3) + 0.5
    np.testing.assert_allclose(layer.forward([x], train=False), expected)
    np.testing.assert_array_equal(layer.buffers["running_mean"], [1.0, 2.0, 3.0])


def test_batchnorm_refuses_to_train_on_one_value_per_channel():
    layer = layer_class("batchnorm")("bn")
    layer.build([(3,)], np.random.default_rng(0))
    with pytest.raises(ShapeError, match="more than one value per channel"):
        layer.forward([np.ones((1, 3), np.float32)], train=True)


def test_dropout_is_the_identity_at_test_time():
    layer, (x,), _ = make("dropout", Case({"rate": 0.5}, (3, 4, 4)))
    assert layer.forward([x], train=False) is x
    dy = np.ones_like(x)
    (dx,) = layer.backward(dy)
    np.testing.assert_array_equal(dx, dy)


def test_dropout_keeps_one_minus_rate_and_scales_the_kept():
    layer = layer_class("dropout")("drop", rate=0.25)
    layer.build([(1000,)], np.random.default_rng(0))
    x = np.ones((50, 1000), np.float32)
    y = layer.forward([x], train=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    (dx,) = layer.backward(x)
    np.testing.assert_array_equal(dx != 0, kept)


def test_dropout_draws_from_the_generator_it_was_built_with():
    masks = []
    for _ in range(2):
        layer = layer_class("dropout")("drop", rate=0.5)
        layer.build([(20,)], np.random.default_rng(42))
        masks.append(layer.forward([np.ones((4, 20))], train=True))
    np.testing.assert_array_equal(masks[0], masks[1])
    state = np.random.get_state()
    layer.forward([np.ones((4, 20))], train=True)
    assert np.random.get_state()[1].tolist() == state[1].tolist()


def test_sigmoid_is_stable_for_large_inputs():
    layer = layer_class("sigmoid")("s")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = layer.forward([np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]])])
    np.testing.assert_allclose(y, [[0.0, 1 / (1 + np.exp(30)), 0.5, 1 / (1 + np.exp(-30)), 1.0]])


def test_softmax_is_stable_and_sums_to_one():
    layer = Softmax("out")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = layer.forward([np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]])])
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])


def test_cross_entropy_is_the_mean_negative_log_likelihood_and_finite():
    probs = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
    assert cross_entropy(probs[:2], np.array([1, 0])) == pytest.approx(
        -(np.log(0.75) + np.log(0.5)) / 2
    )
    assert np.isfinite(cross_entropy(probs, np.array([0, 0, 1])))


def test_weights_have_the_documented_shapes():
    dense, _, _ = make("dense", Case({"units": 3}, (2, 3, 3)))
    assert dense.params["W"].shape == (18, 3)  # an image input is flattened
    layer = layer_class("conv")("c", filters=5, kernel=3)
    layer.build([(2, 8, 8)], np.random.default_rng(0))
    assert layer.params["W"].shape == (5, 2, 3, 3)
    assert layer.params["b"].shape == (5,)
    layer = layer_class("conv")("c", filters=5, kernel=3, bias=False)
    layer.build([(2, 8, 8)], np.random.default_rng(0))
    assert set(layer.params) == {"W"}


# Whether weight decay applies, per layer type and parameter; every other layer has none.
DECAY = {
    "conv": {"W": True, "b": False},
    "dense": {"W": True, "b": False},
    "batchnorm": {"gamma": False, "beta": False},
    "layernorm": {"gamma": False, "beta": False},
    "groupnorm": {"gamma": False, "beta": False},
}


@pytest.mark.parametrize(("type_name", "case"), all_cases(), ids=case_id)
def test_layers_declare_the_roles_of_their_parameters(type_name, case):
    layer, _, _ = make(type_name, case)
    declared = DECAY.get(type_name, {})
    assert set(layer.params) <= set(declared)
    trainable = case.config.get("trainable", True)
    assert layer.roles == {key: Role(declared[key], trainable) for key in layer.params}
    params = {key: param.copy() for key, param in layer.params.items()}
    layer.freeze()
    assert layer.roles == {key: Role(decay=declared[key], trainable=False) for key in layer.params}
    assert layer.params.keys() == params.keys() == layer.grads.keys()
    for key, param in params.items():
        np.testing.assert_array_equal(layer.params[key], param)


# --- initialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "std"),
    [("he", math.sqrt(2 / 400)), ("normal", 1 / math.sqrt(400)), ("xavier", math.sqrt(2 / 700))],
)
def test_init_has_the_documented_spread(kind, std):
    weights = init_weights(kind, (400, 300), 400, 300, np.random.default_rng(0))
    assert weights.dtype == np.float32
    assert abs(weights.mean()) < 0.05 * std
    assert weights.std() == pytest.approx(std, rel=0.02)
    if kind == "xavier":
        assert np.abs(weights).max() <= math.sqrt(6 / 700)


def test_conv_init_uses_channels_times_kernel_area_as_fan_in():
    layer = layer_class("conv")("c", filters=64, kernel=5, init="normal")
    layer.build([(16, 8, 8)], np.random.default_rng(0))
    assert layer.params["W"].std() == pytest.approx(1 / math.sqrt(16 * 25), rel=0.02)


def test_init_is_reproducible_and_leaves_global_random_state_alone():
    state = np.random.get_state()
    first = init_weights("he", (4, 5), 4, 5, np.random.default_rng(3))
    second = init_weights("he", (4, 5), 4, 5, np.random.default_rng(3), np.float64)
    np.testing.assert_allclose(first, second, rtol=1e-6)
    assert np.random.get_state()[1].tolist() == state[1].tolist()


# --- grouped, dilated and rectangular convolution; pooling with padding -----------------------


def conv_loop(x, w, b, stride, pad, dilation, groups):
    """The definition, one output at a time: x (N, C, H, W), w (F, C/G, kh, kw); stride, pad
    and dilation (h, w) pairs."""
    n, c, h, width = x.shape
    f, c_group, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    xp = np.zeros((n, c, h + 2 * ph, width + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + width] = x
    ho = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    wo = (width + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((n, f, ho, wo))
    for filt in range(f):
        group = filt // (f // groups)
        channels = slice(group * c_group, (group + 1) * c_group)
        for row in range(ho):
            for col in range(wo):
                rows = slice(row * sh, row * sh + (kh - 1) * dh + 1, dh)
                cols = slice(col * sw, col * sw + (kw - 1) * dw + 1, dw)
                patch = xp[:, channels, rows, cols]  # (N, C/G, kh, kw)
                y[:, filt, row, col] = np.sum(patch * w[filt], axis=(1, 2, 3))
                if b is not None:
                    y[:, filt, row, col] += b[filt]
    return y


GROUPED_CONVS = [
    # (config, (C, H, W))
    ({"filters": 4, "kernel": 3, "groups": 2, "padding": 1}, (4, 6, 6)),
    ({"filters": 6, "kernel": 3, "groups": 3, "stride": 2, "padding": "same"}, (3, 7, 8)),
    ({"filters": 4, "kernel": 3, "groups": 4, "padding": "same"}, (4, 5, 5)),  # depthwise
    ({"filters": 2, "kernel": 3, "dilation": 2, "padding": 1}, (3, 8, 7)),
    ({"filters": 3, "kernel": [2, 3], "stride": [2, 1], "padding": [1, 0]}, (2, 7, 6)),
    ({"filters": 4, "kernel": [3, 1], "dilation": [1, 3], "groups": 2, "bias": False}, (2, 6, 7)),
    ({"filters": 2, "kernel": 3, "dilation": [2, 3], "padding": "same", "stride": 2}, (1, 9, 9)),
]


@pytest.mark.parametrize(("config", "shape"), GROUPED_CONVS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_grouped_and_dilated_conv_matches_the_loop(config, shape, train):
    layer, (x,), _ = make("conv", Case(config, shape))
    b = layer.params.get("b")
    expected = conv_loop(
        x, layer.params["W"], b, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    y = layer.forward([x], train=train)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert y.shape[1:] == layer.output_shape([shape])


def test_conv_and_pool_expose_their_geometry_as_height_width_pairs():
    conv = layer_class("conv")("c", filters=4, kernel=[3, 5], stride=2, padding="same", dilation=2)
    assert (conv.kernel, conv.stride, conv.padding, conv.dilation) == (
        (3, 5),
        (2, 2),
        (2, 4),
        (2, 2),
    )
    assert conv.groups == 1
    conv = layer_class("conv")("c", filters=4, kernel=3, padding=[0, 1], groups=4)
    assert (conv.padding, conv.groups) == ((0, 1), 4)
    pool = layer_class("maxpool")("p", size=3, stride=2, padding=1)
    assert (pool.kernel, pool.stride, pool.padding, pool.dilation) == (
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
    )
    assert layer_class("avgpool")("p", size=2).stride == (2, 2)


def test_depthwise_conv_filters_each_channel_alone():
    layer, (x,), _ = make("conv", Case({"filters": 3, "kernel": 3, "groups": 3}, (3, 5, 5)))
    assert layer.params["W"].shape == (3, 1, 3, 3)
    y = layer.forward([x])
    for channel in range(3):
        one = layer_class("conv")("one", filters=1, kernel=3)
        one.build([(1, 5, 5)], np.random.default_rng(0), np.float64)
        one.params["W"][...] = layer.params["W"][channel : channel + 1]
        one.params["b"][...] = layer.params["b"][channel]
        np.testing.assert_allclose(y[:, channel : channel + 1], one.forward([x[:, [channel]]]))


@pytest.mark.parametrize(
    ("size", "stride", "padding"), [(3, 2, 1), (2, 2, 1), (3, 1, 1), (5, 3, 2)]
)
def test_padded_pooling_matches_the_loop_on_the_padded_input(size, stride, padding):
    shape = (2, 6, 7)
    for type_name, loop, fill in (
        ("maxpool", reference.maxpool2d, -np.inf),
        ("avgpool", reference.avgpool2d, 0.0),
    ):
        config = {"size": size, "stride": stride, "padding": padding}
        layer, (x,), _ = make(type_name, Case(config, shape))
        pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
        expected = loop(np.pad(x, pad, constant_values=fill), size, stride)
        np.testing.assert_allclose(layer.forward([x]), expected, rtol=1e-12)


def test_global_maxpool_sends_the_gradient_to_the_first_maximum():
    layer = layer_class("global_maxpool")("g")
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]], [[-1.0, -2.0], [-3.0, -4.0]]]])  # (1, 2, 2, 2)
    np.testing.assert_array_equal(layer.forward([x]), [[3.0, -1.0]])
    (dx,) = layer.backward(np.array([[5.0, 7.0]]))
    np.testing.assert_array_equal(dx, [[[[0, 5], [0, 0]], [[7, 0], [0, 0]]]])


# --- normalisation over samples and groups ----------------------------------------------------


def test_layernorm_normalises_each_sample_over_all_its_values():
    layer = layer_class("layernorm")("ln")
    layer.build([(2, 3, 3)], np.random.default_rng(0), np.float64)
    assert layer.params["gamma"].shape == layer.params["beta"].shape == (2, 3, 3)
    x = np.random.default_rng(1).normal(3.0, 2.0, (4, 2, 3, 3))
    y = layer.forward([x], train=True)
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(1, 2, 3)), 1, rtol=1e-3)
    np.testing.assert_array_equal(layer.forward([x], train=False), y)


def test_groupnorm_normalises_each_group_of_channels_of_each_sample():
    layer = layer_class("groupnorm")("gn", groups=2)
    layer.build([(4, 3, 3)], np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).normal(3.0, 2.0, (5, 4, 3, 3))
    y = layer.forward([x]).reshape(5, 2, -1)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=2), 1, rtol=1e-3)


# --- activations --------------------------------------------------------------------------------


def test_gelu_is_x_times_the_normal_cdf_to_double_precision():
    x = np.linspace(-9, 9, 2001)
    expected = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]
    np.testing.assert_allclose(layer_class("gelu")("g").forward([x]), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("type_name", ["gelu", "silu", "hardswish", "elu"])
def test_activation_gradients_far_from_zero(type_name):
    """Beyond the [-2, 2] of the common cases: hardswish's three pieces, the tails of the others."""
    values = [-7.5, -4.5, -3.2, -2.7, -0.4, 0.3, 2.6, 3.3, 5.5, 8.5]
    layer = layer_class(type_name)("a")
    check_layer_gradients(layer, [np.array(values).reshape(2, 5)])


def test_hardswish_and_elu_values():
    x = np.array([[-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0]])
    np.testing.assert_allclose(
        layer_class("hardswish")("h").forward([x]), [[0, 0, -0.375, 0, 1.125, 3, 4]]
    )
    elu = layer_class("elu")("e", alpha=2.0).forward([x])
    np.testing.assert_allclose(elu, np.where(x > 0, x, 2.0 * (np.exp(x) - 1)))
    silu = layer_class("silu")("s").forward([x])
    np.testing.assert_allclose(silu, x / (1 + np.exp(-x)))


def test_identity_returns_its_input():
    layer, (x,), _ = make("identity", Case({}, (2, 3, 3)))
    assert layer.forward([x]) is x
    dy = np.ones_like(x)
    assert layer.backward(dy)[0] is dy


def test_multiply_scales_each_channel_by_a_per_channel_input():
    layer, (x, scale), _ = make("multiply", Case({}, [(3, 2, 2), (3,)]))
    np.testing.assert_allclose(layer.forward([x, scale]), x * scale[:, :, None, None])
    swapped = layer_class("multiply")("m")
    np.testing.assert_allclose(swapped.forward([scale, x]), x * scale[:, :, None, None])
    dy = np.ones((BATCH, 3, 2, 2))
    dscale, dx = swapped.backward(dy)
    np.testing.assert_allclose(dscale, x.sum(axis=(2, 3)))
    np.testing.assert_allclose(dx, np.broadcast_to(scale[:, :, None, None], dx.shape))


# --- frozen layers ------------------------------------------------------------------------------


def test_every_layer_with_parameters_can_be_frozen():
    for type_name in sorted(REGISTRY):
        for case in cases_of(type_name):
            layer, _, _ = make(type_name, case)
            assert bool(layer.params) == ("trainable" in layer.options), type_name


@pytest.mark.parametrize(
    ("type_name", "case"),
    [
        ("conv", Case({"filters": 2, "kernel": 3, "trainable": False}, (2, 4, 4))),
        ("dense", Case({"units": 3, "trainable": False}, (4,))),
        ("layernorm", Case({"trainable": False}, (4,))),
        ("groupnorm", Case({"groups": 1, "trainable": False}, (2, 3, 3))),
    ],
    ids=case_id,
)
def test_trainable_false_freezes_every_parameter(type_name, case):
    layer, _, _ = make(type_name, case)
    assert layer.params and all(not role.trainable for role in layer.roles.values())
    assert layer.get_config()["trainable"] is False


def test_a_frozen_batchnorm_trains_with_its_running_statistics_and_keeps_them():
    frozen, (x,), _ = make("batchnorm", Case({"trainable": False}, (3, 2, 2)))
    running = {key: buffer.copy() for key, buffer in frozen.buffers.items()}
    y = frozen.forward([x], train=True)
    np.testing.assert_array_equal(y, frozen.forward([x], train=False))
    for key, buffer in frozen.buffers.items():
        np.testing.assert_array_equal(buffer, running[key])
    assert all(not role.trainable for role in frozen.roles.values())


def test_a_network_trains_around_its_frozen_layers():
    import cnnbuild
    from cnnbuild.optim import make_optimizer

    net = cnnbuild.loads(
        """
name: frozen
input: [2, 6, 6]
classes: 3
layers:
  - {name: c1, type: conv, filters: 4, kernel: 3, trainable: false}
  - {name: bn1, type: batchnorm, trainable: false}
  - {type: relu}
  - {name: c2, type: conv, filters: 4, kernel: 3, groups: 2}
  - {name: d1, type: dense, units: 3}
  - {type: softmax}
""",
        seed=0,
    )
    before = {key: value.copy() for key, value in {**net.params, **net.buffers}.items()}
    optimizer = make_optimizer({"type": "sgd", "lr": 0.1}, net.params, net.roles)
    rng = np.random.default_rng(0)
    net.forward(rng.standard_normal((8, 2, 6, 6)).astype(np.float32), train=True)
    net.backward_loss(rng.integers(0, 3, 8))
    optimizer.step(net.grads)
    frozen = {"c1.W", "c1.b", "bn1.gamma", "bn1.beta", "bn1.running_mean", "bn1.running_var"}
    for key, value in {**net.params, **net.buffers}.items():
        assert np.array_equal(value, before[key]) == (key in frozen), key
