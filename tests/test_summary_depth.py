"""summary --receptive-field, --depth N, and the warning for windows that drop the last rows
or columns of their input."""

import pytest
from click.testing import CliRunner
from conftest import ARCHS, ROOT

from cnnbuild.builder import plan
from cnnbuild.cli import main
from cnnbuild.specfile import parse_spec, read_spec
from cnnbuild.summary import collapse, dropped_edges, receptive_fields, summarize

ODD = """\
name: odd
input: [1, 29, 28]
classes: 10
layers:
  - {type: conv, filters: 4, kernel: [3, 5]}
  - {type: maxpool, size: 2}
  - {type: conv, filters: 4, kernel: 1, stride: 2}
  - {type: dense, units: 10}
  - {type: softmax}
"""


def resnet():
    return plan(read_spec(ROOT / "archs" / "cifar_resnet.yaml"))


def test_receptive_fields_grow_with_kernels_strides_and_pooling():
    fields = receptive_fields(plan(parse_spec(ODD)))
    # conv 3x5; pool 2 at stride 1 -> +1; 1x1 conv at stride 2 -> +0; dense sees it all
    assert fields["conv1"] == (3, 5)
    assert fields["maxpool1"] == (4, 6)
    assert fields["conv2"] == (4, 6)
    assert fields["dense1"] == (4 + 6 * 4, 6 + 5 * 4)  # 7x6 outputs, 4 pixels apart
    resnet_fields = receptive_fields(resnet())
    assert resnet_fields["res_a_1_out"] == (7, 7)  # two 3x3 convolutions after the stem
    assert resnet_fields["b_sum"] == (17, 17)  # the larger of the two branches


def test_depth_collapses_blocks_into_rows_and_keeps_the_totals():
    net = resnet()
    full = summarize(net)
    top = collapse(full, net, 0)
    assert [row.name for row in top.rows][:6] == [
        "stem",
        "stem_bn",
        "stem_relu",
        "res_a_1",
        "res_a_2",
        "b",
    ]
    b = next(row for row in top.rows if row.name == "b")
    assert b.type == "9 layers" and b.output_shape == (32, 16, 16)
    assert b.params + b.buffers == sum(
        row.params + row.buffers for row in full.rows if row.name.startswith("b_")
    )
    assert (top.trainable, top.macs) == (full.trainable, full.macs)
    assert collapse(full, net, 1).rows == full.rows  # nothing is nested two deep


def test_windows_that_never_reach_the_last_rows_are_warned_about():
    (warning,) = dropped_edges(plan(parse_spec(ODD)))
    assert warning.startswith(
        "maxpool1 (maxpool): windows of 2 at stride 2 never reach the last 1 of its 27 rows"
    )


@pytest.mark.parametrize("path", ARCHS, ids=[path.stem for path in ARCHS])
def test_the_example_networks_drop_nothing(path):
    assert dropped_edges(plan(read_spec(path))) == []


def test_the_command_line_options(write_spec):
    result = CliRunner().invoke(
        main, ["summary", str(write_spec(ODD)), "--receptive-field", "--depth", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "receptive field" in result.output and "3x5" in result.output
    assert "warning: maxpool1 (maxpool): windows of 2" in result.output
