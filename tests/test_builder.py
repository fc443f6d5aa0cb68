"""The builder: names, inputs, ordering, shape inference and the errors it reports (each kind
of malformed spec, with its message, is a case in test_spec.py)."""

import numpy as np
import pytest
from conftest import ARCHS
from gradcheck import numerical_gradient

import cnnbuild
from cnnbuild.errors import SpecError
from cnnbuild.graph import Observer
from cnnbuild.layers.base import Role
from cnnbuild.summary import summarize

HEAD = "name: t\ninput: [2, 8, 8]\nclasses: 3\nlayers:\n"
TAIL = "  - {type: flatten}\n  - {type: dense, units: 3}\n  - {type: softmax}\n"


class Shapes(Observer):
    """Records the per-sample shape of each layer's output, in the order layers run."""

    def __init__(self) -> None:
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def after_forward(self, name: str, output: np.ndarray) -> None:
        self.shapes.append((name, output.shape[1:]))


@pytest.mark.parametrize("path", ARCHS, ids=[p.stem for p in ARCHS])
def test_inferred_shapes_equal_a_real_forward_pass(path):
    net = cnnbuild.load(path, seed=0)
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
    with net.observed(Shapes()) as real:
        assert net.forward(x).shape == (2, net.classes)
    assert real.shapes == [(node.name, node.output_shape) for node in net.nodes]


@pytest.mark.parametrize(
    ("arch", "trainable", "non_trainable"),
    [
        # conv 4*1*9+4, bn 2*4, dense 784*128+128, bn 2*128, dense 128*10+10
        ("mnist", 40 + 8 + 100_480 + 256 + 1_290, 8 + 256),
        # conv 8*3*9+8, bn 2*8, dense 2048*256+256, bn 2*256, dense 256*10+10
        ("cifar", 224 + 16 + 524_544 + 512 + 2_570, 16 + 512),
        ("mnist_mlp", 784 * 128 + 128 + 128 * 10 + 10, 0),
    ],
)
def test_parameter_counts_match_hand_counts(arch, trainable, non_trainable):
    summary = summarize(cnnbuild.load(f"archs/{arch}.yaml"))
    assert (summary.trainable, summary.non_trainable) == (trainable, non_trainable)


def test_mult_adds_are_exact_for_the_report_mnist_net():
    summary = summarize(cnnbuild.load("archs/mnist.yaml"))
    macs = {row.name: row.macs for row in summary.rows}
    assert macs["conv1"] == 4 * 1 * 3 * 3 * 28 * 28
    assert macs["dense1"] == 784 * 128
    assert macs["dense2"] == 128 * 10
    assert macs["batchnorm1"] == 4 * 28 * 28


def test_default_names_count_per_type_and_skip_names_in_use():
    net = cnnbuild.loads(
        HEAD + "  - {type: conv, filters: 2, kernel: 3}\n"
        "  - {name: conv1, type: conv, filters: 2, kernel: 3}\n  - {type: relu}\n" + TAIL
    )
    assert [node.name for node in net.nodes][:3] == ["conv2", "conv1", "relu1"]


def test_repeat_blocks_make_names_unique_and_chain_repetitions():
    net = cnnbuild.loads(
        HEAD + "  - repeat: 3\n    name: blk\n    layers:\n"
        "      - {name: c, type: conv, filters: 2, kernel: 3, padding: same}\n"
        "      - {name: s, type: add, inputs: [c, input]}\n" + TAIL
    )
    names = [node.name for node in net.nodes]
    assert names[:6] == ["blk_1_c", "blk_1_s", "blk_2_c", "blk_2_s", "blk_3_c", "blk_3_s"]
    inputs = {node.name: node.inputs for node in net.nodes}
    assert inputs["blk_1_s"] == ["blk_1_c", "input"]
    assert inputs["blk_2_c"] == ["blk_1_s"]
    assert inputs["blk_2_s"] == ["blk_2_c", "blk_1_s"]


