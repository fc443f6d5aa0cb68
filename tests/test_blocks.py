"""Parametrised blocks: `blocks:` definitions and `use:` items, their names, their errors
(located at the use and at the definition), `--set` and checkpoints."""

import json

import pytest
from click.testing import CliRunner
from conftest import ROOT
from jsonschema import Draft202012Validator

import cnnbuild
from cnnbuild.builder import plan
from cnnbuild.cli import main
from cnnbuild.errors import SpecError
from cnnbuild.overrides import read_spec
from cnnbuild.specfile import parse_spec

SPEC = """\
name: sep
input: [3, 16, 16]
classes: 10
blocks:
  sep:
    params: {ch: null, out: null, stride: 1}
    layers:
      - {name: dw, type: conv, filters: $ch, kernel: 3, stride: $stride, padding: same}
      - {name: bn1, type: batchnorm}
      - {name: pw, type: conv, filters: $out, kernel: 1, bias: false}
layers:
  - {use: sep, name: s1, ch: 16, out: 32, stride: 2}
  - {use: sep, name: s2, ch: 32, out: 64, repeat: 2}
  - {type: global_avgpool}
  - {type: dense, units: 10}
  - {type: softmax}
"""

WRITTEN_OUT = """\
name: sep
input: [3, 16, 16]
classes: 10
layers:
  - {name: s1_dw, type: conv, filters: 16, kernel: 3, stride: 2, padding: same}
  - {name: s1_bn1, type: batchnorm}
  - {name: s1_pw, type: conv, filters: 32, kernel: 1, bias: false}
  - {name: s2_1_dw, type: conv, filters: 32, kernel: 3, stride: 1, padding: same}
  - {name: s2_1_bn1, type: batchnorm}
  - {name: s2_1_pw, type: conv, filters: 64, kernel: 1, bias: false}
  - {name: s2_2_dw, type: conv, filters: 32, kernel: 3, stride: 1, padding: same}
  - {name: s2_2_bn1, type: batchnorm}
  - {name: s2_2_pw, type: conv, filters: 64, kernel: 1, bias: false}
  - {type: global_avgpool}
  - {type: dense, units: 10}
  - {type: softmax}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        plan(parse_spec(text, "net.yaml"))
    return caught.value.problems


def test_a_used_block_is_the_network_written_out():
    used, written = cnnbuild.loads(SPEC, seed=0), cnnbuild.loads(WRITTEN_OUT, seed=0)
    assert [n.name for n in used.nodes] == [n.name for n in written.nodes]
    assert [n.output_shape for n in used.nodes] == [n.output_shape for n in written.nodes]
    assert [n.blocks for n in used.nodes][:4] == [("s1",), ("s1",), ("s1",), ("s2_1",)]
    assert all((used.params[k] == written.params[k]).all() for k in written.params)


def test_input_inside_a_block_is_the_use_s_input_and_blocks_nest():
    text = SPEC.replace(
        "layers:\n  - {use: sep, name: s1",
        """  res:
    params: {ch: 16}
    layers:
      - {use: sep, name: inner, ch: $ch, out: $ch}
      - {name: sum, type: add, inputs: [inner_pw, input]}
