"""`constraints:` in a spec: validate, summary and train refuse a network beyond them,
naming the constraint, the value and the limit; sweeps call `check_constraints`."""

import pytest
from click.testing import CliRunner

from cnnbuild.builder import plan
from cnnbuild.cli import main
from cnnbuild.constraints import ConstraintError, check_constraints, parse_size
from cnnbuild.errors import CnnbuildError
from cnnbuild.specfile import parse_spec

SPEC = """\
name: small
input: [1, 28, 28]
classes: 10
constraints: {max_params: 100000, max_mult_adds: 1000000, max_activation_memory: 10 MiB}
layers:
  - {type: conv, filters: 4, kernel: 3, padding: same}
  - {type: relu}
  - {type: flatten}
  - {type: dense, units: 16}
  - {type: dense, units: 10}
  - {type: softmax}
"""  # 50,402 trainable parameters, 78,560 multiply-adds, 5.0 MiB at batch 128


def run(*args):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert "Traceback" not in result.output
    return result


def test_a_network_within_its_constraints_passes(write_spec):
    path = write_spec(SPEC)
    assert run("validate", path).exit_code == 0
    assert run("summary", path).exit_code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "max_params: 100000",
            ":4:27: constraints: max_params: the network has 50,402 trainable "
            "parameters, over the limit of 50,000",
        ),
        (
            "max_mult_adds: 1000000",
            ":4:50: constraints: max_mult_adds: the network has 78,560 multiply-adds "
            "per image, over the limit of 50,000",
        ),
        (
            "max_activation_memory: 10 MiB",
            ":4:82: constraints: max_activation_memory: the network has 5.0 MiB of activations in "
            "training at batch 128, over the limit of 48.8 KiB",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "summary"])
def test_a_broken_constraint_is_named_with_its_value_and_limit(
    write_spec, change, message, command
):
    key = change.split(":")[0]
    path = write_spec(SPEC.replace(change, f"{key}: 50000"))
    result = run(command, path)
    assert result.exit_code == 2
    assert f"{path}{message}" in result.output, result.output


def test_check_constraints_raises_a_cnnbuild_error_for_sweeps():
    spec = parse_spec(SPEC.replace("max_params: 100000", "max_params: 10"), "net.yaml")
    with pytest.raises(ConstraintError) as caught:
        check_constraints(spec, plan(spec))
    assert isinstance(caught.value, CnnbuildError)
    assert "max_params" in str(caught.value) and "50,402" in str(caught.value)
    check_constraints(parse_spec(SPEC), plan(parse_spec(SPEC)))  # within: nothing raised


def test_activation_memory_is_measured_at_the_batch_size_trained_with():
    spec = parse_spec(SPEC.replace("10 MiB", "1 MiB"))
    check_constraints(spec, plan(spec), batch_size=16)
    with pytest.raises(ConstraintError, match="at batch 64"):
        check_constraints(spec, plan(spec), batch_size=64)
    trained = parse_spec(SPEC.replace("10 MiB", "1 MiB") + "training: {batch_size: 16}\n")
    check_constraints(trained, plan(trained))


def test_train_refuses_before_reading_data_or_allocating(write_spec, tmp_path, isolated):
    path = write_spec(SPEC.replace("max_params: 100000", "max_params: 1000"))
    result = run("train", path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "max_params" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "size"), [(4096, 4096), ("512 B", 512), ("1.5 KiB", 1536), ("2GB", 2 * 10**9)]
)
def test_memory_limits_take_bytes_or_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{max_parms: 1}", "unknown key 'max_parms' — did you mean 'max_params'?"),
        ("{max_params: 0}", "'max_params' must be >= 1, got 0"),
        ("{max_activation_memory: lots}", "write a number of bytes, or a size such as"),
    ],
)
def test_constraints_are_checked_by_the_schema(write_spec, value, message):
    result = run("validate", write_spec(SPEC), "--set", f"constraints={value}")
    assert result.exit_code == 2 and message in result.output, result.output
