"""The engine's fast paths against the plain ones: chunked convolution, gradients without the
input gradient, and memory that does not grow with the number of images predicted."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import ROOT

from cnnbuild.builder import load, loads
from cnnbuild.graph import INPUT, Observer
from cnnbuild.layers import conv, layer_class
from cnnbuild.layers.output import cross_entropy

CONVS = [
    # (config, per-sample input shape): stride 1 goes through the convolution of dy,
    # stride 2 and padding >= kernel through col2im
    ({"filters": 3, "kernel": 3, "padding": "same"}, (2, 6, 5)),
    ({"filters": 2, "kernel": 3, "stride": 2, "padding": 1, "bias": False}, (3, 7, 6)),
    ({"filters": 2, "kernel": 2, "padding": 3}, (1, 4, 4)),
]


def run_conv(config, shape, train):
    """forward, backward and backward_params of one conv layer on a fixed batch of 5."""
    layer = layer_class("conv")("c", **config)
    layer.build([shape], np.random.default_rng(0), np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, *shape))
    y = layer.forward([x], train=train)
    dy = rng.standard_normal(y.shape)
    (dx,) = layer.backward(dy)
    grads = {key: grad.copy() for key, grad in layer.grads.items()}
    for grad in layer.grads.values():
        grad[...] = np.nan
    layer.forward([x], train=train)
    layer.backward_params(dy)
    return y, dx, grads, {key: grad.copy() for key, grad in layer.grads.items()}


@pytest.mark.parametrize(("config", "shape"), CONVS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_conv_in_chunks_equals_conv_of_the_whole_batch(monkeypatch, config, shape, train):
    # Inference unfolds a chunk of images at a time (training, the whole batch); after an
    # inference pass, backward unfolds x again.
    whole = run_conv(config, shape, train)
    monkeypatch.setattr(conv, "CHUNK", 1)  # one image at a time
    chunked = run_conv(config, shape, train)
    for ours, theirs in zip(chunked[:2], whole[:2], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    for grads in (chunked[2], chunked[3]):
        for key, grad in grads.items():
            np.testing.assert_allclose(grad, whole[2][key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("type_name", ["conv", "dense", "batchnorm"])
def test_backward_params_fills_the_grads_backward_fills(type_name):
    config, shape = {
        "conv": ({"filters": 3, "kernel": 3, "padding": 1}, (2, 5, 5)),
        "dense": ({"units": 4}, (2, 3, 3)),
        "batchnorm": ({}, (2, 3, 3)),
    }[type_name]
    layer = layer_class(type_name)("l", **config)
    layer.build([shape], np.random.default_rng(0), np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, *shape))
    dy = rng.standard_normal(layer.forward([x], train=True).shape)
    layer.backward(dy)
    expected = {key: grad.copy() for key, grad in layer.grads.items()}
    layer.forward([x], train=True)
    assert layer.backward_params(dy) is None
    for key, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, expected[key])


@pytest.mark.parametrize("arch", ["mnist", "cifar_resnet"])
def test_training_gradients_skip_only_the_input_gradient(arch):
    # backward_loss leaves out dx of the layers that read the input; the grads must equal
    # those of the full backward pass from the same loss gradient.
    net = load(ROOT / "archs" / f"{arch}.yaml", seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, *net.input_shape))
    labels = rng.integers(0, net.classes, 4)
    state = net.rng.bit_generator.state
    p = net.forward(x, train=True)
    dp = np.zeros_like(p)
    dp[np.arange(4), labels] = -1 / (4 * p[np.arange(4), labels])  # d mean cross-entropy
    assert net.backward(dp).shape == x.shape
    full = {key: grad.copy() for key, grad in net.grads.items()}
    net.rng.bit_generator.state = state  # the same dropout masks
    net.forward(x, train=True)
    assert net.backward_loss(labels) is None
    for key, grad in net.grads.items():
        np.testing.assert_allclose(grad, full[key], rtol=1e-9, atol=1e-12, err_msg=key)


class Recorder(Observer):
    """Records every call: (pass, layer name, output or gradients)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def after_forward(self, name, output):
        self.calls.append(("forward", name, output))

    def after_backward(self, name, gradients):
        self.calls.append(("backward", name, gradients))


def test_an_observer_sees_every_layer_of_both_passes_in_order():
    net = load(ROOT / "archs" / "cifar_resnet.yaml", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *net.input_shape), dtype=np.float32)
    labels = rng.integers(0, net.classes, 3)
    with net.observed(Recorder()) as seen:
        probs = net.forward(x, train=True)
        net.backward_loss(labels)
    names = [node.name for node in net.nodes]
    assert [(kind, name) for kind, name, _ in seen.calls] == [
        *(("forward", name) for name in names),
        *(("backward", name) for name in reversed(names)),
    ]
    for node, (_, _, output) in zip(net.nodes, seen.calls, strict=False):
        assert output.shape == (3, *node.output_shape), node.name
    assert seen.calls[len(names) - 1][2] is probs
    for node, (_, _, gradients) in zip(reversed(net.nodes), seen.calls[len(names) :], strict=True):
        if node.inputs == [INPUT]:  # no input gradient is asked for
            assert gradients == [], node.name
        else:
            assert [g.shape[1:] for g in gradients] == node.input_shapes, node.name
    net.forward(x)  # the observer is gone after the block
    assert len(seen.calls) == 2 * len(names)


def test_a_net_reading_its_input_twice_still_trains():
    net = loads(
        """
name: twice
input: [2, 6, 6]
classes: 3
layers:
  - {name: a, type: conv, filters: 2, kernel: 3, padding: same, inputs: [input]}
  - {name: b, type: conv, filters: 2, kernel: 1, inputs: [input]}
  - {name: both, type: add, inputs: [a, b]}
  - {type: flatten}
  - {type: dense, units: 3}
  - {type: softmax}
""",
        seed=0,
    )
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    net.forward(x, train=True)
    net.backward_loss(np.array([0, 1, 2]))
    assert all(np.isfinite(grad).all() and grad.any() for grad in net.grads.values())


def test_inference_memory_does_not_grow_with_the_number_of_images():
    net = load(ROOT / "archs" / "cifar_resnet.yaml", seed=0)
    rng = np.random.default_rng(0)

    def peak_bytes(images: int) -> int:
        x = rng.standard_normal((images, *net.input_shape), dtype=np.float32)
        net.predict(x[:2], batch_size=5)  # scratch buffers already allocated
        tracemalloc.start()
        net.predict(x, batch_size=5)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    small, large = peak_bytes(10), peak_bytes(30)
    # Only the (N, classes) probabilities grow: 20 more images x 10 classes x 4 bytes. (A
    # forward pass of all the images at once would take about 25 MiB more.)
    assert large - small < 20 * 10 * 4 + 2**20, (small, large)


def test_training_steps_are_reproducible_bit_for_bit():
    losses = []
    for _ in range(2):
        net = load(ROOT / "archs" / "cifar_resnet.yaml", seed=3)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((6, *net.input_shape), dtype=np.float32)
        labels = rng.integers(0, net.classes, 6)
        loss = cross_entropy(net.forward(x, train=True), labels)
        net.backward_loss(labels)
        losses.append((loss, {key: grad.copy() for key, grad in net.grads.items()}))
    assert losses[0][0] == losses[1][0]
    for key, grad in losses[0][1].items():
        np.testing.assert_array_equal(grad, losses[1][1][key])
