"""`cnnbuild diagram`: DOT and Mermaid written by cnnbuild, SVG and PNG rendered by Graphviz."""

import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from conftest import ARCHS

from cnnbuild.builder import plan
from cnnbuild.cli import main
from cnnbuild.diagram import to_dot, to_mermaid
from cnnbuild.specfile import parse_spec, read_spec

BRANCHES = """\
name: branches
input: [3, 8, 8]
classes: 2
layers:
  - {name: stem, type: conv, filters: 4, kernel: 3, padding: same}
  - name: stage
    repeat: 2
    layers:
      - {name: conv, type: conv, filters: 4, kernel: 3, padding: same}
      - {name: sum, type: add, inputs: [conv, input]}
  - {name: side, type: conv, filters: 2, kernel: 1, inputs: [stem]}
  - {name: joined, type: concat, inputs: [stage_2_sum, side]}
  - {type: global_avgpool}
  - {type: dense, units: 2}
  - {type: softmax}
"""


def dot_program() -> str:
    """The path of Graphviz's dot; CI installs it, so there a missing one fails."""
    path = shutil.which("dot")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz's dot is missing: .ci/run installs it (apt-get install graphviz)")
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    return path


@pytest.mark.parametrize("arch", ARCHS, ids=[path.stem for path in ARCHS])
def test_real_dot_accepts_every_arch_and_draws_every_layer(arch):
    net = plan(read_spec(arch))
    rendered = subprocess.run(
        [dot_program(), "-Tsvg"], input=to_dot(net), capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    for node in net.nodes:
        assert f">{node.name}: {node.layer.type_name}<" in rendered.stdout, node.name


def test_repeat_blocks_are_clusters_and_merges_are_joins():
    net = plan(parse_spec(BRANCHES))
    dot, mermaid = to_dot(net), to_mermaid(net)
    for block in ("stage_1", "stage_2"):
        assert f'subgraph "cluster_{block}"' in dot and f"subgraph b_{block} [{block}]" in mermaid
    assert 'stage_2_sum [label="stage_2_sum: add' in dot and "shape=ellipse" in dot
    edges = {"stem -> side", "stage_2_sum -> joined", "side -> joined", "stem -> stage_1_sum"}
    edges.add("stage_1_sum -> stage_2_sum")  # `input` inside a block: the block's input
    assert edges <= {line.strip(" ;") for line in dot.splitlines()}
    assert "n_stage_2_sum((" in mermaid and "n_side --> n_joined" in mermaid
    assert "filters 4, kernel 3, padding same" in dot  # key options: those not at default
    assert "(8, 8, 8) · " not in dot and "(6, 8, 8)" in dot  # concat's shape, no params


def test_svg_and_png_through_the_command_line(tmp_path):
    dot_program()
    pytest.importorskip("graphviz", reason="pip install 'cnnbuild[diagram]'")
    for fmt, magic in (("svg", b"<?xml"), ("png", b"\x89PNG")):
        out = tmp_path / f"mnist.{fmt}"
        result = CliRunner().invoke(
            main, ["diagram", str(ARCHS[0]), "--format", fmt, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert out.read_bytes().startswith(magic)
    result = CliRunner().invoke(main, ["diagram", str(ARCHS[0]), "--format", "mermaid"])
    assert result.exit_code == 0 and result.output.startswith("flowchart TB")


def test_the_readme_shows_the_mermaid_diagram_cnnbuild_draws_today():
    readme = (ARCHS[0].parent.parent / "README.md").read_text()
    block = readme.split("```mermaid\n")[1].split("```")[0]
    assert block == to_mermaid(plan(read_spec(ARCHS[0].parent / "mnist.yaml")))


def test_overrides_apply_to_the_drawing_as_to_the_summary():
    args = ["diagram", str(ARCHS[0].parent / "mnist.yaml"), "--set", "conv1.filters=8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "(8, 28, 28) · 80 params" in result.output