def test_branches_are_ordered_before_their_merge():
    net = cnnbuild.loads(
        HEAD + "  - {name: a, type: conv, filters: 2, kernel: 1, inputs: [input]}\n"
        "  - {name: m, type: concat, inputs: [a, b]}\n"
        "  - {name: b, type: conv, filters: 3, kernel: 1, inputs: [input]}\n"
        "  - {type: flatten, inputs: [m]}\n  - {type: dense, units: 3}\n  - {type: softmax}\n"
    )
    order = [node.name for node in net.nodes]
    assert order.index("b") < order.index("m")
    assert net.nodes[order.index("m")].output_shape == (5, 8, 8)


def test_same_seed_gives_the_same_weights():
    a = cnnbuild.load("archs/mnist.yaml", seed=7).params
    b = cnnbuild.load("archs/mnist.yaml", seed=7).params
    c = cnnbuild.load("archs/mnist.yaml", seed=8).params
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.W"], c["conv1.W"])


def test_params_are_float32_and_named_by_layer():
    net = cnnbuild.load("archs/mnist.yaml")
    assert {"conv1.W", "conv1.b", "batchnorm1.gamma", "dense2.W"} <= set(net.params)
    assert {"batchnorm1.running_mean", "batchnorm2.running_var"} <= set(net.buffers)
    assert all(p.dtype == np.float32 for p in net.params.values())
    assert net.params.keys() == net.grads.keys()
    # Weight decay for conv and dense weights only; everything trainable.
    assert net.roles == {key: Role(decay=key.endswith(".W")) for key in net.params}


def build_error(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        cnnbuild.loads(text)
    return str(caught.value)


def test_shape_error_names_the_layer_shows_arithmetic_and_shapes_so_far():
    message = build_error(
        HEAD + "  - {name: big, type: conv, filters: 2, kernel: 3}\n"
        "  - {name: pool, type: maxpool, size: 8}\n" + TAIL
    )
    assert "<spec>:6:5: layers[1] 'pool' (maxpool):" in message
    assert "= 6 < 8" in message
    assert "Shapes up to the error" in message
    assert "big" in message and "(2, 6, 6)" in message


def test_graph_errors_are_all_reported_at_once():
    message = build_error(
        HEAD + "  - {name: a, type: relu, inputs: [nope]}\n"
        "  - {name: a, type: relu}\n"
        "  - {name: b, type: relu, inputs: [reul]}\n" + TAIL
    )
    assert "unknown input 'nope'" in message
    assert "duplicate layer name 'a'" in message
    assert "unknown input 'reul'" in message


GRAPH = """\
name: g
input: [2, 5, 5]
classes: 3
layers:
  - {name: a, type: conv, filters: 3, kernel: 3, padding: same}
  - {name: bn, type: batchnorm}
  - {name: b, type: conv, filters: 3, kernel: 1, inputs: [input]}
  - {name: sum, type: add, inputs: [bn, b]}
  - {name: act, type: tanh}
  - {name: c, type: conv, filters: 2, kernel: 2, inputs: [input]}
  - {name: cat, type: concat, inputs: [act, b]}
  - {name: pool, type: avgpool, size: 2}
  - {name: side, type: maxpool, size: 2, inputs: [c]}
  - {name: merged, type: concat, inputs: [pool, side]}
  - {type: dense, units: 3}
  - {type: softmax}
"""


@pytest.mark.parametrize("train", [True, False])
def test_a_whole_graph_with_add_and_concat_passes_a_gradient_check(train):
    """Central differences of L = sum(forward(x) * r) w.r.t. the input and every parameter."""
    net = cnnbuild.loads(GRAPH, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *net.input_shape))
    r = rng.standard_normal((3, net.classes))

    def loss() -> float:
        return float((net.forward(x, train=train) * r).sum())

    loss()
    dx = net.backward(r)
    for array, analytic, name in [
        (x, dx, "input"),
        *((net.params[k], net.grads[k].copy(), k) for k in net.params),
    ]:
        numeric = numerical_gradient(loss, array)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


