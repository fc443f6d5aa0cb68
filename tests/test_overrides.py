"""`--set PATH=VALUE` on summary, validate, train and time: paths, repeat blocks, errors
that say where, and what the run folder and the checkpoint record."""

import pytest
import yaml
from click.testing import CliRunner
from test_train import SPEC

from cnnbuild.checkpoint import load_checkpoint
from cnnbuild.cli import main
from cnnbuild.errors import SpecError
from cnnbuild.overrides import parse_value, read_spec, value_at

BLOCKS = """\
name: blocks
input: [1, 8, 8]
classes: 3
layers:
  - {name: stem, type: conv, filters: 4, kernel: 3, padding: same}
  - repeat: 2
    name: stage1
    layers:
      - {name: conv, type: conv, filters: 4, kernel: 3, padding: same}
      - {type: relu}
  - {type: flatten}
  - {type: dense, units: 3}
  - {type: softmax}
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def blocks_file(tmp_path):
    path = tmp_path / "blocks.yaml"
    path.write_text(BLOCKS)
    return path


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, result.output


def test_paths_reach_any_value(spec_file):
    spec = read_spec(
        spec_file,
        [
            "training.optimizer.lr=0.003",
            "training.epochs=3",
            "input=[1, 8, 8]",
            "layers.conv1.filters=8",
            "dense1.units=32",  # a default name
            "layers.5.bias=false",  # an index
            "training.optimizer.weight_decay=1e-4",  # YAML 1.1 reads 1e-4 as text
        ],
    )
    data = spec.data
    assert data["training"]["optimizer"] == {"type": "adam", "lr": 0.003, "weight_decay": 1e-4}
    assert data["training"]["epochs"] == 3 and data["input"] == [1, 8, 8]
    assert data["layers"][0]["filters"] == 8
    assert data["layers"][5] == {"type": "dense", "units": 32, "bias": False}
    assert len(spec.overrides) == 7


def test_a_key_the_file_omits_is_added(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text(SPEC.split("training:")[0])
    spec = read_spec(path, ["training.augment.flip=true", "training.validation=0.2"])
    assert spec.data["training"] == {"augment": {"flip": True}, "validation": 0.2}


def test_a_block_changes_in_every_repetition(blocks_file):
    result, output = run("summary", blocks_file, "--set", "stage1.conv.filters=6")
    assert result.exit_code == 0, output
    rows = [line.split() for line in output.splitlines() if "_conv " in line]
    assert [row[0] for row in rows] == ["stage1_1_conv", "stage1_2_conv"]
    assert all(row[2] == "(6," for row in rows)
    assert read_spec(blocks_file, ["stage1.repeat=3"]).data["layers"][1]["repeat"] == 3


def conv_outputs(output: str) -> dict[str, str]:
    """Summary rows of the block's convolutions: name -> the output's channels."""
    rows = [line.split() for line in output.splitlines() if "_conv " in line]
    return {row[0]: row[2] for row in rows}


@pytest.mark.parametrize("path", ["stage1_2_conv.filters", "layers.stage1_2_conv.filters"])
def test_one_repetition_changes_alone(blocks_file, path):
    result, output = run("summary", blocks_file, "--set", f"{path}=6")
    assert result.exit_code == 0, output
    assert conv_outputs(output) == {"stage1_1_conv": "(4,", "stage1_2_conv": "(6,"}
    spec = read_spec(blocks_file, [f"{path}=6", "stage1_2_conv.kernel=5"])
    assert spec.data["layers"][1]["changes"] == {"stage1_2_conv": {"filters": 6, "kernel": 5}}
    assert spec.data["layers"][1]["layers"][0]["filters"] == 4  # the block as written


def test_changes_written_in_the_file_build_the_same_network(tmp_path, blocks_file):
    written = tmp_path / "written.yaml"
    written.write_text(BLOCKS.replace("  - {type: flatten}", CHANGES + "  - {type: flatten}"))
    results = [
        run("summary", written),
        run("summary", blocks_file, "--set", "stage1_2_conv.filters=6"),
    ]
    assert results[0][0].exit_code == 0, results[0][1]
    assert results[0][1] == results[1][1]


CHANGES = """    changes:
      stage1_2_conv: {filters: 6}
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "stage1_3_conv: {filters: 6}",
            ":12:7: layers[1] 'stage1' (repeat block), its change to 'stage1_3_conv': no layer "
            "named 'stage1_3_conv' in this block — did you mean 'stage1_2_conv'?",
        ),
        (
            "stage1_2_conv: {filters: 0}",
            ":12:32: layers[1] 'stage1' (repeat block), its change to 'stage1_2_conv': 'filters' "
            "must be >= 1, got 0",
        ),
        (
            "stage1_2_conv: {type: dense}",
            ":12:23: layers[1] 'stage1' (repeat block), its change to 'stage1_2_conv': a change "
            "keeps the layer's type — to alter it, write this repetition out",
        ),
        ("stage1_2_conv: {kernel: 4}", ":12:22: layers[1] 'stage1' (repeat block), its change "),
        ("stage1_2_conv: 6", ":12:22: layers[1] 'stage1' (repeat block), its change to "),
    ],
)
def test_a_wrong_change_is_located_in_the_file(tmp_path, change, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        BLOCKS.replace(
            "  - {type: flatten}", f"    changes:\n      {change}\n  - {{type: flatten}}"
        )
    )
    result, output = run("validate", bad)
    assert result.exit_code == 2, output
    assert f"{bad}{expected}" in output, output
    assert "Traceback" not in output


