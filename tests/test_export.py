"""ONNX export: onnxruntime computes cnnbuild's probabilities for every layer type and option."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ARCHS
from test_train import SPEC

import cnnbuild
from cnnbuild.cli import main
from cnnbuild.data.normalization import Normalization
from cnnbuild.export import DEFAULT_OPSET, EXPORTERS, MIN_OPSET, onnx_probabilities, to_onnx
from cnnbuild.layers import REGISTRY

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'cnnbuild[onnx]'")
pytest.importorskip(
    "onnxruntime", reason="the checks need onnxruntime: pip install 'cnnbuild[onnx]'"
)

# Between them, every layer type and option: each padding mode, strides, pooling with
# stride != size and floor rounding, odd sizes, leaky slope, no bias, 3-input merges,
# batch norm after conv, dense and global pooling, merges of flat features; grouped,
# depthwise, dilated and rectangular convs, padded pooling, the normalisations over samples,
# the newer activations, squeeze-excitation products (either order) and frozen layers.
SPECS = {
    "chain": """
name: chain
input: [3, 13, 11]
classes: 4
layers:
  - {name: c1, type: conv, filters: 4, kernel: 3, stride: 2, padding: same}
  - {type: batchnorm}
  - {type: leaky_relu, slope: 0.2}
  - {name: c2, type: conv, filters: 5, kernel: 2, padding: valid, bias: false}
  - {type: tanh}
  - {name: c3, type: conv, filters: 3, kernel: 3, padding: 1}
  - {type: sigmoid}
  - {type: avgpool, size: 2, stride: 1}
  - {type: maxpool, size: 3, stride: 2}
  - {type: flatten}
  - {type: dense, units: 6, bias: false}
  - {type: batchnorm}
  - {type: relu}
  - {type: dropout, rate: 0.5}
  - {type: dense, units: 4}
  - {type: softmax}
""",
    "merges": """
name: merges
input: [2, 9, 9]
classes: 5
layers:
  - {name: a, type: conv, filters: 3, kernel: 3, padding: same}
  - {name: b, type: conv, filters: 3, kernel: 1, inputs: [input]}
  - {name: c, type: conv, filters: 3, kernel: 5, padding: 2, stride: 1, inputs: [input]}
  - {name: sum, type: add, inputs: [a, b, c]}
  - {name: cat, type: concat, inputs: [sum, a, c]}
  - {type: batchnorm}
  - {type: relu}
  - {type: avgpool, size: 3}
  - {type: maxpool, size: 2, stride: 1}
  - {type: global_avgpool}
  - {type: batchnorm}
  - {type: dense, units: 5}
  - {type: softmax}
""",
    "modern": """
name: modern
input: [3, 12, 11]
classes: 4
layers:
  - {name: stem, type: conv, filters: 6, kernel: [3, 5], stride: [2, 1], padding: [1, 2],
     trainable: false}
  - {type: groupnorm, groups: 3}
  - {type: hardswish}
  - {name: dw, type: conv, filters: 6, kernel: 3, groups: 6, padding: same, dilation: 2}
  - {type: layernorm}
  - {type: gelu}
  - {name: pw, type: conv, filters: 8, kernel: 1, groups: 2, bias: false}
  - {type: batchnorm, trainable: false}
  - {type: silu}
  - {name: mp, type: maxpool, size: 3, stride: 2, padding: 1}
  - {name: squeeze, type: global_avgpool}
  - {name: excite, type: dense, units: 8}
  - {name: gate, type: sigmoid}
  - {name: scaled, type: multiply, inputs: [gate, mp]}
  - {type: elu, alpha: 0.5}
  - {type: avgpool, size: 2, padding: 1}
  - {name: id, type: identity}
  - {name: gmax, type: global_maxpool}
  - {name: gavg, type: global_avgpool, inputs: [id]}
  - {name: both, type: multiply, inputs: [gmax, gavg]}
  - {type: groupnorm, groups: 2}
  - {type: layernorm}
  - {type: dense, units: 4}
  - {type: softmax}
""",
    "flat": """
name: flat
input: [2, 5, 5]
classes: 6
layers:
  - {name: d1, type: dense, units: 4}
  - {name: d2, type: dense, units: 3, inputs: [input]}
  - {name: cat, type: concat, inputs: [d1, d2, d1]}
  - {type: batchnorm}
  - {type: sigmoid}
  - {name: d3, type: dense, units: 6}
  - {name: twice, type: add, inputs: [d3, d3]}
  - {type: softmax}