# --- planning without allocating -------------------------------------------------------------


@pytest.mark.parametrize("path", ARCHS, ids=[p.stem for p in ARCHS])
def test_declared_parameter_shapes_are_the_shapes_build_allocates(path):
    from cnnbuild.builder import plan
    from cnnbuild.specfile import read_spec

    planned = plan(read_spec(path))
    assert not planned.allocated and not planned.params and not planned.buffers
    built = cnnbuild.load(path, seed=0)
    for node, twin in zip(built.nodes, planned.nodes, strict=True):
        shapes = twin.layer.parameter_shapes(twin.input_shapes)
        assert shapes == {key: value.shape for key, value in node.layer.params.items()}
        buffers = twin.layer.buffer_shapes(twin.input_shapes)
        assert buffers == {key: value.shape for key, value in node.layer.buffers.items()}
    assert summarize(planned) == summarize(built)


def test_allocating_a_plan_gives_the_weights_build_gives():
    from cnnbuild.builder import allocate, plan
    from cnnbuild.specfile import parse_spec

    spec = parse_spec(GRAPH)
    built, planned = cnnbuild.builder.build(spec, seed=7), allocate(plan(spec), seed=7)
    assert built.params.keys() == planned.params.keys()
    for key, value in built.params.items():
        np.testing.assert_array_equal(value, planned.params[key])
    assert built.rng.random() == planned.rng.random()  # the same generator state after
    with pytest.raises(ValueError, match="already has its weights"):
        allocate(planned)


def test_a_planned_network_refuses_to_run():
    from cnnbuild.builder import plan
    from cnnbuild.specfile import parse_spec

    net = plan(parse_spec(GRAPH))
    with pytest.raises(RuntimeError, match="only planned"):
        net.forward(np.zeros((1, *net.input_shape), np.float32))


def test_a_plugin_layer_that_only_defines_build_is_counted_by_a_throwaway_build():
    from typing import ClassVar

    from cnnbuild.builder import plan
    from cnnbuild.layers import REGISTRY, Layer, register
    from cnnbuild.options import Option, integer
    from cnnbuild.specfile import parse_spec

    class Scale(Layer):
        type_name = "test_scale"
        options: ClassVar[dict[str, Option]] = {"copies": integer(1, "Copies.", 1)}
        builds = 0

        def build(self, input_shapes, rng, dtype=np.float32):
            type(self).builds += 1
            self.add_param("s", np.ones((self.config["copies"], *input_shapes[0]), dtype))
            self.buffers = {"count": np.zeros(1, dtype)}

        def forward(self, xs, train=False):
            return xs[0] * self.params["s"].sum(axis=0)

        def backward(self, dy):
            return [dy * self.params["s"].sum(axis=0)]

    register(Scale)
    try:
        spec = parse_spec(HEAD + "  - {name: sc, type: test_scale, copies: 3}\n" + TAIL)
        planned = plan(spec)
        row = next(row for row in summarize(planned).rows if row.name == "sc")
        assert (row.params, row.buffers) == (3 * 2 * 8 * 8, 1)
        assert not planned.layers["sc"].params  # the copy was built, not the layer
        assert summarize(planned) == summarize(cnnbuild.builder.build(spec))
    finally:
        REGISTRY.unregister("test_scale")


def test_a_repeat_inside_a_repeat_is_counted_before_it_is_expanded():
    text = (
        HEAD
        + (
            "  - repeat: 1000\n    name: outer\n    layers:\n"
            "      - repeat: 1000\n        layers:\n          - {type: relu}\n"
        )
        + TAIL
    )
    with pytest.raises(SpecError) as caught:
        cnnbuild.loads(text)
    assert str(caught.value) == (
        "<spec>:5:5: layers[0] 'outer' (repeat block): the network expands to 1,000,003 "
        "layers, more than the 10,000 cnnbuild builds (repeat 1,000 at line 8 inside repeat "
        "1,000 at line 5) — lower `repeat`; even deep networks have a few hundred layers"
    )
