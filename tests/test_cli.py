"""The command line, through click's CliRunner."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT

from cnnbuild.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_summary_table_shows_layers_and_totals():
    result = run("summary", "archs/mnist.yaml")
    assert result.exit_code == 0, result.output
    assert "conv1" in result.output and "(4, 28, 28)" in result.output
    assert "Trainable parameters:" in result.output and "102,074" in result.output


def test_summary_json_is_machine_readable():
    result = run("summary", "archs/cifar_resnet.yaml", "--format", "json", "--batch-size", "64")
    data = json.loads(result.output)
    assert data["batch_size"] == 64
    adds = [row for row in data["rows"] if row["type"] == "add"]
    assert len(adds) == 6 and all(len(row["inputs"]) == 2 for row in adds)
    assert data["trainable"] == sum(row["params"] for row in data["rows"])


def test_summary_markdown_is_a_table():
    result = run("summary", "archs/mnist.yaml", "--format", "markdown")
    assert "| layer | type |" in result.output and "| ---: |" in result.output.replace(
        "---: | ---:", "---: |"
    )


def test_activation_memory_scales_with_batch_size():
    small = json.loads(run("summary", "archs/mnist.yaml", "-b", "1", "--format", "json").output)
    large = json.loads(run("summary", "archs/mnist.yaml", "-b", "10", "--format", "json").output)
    assert large["activation_bytes"] == 10 * small["activation_bytes"]


def test_validate_says_ok_for_each_file():
    result = run("validate", "archs/mnist.yaml", "archs/cifar.yaml")
    assert result.exit_code == 0
    assert result.output.count(": OK") == 2


def test_validate_reports_bad_files_and_exits_2(write_spec):
    bad = write_spec("name: x\n")
    result = run("validate", "archs/mnist.yaml", str(bad))
    assert result.exit_code == 2
    assert "archs/mnist.yaml: OK" in result.output and f"{bad}:1:1:" in result.output


def test_missing_file_is_a_usage_error():
    result = run("summary", "nope.yaml")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_schema_command_prints_the_schema_file():
    assert run("schema").output == (ROOT / "schemas" / "cnnbuild.schema.json").read_text()


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "cnnbuild", "--help"], capture_output=True, text=True, check=True
    )
    assert "summary" in result.stdout and "validate" in result.stdout


def test_help_does_not_import_numpy():
    code = "import sys, cnnbuild.cli; print('numpy' in sys.modules, 'jsonschema' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "args",
    [["summary", "archs/mnist.yaml"], ["validate", "archs/mnist.yaml"], ["schema"]],
    ids=["summary", "validate", "schema"],
)
def test_commands_that_compute_nothing_do_not_import_numba(args):
    """numba takes a second to import: only commands that run the fast engine pay for it."""
    code = (
        "import sys\nfrom cnnbuild.cli import main\n"
        f"try:\n    main({args!r})\n"
        "except SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "print('numba' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr.split()[-1] == "False"