def test_a_wrong_repetition_is_named_with_the_ones_there_are(blocks_file):
    result, output = run("validate", blocks_file, "--set", "stage1_3_conv.filters=64")
    assert result.exit_code == 2
    assert "no key or layer named 'stage1_3_conv' — did you mean 'stage1_2_conv'?" in output
    result, output = run("validate", blocks_file, "--set", "stage1_2_conv.filters=0")
    assert result.exit_code == 2
    assert "--set stage1_2_conv.filters: layers[1] 'stage1' (repeat block), its change to " in (
        output
    )


def test_a_change_inside_nested_blocks_reaches_one_layer(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text(
        BLOCKS.replace(
            """      - {name: conv, type: conv, filters: 4, kernel: 3, padding: same}
      - {type: relu}""",
            """      - repeat: 2
        name: unit
        layers:
          - {name: conv, type: conv, filters: 4, kernel: 3, padding: same}""",
        )
    )
    result, output = run("summary", nested, "--set", "stage1_2_unit_1_conv.filters=6")
    assert result.exit_code == 0, output
    assert conv_outputs(output) == {
        "stage1_1_unit_1_conv": "(4,",
        "stage1_1_unit_2_conv": "(4,",
        "stage1_2_unit_1_conv": "(6,",
        "stage1_2_unit_2_conv": "(4,",
    }


def test_errors_name_the_override_or_the_file(tmp_path, spec_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("units: 16", "units: 0"))
    result, output = run("validate", bad, "--set", "layers.conv1.filters=0")
    assert result.exit_code == 2
    assert "--set layers.conv1.filters: layers[0] 'conv1' (conv): 'filters' must be >= 1" in output
    assert f"{bad}:10:26: layers[5] (dense)" in output and "'units' must be >= 1, got 0" in output


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("layers.conv9.filters=3", "no layer named 'conv9' in the layers — did you mean 'conv1'?"),
        ("training.optimzer.lr=0.1", "unknown key 'optimzer' — did you mean 'optimizer'?"),
        ("layers.conv1.filtres=3", "unknown key 'filtres' — did you mean 'filters'?"),
        ("trainig.epochs=3", "no key or layer named 'trainig' — did you mean 'training'?"),
        ("input.5=3", "input has 3 items (0 to 2), no item 5"),
        ("training.seed.x=3", "training.seed is a number 5, which holds no 'x'"),
        ("training.seed=!!python/name:os.system", "the tag"),
        ("training.seed", "write PATH=VALUE"),
    ],
)
def test_a_wrong_path_or_value_exits_2_naming_it(spec_file, override, expected):
    result, output = run("validate", spec_file, "--set", override)
    assert result.exit_code == 2, output
    path = override.split("=")[0]
    assert f"--set {path}" in output and expected in output
    assert "Traceback" not in output


