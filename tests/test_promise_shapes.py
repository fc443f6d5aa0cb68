"""Promise 10: for random stacks and graphs, the builder infers exactly the shapes a forward
pass produces, and rejects every invalid network when it is built, never during a pass.

The expected shapes come from an oracle written here from the documented formulas."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from promises import count, record

from cnnbuild.builder import build
from cnnbuild.errors import SpecError
from cnnbuild.graph import INPUT, Observer
from cnnbuild.specfile import spec_from_data

Shape = tuple[int, ...] | None  # None: no valid shape (the network is invalid)
SEEN: Counter = Counter()


def window(shape: Shape, size: int, stride: int, pad: int) -> Shape:
    if shape is None or len(shape) != 3 or min(shape[1:]) + 2 * pad < size:
        return None
    c, h, w = shape
    return c, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1


def conv_shape(shape: Shape, layer: dict) -> Shape:
    k, padding = layer["kernel"], layer.get("padding", "valid")
    if padding == "same" and k % 2 == 0:
        return None
    pad = {"valid": 0, "same": (k - 1) // 2}.get(padding, padding)
    out = window(shape, k, layer.get("stride", 1), pad)
    return None if out is None else (layer["filters"], *out[1:])


def oracle(shape: Shape, layer: dict, inputs: list[Shape]) -> Shape:
    """The output shape the documentation promises, or None where the layer cannot apply."""
    kind = layer["type"]
    if kind in ("add", "concat"):
        if any(s is None for s in inputs):
            return None
        first = inputs[0]
        if kind == "add":
            return first if all(s == first for s in inputs) else None
        if any(len(s) != len(first) or s[1:] != first[1:] for s in inputs):
            return None
        return (sum(s[0] for s in inputs), *first[1:])
    if shape is None:
        return None
    if kind == "conv":
        return conv_shape(shape, layer)
    if kind in ("maxpool", "avgpool"):
        return window(shape, layer["size"], layer.get("stride") or layer["size"], 0)
    if kind == "global_avgpool":
        return shape[:1] if len(shape) == 3 else None
    if kind == "flatten":
        return (math.prod(shape),)
    if kind == "dense":
        return (layer["units"],)
    if kind == "softmax":
        return shape if len(shape) == 1 else None
    return shape  # activations, batch norm, dropout


SIMPLE = ["relu", "leaky_relu", "sigmoid", "tanh", "batchnorm", "dropout", "flatten"]


@st.composite
def layer(draw, name: str) -> dict:
    kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool", "dense", *SIMPLE]))
    item = {"name": name, "type": kind}
    if kind == "conv":
        item |= {"filters": draw(st.integers(1, 4)), "kernel": draw(st.integers(1, 5))}
        item["stride"] = draw(st.integers(1, 3))
        item["padding"] = draw(st.sampled_from(["valid", "same", 0, 1, 2]))
    elif kind in ("maxpool", "avgpool"):
        item["size"] = draw(st.integers(1, 4))
        item["stride"] = draw(st.sampled_from([None, 1, 2, 3]))
    elif kind == "dense":
        item["units"] = draw(st.integers(1, 5))
    return item


@st.composite
def networks(draw) -> tuple[dict, list[Shape] | None]:
    """A random network spec and, when it is valid, the shapes of its layers in order."""
    input_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    classes = draw(st.integers(2, 4))
    layers: list[dict] = []
    shapes: list[Shape] = []
    outputs = {INPUT: input_shape}
    current, last = input_shape, INPUT

    def add(item: dict, inputs: list[str] | None = None) -> None:
        nonlocal current, last
        if inputs:
            item["inputs"] = inputs
        sources = inputs or [last]
        current = oracle(outputs[sources[0]], item, [outputs[s] for s in sources])
        layers.append(item)
        shapes.append(current)
        outputs[item["name"]] = current
        last = item["name"]

    for i in range(draw(st.integers(0, 6))):
        shape = draw(st.sampled_from(["layer", "layer", "branch", "global", "repeat"]))
        name = f"l{i}"
        SEEN[shape] += 1
        if shape == "layer":
            add(draw(layer(name)))
        elif shape == "global":
            add({"name": name, "type": "global_avgpool"})
        elif shape == "branch":
            merge = draw(st.sampled_from(["add", "concat"]))
            start = last
            add(draw(layer(f"{name}_b")))
            partner = draw(st.sampled_from([start, *outputs]))
            add({"name": name, "type": merge}, [last, partner])
        else:
            layers_before = len(layers)
            block = [
                {"name": "c", "type": "conv", "filters": draw(st.integers(1, 3)), "kernel": 3,
                 "padding": "same"},
                {"name": "s", "type": draw(st.sampled_from(["add", "concat"])),
                 "inputs": ["c", INPUT]},
            ]  # fmt: skip
            repeat = draw(st.integers(1, 3))
            for r in range(1, repeat + 1):
                block_input = last
                add(dict(block[0], name=f"{name}_{r}_c"))
                add(dict(block[1], name=f"{name}_{r}_s"), [f"{name}_{r}_c", block_input])
            del layers[layers_before:]
            layers.append({"name": name, "repeat": repeat, "layers": block})
            outputs[f"{name}_{repeat}_s"] = current
    ending = draw(st.sampled_from(["good"] * 6 + ["bare", "wrong-classes", "no-softmax"]))
    if ending in ("good", "wrong-classes"):
        add({"name": "logits", "type": "dense", "units": classes + (ending != "good")})
    if ending != "no-softmax":
        add({"name": "out", "type": "softmax"})
    valid = all(s is not None for s in shapes) and shapes and shapes[-1] == (classes,)
    valid = valid and layers[-1]["type"] == "softmax"
    spec = {"name": "random", "input": list(input_shape), "classes": classes, "layers": layers}
    return spec, shapes if valid else None


class Shapes(Observer):
    """Records the per-sample shape of each layer's output, in the order layers run."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []

    def after_forward(self, name: str, output: np.ndarray) -> None:
        self.names.append(name)
        self.shapes.append(output.shape[1:])


def real_shapes(net, x: np.ndarray, train: bool) -> list[tuple[int, ...]]:
    """The output shape of every layer in a forward pass of ``x``, in the nodes' order."""
    with net.observed(Shapes()) as seen:
        net.forward(x, train)
    assert seen.names == [node.name for node in net.nodes]
    return seen.shapes


RESULTS: Counter = Counter()


@pytest.mark.slow
@settings(
    max_examples=count(1000, 10_000),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(networks())
def test_inferred_shapes_equal_real_ones_and_invalid_networks_fail_at_build(example):
    spec, expected = example
    try:
        net = build(spec_from_data(spec, "<random>"), seed=0)
    except SpecError:
        RESULTS["rejected at build"] += 1
        report()
        assert expected is None, spec
        return
    assert expected is not None, spec
    assert [node.output_shape for node in net.nodes] == expected
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
    assert real_shapes(net, x[:1], train=False) == expected
    assert real_shapes(net, x, train=True) == expected
    assert net.forward(x, train=True).shape == (2, spec["classes"])
    RESULTS["built, shapes equal a forward pass"] += 1
    report()


def report() -> None:
    built, rejected = RESULTS["built, shapes equal a forward pass"], RESULTS["rejected at build"]
    record(
        10,
        "random stacks and graphs (hypothesis)",
        f"{built + rejected:,} networks ({SEEN['branch']:,} add/concat branches, "
        f"{SEEN['repeat']:,} repeat blocks): {built:,} built, inferred = real shapes in all; "
        f"{rejected:,} rejected at build, all invalid by the oracle; 0 failed mid-forward",
    )