layers:
  - {use: res, name: r, ch: 3}
  - {use: sep, name: s1""",
    )
    net = plan(parse_spec(text))
    sums = [node for node in net.nodes if node.name == "r_sum"]
    assert sums and sums[0].inputs == ["r_inner_pw", "input"]
    assert net.nodes[0].name == "r_inner_dw" and net.nodes[0].output_shape == (3, 16, 16)


def test_the_resnet_example_is_written_with_blocks_and_builds_the_same_names():
    text = (ROOT / "archs" / "cifar_resnet.yaml").read_text()
    assert "use: residual" in text and "repeat: 2" in text
    names = [node.name for node in cnnbuild.load(ROOT / "archs" / "cifar_resnet.yaml").nodes]
    assert names[3:5] == ["res_a_1_conv1", "res_a_1_bn1"]
    assert "b_proj" in names and "c_out" in names and "res_c_1_out" in names


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (
            ("ch: 16, out: 32", "ch: 16, outt: 32"),
            [
                "net.yaml:12:34: layers[0] 's1' (use: sep): unknown parameter 'outt' — did you "
                "mean 'out'?; block 'sep' (line 5) takes ch, out, stride",
                "net.yaml:12:5: layers[0] 's1' (use: sep): missing parameter 'out', which block "
                "'sep' (line 5) requires",
            ],
        ),
        (
            ("ch: 16, out", "ch: 0, out"),
            [
                "net.yaml:12:5: layers[0] 's1' (use: sep): blocks.sep.layers[0] 'dw' (conv) "
                "(line 8): 'filters' must be >= 1, got 0 (from ch: 0)"
            ],
        ),
        (
            ("filters: $out", "filters: $outs"),
            [
                "net.yaml:10:41: blocks.sep.layers[2] 'pw' (conv): unknown parameter '$outs' — did "
                "you mean '$out'?; block 'sep' has ch, out, stride"
            ],
        ),
        (
            ("type: batchnorm}", "type: batchnorm, momentun: 0.5}"),
            [
                "net.yaml:9:38: blocks.sep.layers[1] 'bn1' (batchnorm): unknown key 'momentun' — "
                "did you mean 'momentum'?"
            ],
        ),
        (
            ("use: sep, name: s1", "use: sepp, name: s1"),
            [
                "net.yaml:12:11: layers[0] 's1' (use: sepp): unknown block 'sepp' — did you mean "
                "'sep'?; blocks defined: sep"
            ],
        ),
        (
            ("{name: bn1, type: batchnorm}", "{use: sep, ch: 1, out: 1}"),
            ["net.yaml:9:9: blocks.sep.layers[1] (use: sep): block 'sep' uses itself (sep -> sep)"],
        ),
    ],
    ids=[
        "unknown-and-missing",
        "invalid-value",
        "unknown-reference",
        "definition",
        "block",
        "cycle",
    ],
)
def test_errors_name_the_use_and_the_definition(change, fragments):
    found = problems(SPEC.replace(*change))
    for fragment in fragments:
        assert any(fragment in problem for problem in found), found


def test_shape_errors_inside_a_block_point_at_the_use_and_the_definition_line():
    (problem,) = problems(SPEC.replace("kernel: 1, bias", "kernel: 20, bias"))
    assert problem.startswith(
        "net.yaml:12:5: layers[0] 's1' (use: sep): blocks.sep.layers[2] 'pw' (conv) (line 10): "
        "kernel 20 is larger than its input"
    )


def test_two_uses_with_one_name_are_duplicates():
    found = problems(SPEC.replace("name: s2", "name: s1").replace("repeat: 2", "stride: 1"))
    assert any("duplicate layer name 's1_dw' (first used on line 12)" in p for p in found), found


def test_the_cli_exits_2_with_one_line_per_problem(write_spec):
    path = write_spec(SPEC.replace("ch: 16, out", "ch: -1, out"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}:12:5: layers[0] 's1' (use: sep): blocks.sep.layers[0]" in result.output


def test_editors_accept_blocks_with_the_shipped_schema():
    import yaml

    schema = json.loads((ROOT / "schemas" / "cnnbuild.schema.json").read_text())
    data = yaml.safe_load((ROOT / "archs" / "cifar_resnet.yaml").read_text())
    assert list(Draft202012Validator(schema).iter_errors(data)) == []


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ("s1.ch=8", lambda net: net.nodes[0].output_shape == (8, 8, 8)),
        ("layers.s2.repeat=3", lambda net: net.nodes[9].name == "s2_3_dw"),
        ("blocks.sep.layers.pw.filters=12", lambda net: net.nodes[2].output_shape == (12, 8, 8)),
        ("blocks.sep.params.stride=2", lambda net: net.nodes[3].output_shape == (32, 4, 4)),
        (
            "s2_2_pw.filters=12",
            lambda net: [n.output_shape[0] for n in net.nodes[5:9]] == [64, 32, 32, 12],
        ),
        ("layers.s1_dw.filters=8", lambda net: net.nodes[0].output_shape == (8, 8, 8)),
    ],
)
def test_set_changes_a_use_or_a_definition(write_spec, override, check):
    assert check(plan(read_spec(write_spec(SPEC), [override])))


def test_a_use_s_changes_alter_one_of_its_layers(write_spec):
    written = SPEC.replace("repeat: 2}", "repeat: 2, changes: {s2_2_pw: {filters: 12}}}")
    summaries = [
        CliRunner().invoke(main, ["summary", str(write_spec(written, "a.yaml"))]).output,
        CliRunner()
        .invoke(main, ["summary", str(write_spec(SPEC)), "--set", "s2_2_pw.filters=12"])
        .output,
    ]
    assert summaries[0] == summaries[1] and "(12, 8, 8)" in summaries[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("s2_3_pw.filters=8", "no key or layer named 's2_3_pw' — did you mean 's2_2_pw'?"),
        ("s1.dw.filters=8", "'s1' uses the block 'sep', whose layers are set in its definition"),
        ("s1.chh=3", "unknown parameter 'chh' — did you mean 'ch'?"),
    ],
)
def test_set_refuses_one_expanded_layer_clearly(write_spec, override, message):
    result = CliRunner().invoke(main, ["summary", str(write_spec(SPEC)), "--set", override])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_checkpoint_of_a_blocks_spec_round_trips(tmp_path, write_spec):
    from test_spec_command import saved

    checkpoint = saved(write_spec(SPEC), tmp_path)
    back = tmp_path / "back.yaml"
    assert CliRunner().invoke(main, ["spec", str(checkpoint), "-o", str(back)]).exit_code == 0
    summaries = [
        CliRunner().invoke(main, ["summary", str(path)]).output for path in (write_spec(SPEC), back)
    ]
    assert summaries[0] == summaries[1] and "s2_2_pw" in summaries[0]


def test_resuming_with_another_block_definition_is_refused(tmp_path, write_spec):
    from test_spec_command import saved

    checkpoint = saved(write_spec(SPEC), tmp_path)
    other = write_spec(SPEC.replace("kernel: 1, bias", "kernel: 3, padding: same, bias"), "b.yaml")
    result = CliRunner().invoke(main, ["train", str(other), "--resume", str(checkpoint)])
    assert result.exit_code == 2
    assert "the block 'sep' is defined differently" in result.output, result.output