def test_available_layers_are_listed(spec_file):
    result, output = run("summary", spec_file, "--set", "layers.conv2.filters=3")
    assert result.exit_code == 2
    assert "layers there: conv1, batchnorm1, relu1" in output


def test_values_are_plain_yaml():
    assert parse_value("[1, 28, 28]", "x") == [1, 28, 28]
    assert parse_value("{type: sgd, lr: 0.1}", "x") == {"type": "sgd", "lr": 0.1}
    assert parse_value("", "x") is None
    assert parse_value("3e-4", "x") == 3e-4
    with pytest.raises(SpecError, match="not allowed"):
        parse_value("!!python/object/apply:os.system [ls]", "x")


def test_time_takes_set(spec_file):
    result, output = run(
        "time", spec_file, "--set", "layers.conv1.filters=2", "-b", 4, "--steps", 1
    )
    assert result.exit_code == 0, output
    assert "conv1" in output


@pytest.mark.usefixtures("without_curves")
def test_run_records_the_overrides_and_the_resolved_spec(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    sets = ["layers.conv1.filters=2", "training.epochs=1", "training.optimizer.lr=0.003"]
    args = [arg for text in sets for arg in ("--set", text)]
    result, output = run("train", spec_file, "--data-dir", image_folder, "--out", out, *args)
    assert result.exit_code == 0, output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["overrides"] == sets
    assert config["network"]["layers"][0]["filters"] == 2
    assert config["training"]["epochs"] == 1 and config["training"]["optimizer"]["lr"] == 0.003
    arrays, meta = load_checkpoint(out / "last.npz")
    assert meta["overrides"] == sets and meta["spec"]["layers"][0]["filters"] == 2
    assert arrays["params/conv1.W"].shape == (2, 1, 3, 3)
    # the checkpoint alone rebuilds the overridden network
    result, output = run("evaluate", out / "last.npz", "--data-dir", image_folder)
    assert result.exit_code == 0, output
    # resuming needs the same network: the file alone is another one
    result, output = run("train", spec_file, "--epochs", 2, "--resume", out / "last.npz")
    assert result.exit_code == 2 and "is not the network" in output
    result, output = run(
        "train", spec_file, "--resume", out / "last.npz", *args[:2], "--set", "training.epochs=2"
    )
    assert result.exit_code == 0, output
    result, output = run(
        "train", spec_file, "--resume", out / "last.npz", *args[:2], "--set", "training.seed=3"
    )
    assert result.exit_code == 2 and "--set training.seed cannot change when resuming" in output


@pytest.mark.usefixtures("without_curves")
def test_a_run_with_one_repetition_changed_records_and_resumes_it(tmp_path, image_folder):
    spec_file = tmp_path / "blocks.yaml"
    spec_file.write_text(BLOCKS + "training: {dataset: folder, batch_size: 16, seed: 5}\n")
    out = tmp_path / "run"
    sets = ["--set", "stage1_2_conv.filters=2", "--set", "training.epochs=1"]
    result, output = run("train", spec_file, "--data-dir", image_folder, "--out", out, *sets)
    assert result.exit_code == 0, output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["network"]["layers"][1]["changes"] == {"stage1_2_conv": {"filters": 2}}
    arrays, meta = load_checkpoint(out / "last.npz")
    assert meta["overrides"] == sets[1::2]
    assert arrays["params/stage1_1_conv.W"].shape == (4, 4, 3, 3)
    assert arrays["params/stage1_2_conv.W"].shape == (2, 4, 3, 3)
    result, output = run("evaluate", out / "last.npz", "--data-dir", image_folder)
    assert result.exit_code == 0, output
    result, output = run("train", spec_file, "--resume", out / "last.npz", *sets[:2], "--epochs", 2)
    assert result.exit_code == 0, output


def test_a_sweep_reads_one_repetition_s_value(blocks_file):
    """Sweeps start from the spec's own values: a repetition has its block's until changed."""
    data = read_spec(blocks_file).data
    assert value_at(data, "stage1_2_conv.filters") == 4
    data = read_spec(blocks_file, ["stage1_2_conv.filters=6"]).data
    assert value_at(data, "stage1_2_conv.filters") == 6
    assert value_at(data, "stage1_1_conv.filters") == 4
