"""`cnnbuild diff A B`: layers added, removed and changed, then the totals; exit status 0
when the networks are the same, 1 when they differ, 2 on errors (as diff(1))."""

from click.testing import CliRunner
from conftest import ROOT
from test_spec_command import saved

from cnnbuild.cli import main

MNIST = ROOT / "archs" / "mnist.yaml"


def run(*args):
    result = CliRunner().invoke(main, ["diff", *map(str, args)])
    assert "Traceback" not in result.output
    return result


def test_the_same_network_exits_0():
    result = run(MNIST, MNIST)
    assert result.exit_code == 0
    assert result.output == f"{MNIST} and {MNIST} are the same network (11 layers)\n"


def test_a_spec_and_its_checkpoint_are_the_same_network(tmp_path):
    assert run(MNIST, saved(MNIST, tmp_path)).exit_code == 0


def test_changed_added_and_removed_layers_then_the_totals(write_spec):
    text = MNIST.read_text()
    changed = text.replace("filters: 4", "filters: 8").replace(
        "  - {type: dropout, rate: 0.5}\n", "  - {name: extra, type: dense, units: 32}\n"
    )
    result = run(MNIST, write_spec(changed))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:2] == [f"--- {MNIST}", f"+++ {write_spec(changed)}"]
    assert "- dropout1 (dropout): output (128), 0 params, 0 mult-adds" in lines
    assert "+ extra (dense): output (32), 4,128 params, 4,096 mult-adds" in lines
    assert (
        "~ conv1 (conv): filters 4 -> 8; output (4, 28, 28) -> (8, 28, 28); params 40 -> 80; "
        "mult-adds 28,224 -> 56,448"
    ) in lines
    assert "Trainable parameters:" in result.output
    assert "102,074 -> " in result.output and "(+" in result.output


def test_inputs_and_the_input_shape_are_compared(write_spec):
    text = MNIST.read_text()
    result = run(MNIST, write_spec(text.replace("[1, 28, 28]", "[1, 32, 32]")))
    assert result.exit_code == 1
    assert "~ input: (1, 28, 28) -> (1, 32, 32)" in result.output


def test_a_blocks_spec_equals_the_network_written_out(write_spec):
    from test_blocks import SPEC, WRITTEN_OUT

    a, b = write_spec(SPEC, "a.yaml"), write_spec(WRITTEN_OUT, "b.yaml")
    assert run(a, b).exit_code == 0


def test_errors_exit_2(write_spec):
    bad = write_spec(MNIST.read_text().replace("units: 128", "units: 0"))
    result = run(MNIST, bad)
    assert result.exit_code == 2 and f"{bad}:" in result.output
    assert run(MNIST, ROOT / "missing.yaml").exit_code == 2