""",
}


def randomized(net: cnnbuild.graph.Network, seed: int) -> cnnbuild.graph.Network:
    """Random biases and batch-norm scales, shifts and running statistics (not 0 and 1)."""
    rng = np.random.default_rng(seed)
    for key, value in net.params.items():
        if key.endswith((".b", ".beta")):
            value[...] = rng.normal(0, 0.2, value.shape)
        elif key.endswith(".gamma"):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
    for key, value in net.buffers.items():
        if key.endswith(".running_mean"):
            value[...] = rng.normal(0, 0.5, value.shape)
        else:
            value[...] = rng.uniform(0.3, 2.0, value.shape)
    return net


def assert_same_probabilities(
    net: cnnbuild.graph.Network, seed: int = 0, opset: int = DEFAULT_OPSET
) -> None:
    rng = np.random.default_rng(seed)
    channels = net.input_shape[0]
    normalization = Normalization(
        rng.uniform(0.2, 0.6, channels).astype(np.float32),
        rng.uniform(0.1, 0.4, channels).astype(np.float32),
    )
    model = to_onnx(net, normalization, [f"class {i}" for i in range(net.classes)], opset)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    for batch in (1, 7):
        images = rng.integers(0, 256, (batch, *net.input_shape), dtype=np.uint8)
        expected = net.predict(images, prepare=normalization.apply)
        got = onnx_probabilities(data, images)
        assert got.shape == (batch, net.classes)
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_every_registered_layer_type_has_an_exporter_and_a_test():
    tested = {
        node.layer.type_name for text in SPECS.values() for node in cnnbuild.loads(text).nodes
    }
    assert set(REGISTRY) <= set(EXPORTERS)
    assert set(REGISTRY) <= tested


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_layer_type_and_option(name):
    assert_same_probabilities(randomized(cnnbuild.loads(SPECS[name], seed=3), 4))


def test_every_layer_type_exports_at_the_oldest_opset():
    for name in sorted(SPECS):
        net = randomized(cnnbuild.loads(SPECS[name], seed=5), 6)
        assert_same_probabilities(net, opset=MIN_OPSET)


@pytest.mark.parametrize("path", ARCHS, ids=[path.stem for path in ARCHS])
def test_example_networks(path):
    assert_same_probabilities(randomized(cnnbuild.load(path, seed=1), 2))


def test_metadata_and_dynamic_batch():
    net = cnnbuild.loads(SPEC, seed=0)
    names = ["top", "middle", "bottom"]
    model = to_onnx(net, Normalization(np.array([0.5]), np.array([0.25])), names, opset=18)
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert props["name"] == "tiny" and json.loads(props["class_names"]) == names
    assert json.loads(props["input_shape"]) == [1, 8, 8]
    assert props["cnnbuild_version"] == cnnbuild.__version__
    assert model.opset_import[0].version == 18
    (images,) = model.graph.input
    assert images.name == "images"
    assert images.type.tensor_type.shape.dim[0].dim_param == "N"
    assert [output.name for output in model.graph.output] == ["probabilities"]
    assert "Dropout" not in {node.op_type for node in model.graph.node}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, image_folder):
    """best.npz of the tiny network trained for one epoch on the image folder."""
    spec = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    spec.write_text(SPEC)
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "matplotlib", None)  # no curves: faster
        result, output = run("train", spec, "--epochs", 1, "--data-dir", image_folder, "--out", out)
    assert result.exit_code == 0, output
    return out / "best.npz"


def test_export_command_writes_a_model_that_passes_its_check(checkpoint):
    result, output = run("export", checkpoint, "--check")
    assert result.exit_code == 0, output
    target = checkpoint.with_suffix(".onnx")
    assert f"wrote {target}" in output
    assert "test images" in output and "largest probability difference" in output
    assert "top-1 agreement: 48 of 48" in output
    onnx.checker.check_model(onnx.load(target), full_check=True)

    result, output = run("export", checkpoint)  # the default path exists now
    assert result.exit_code == 2 and "-o" in output and "Traceback" not in output
    result, output = run("export", checkpoint, "-o", target, "--opset", 13)
    assert result.exit_code == 0, output
    assert onnx.load(target).opset_import[0].version == 13


def test_check_uses_random_images_without_the_data(checkpoint, tmp_path, monkeypatch):
    from cnnbuild import commands
    from cnnbuild.data.dataset import DataError

    def missing(*args):
        raise DataError("no data here")

    monkeypatch.setattr(commands, "_checkpoint_dataset", missing)
    result, output = run("export", checkpoint, "-o", tmp_path / "tiny.onnx", "--check")
    assert result.exit_code == 0, output
    assert "random images (the test data cannot be loaded: no data here)" in output


def test_a_missing_extra_says_what_to_install(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    result, output = run("export", checkpoint, "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert output.strip().endswith("pip install 'cnnbuild[onnx]'")
    assert len(output.strip().splitlines()) == 1


def test_check_exits_1_above_the_tolerance(checkpoint, tmp_path, monkeypatch):
    from cnnbuild import export

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference is small enough
    result, output = run("export", checkpoint, "-o", tmp_path / "tiny.onnx", "--check")
    assert result.exit_code == 1, output
    assert "FAILED" in output


def test_an_unknown_opset_is_refused(checkpoint, tmp_path):
    result, output = run("export", checkpoint, "-o", tmp_path / "x.onnx", "--opset", 999)
    assert result.exit_code == 2 and "opset 999 is not available" in output
