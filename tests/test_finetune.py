"""Fine-tuning: `train --init-from CKPT --freeze NAME`: matching layers are loaded, the
others skipped with the reason, frozen layers stay bit-identical, also across --resume."""

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_train import SPEC

import cnnbuild
from cnnbuild.checkpoint import read_run
from cnnbuild.cli import main
from cnnbuild.finetune import FreezeError, freeze, init_from

pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.usefixtures("without_curves")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory, image_folder):
    """A checkpoint of the tiny network trained one epoch on the tiny image folder."""
    folder = tmp_path_factory.mktemp("source")
    (folder / "tiny.yaml").write_text(SPEC)
    out = folder / "run"
    result = run(
        "train", folder / "tiny.yaml", "--epochs", 1, "--data-dir", image_folder, "--out", out
    )
    assert result.exit_code == 0, result.output
    return out / "last.npz"


def test_matching_layers_load_and_the_others_are_skipped_with_why(tmp_path, source):
    changed = cnnbuild.loads(SPEC.replace("units: 16", "units: 8"), seed=1)
    transfer = init_from(changed, source)
    saved = read_run(source)
    assert transfer.loaded == ["conv1", "batchnorm1"]
    assert dict(transfer.skipped)["dense1"] == (
        "shape mismatch: dense1.W (64, 8) here, (64, 16) there; dense1.b (8) here, (16) there"
    )
    for key in ("conv1.W", "conv1.b", "batchnorm1.gamma"):
        assert np.array_equal(changed.params[key], saved.params[key])
    assert np.array_equal(
        changed.buffers["batchnorm1.running_mean"], saved.buffers["batchnorm1.running_mean"]
    )
    extra = cnnbuild.loads(
        SPEC.replace("{type: dense, units: 16}", "{name: other, type: dense, units: 16}")
    )
    assert ("other", "missing from the checkpoint") in init_from(extra, source).skipped


def test_frozen_layers_stay_bit_identical_through_training_and_resume(
    tmp_path, source, image_folder
):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "run"
    result = run(
        "train",
        spec,
        "--epochs",
        1,
        "--data-dir",
        image_folder,
        "--out",
        out,
        "--init-from",
        source,
        "--freeze",
        "conv1",
        "--freeze",
        "batchnorm1",
    )
    assert result.exit_code == 0, result.output
    assert (
        f"init from {source}: loaded 5 layers: conv1, batchnorm1, dense1, batchnorm2, dense2"
        in (result.output)
    )
    assert "frozen: conv1, batchnorm1" in result.output
    recorded = yaml.safe_load((out / "config.yaml").read_text())["training"]
    assert recorded["init_from"] == str(source)
    assert recorded["freeze"] == ["conv1", "batchnorm1"]

    result = run("train", spec, "--epochs", 2, "--resume", out / "last.npz")
    assert result.exit_code == 0, result.output
    before, after = read_run(source), read_run(out / "last.npz")
    assert after.state.epoch == 2
    for key in ("conv1.W", "conv1.b", "batchnorm1.gamma", "batchnorm1.beta"):
        assert np.array_equal(after.params[key], before.params[key]), key
    for key in ("batchnorm1.running_mean", "batchnorm1.running_var"):
        assert np.array_equal(after.buffers[key], before.buffers[key]), key
    assert not np.array_equal(after.params["dense1.W"], before.params["dense1.W"])


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["conv"], "no layer named 'conv' in tiny — did you mean 'conv1'?"),
        (["relu1"], "the relu layer 'relu1' has no parameters to freeze"),
    ],
)
def test_freeze_names_must_be_layers_with_parameters(names, message):
    net = cnnbuild.loads(SPEC)
    with pytest.raises(FreezeError, match=message):
        freeze(net, names)


def test_the_cli_refuses_unknown_names_and_changes_on_resume(tmp_path, source):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    result = run("train", spec, "--freeze", "dense9", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "did you mean 'dense2'?" in result.output
    assert not (tmp_path / "x").exists()
    result = run("train", spec, "--resume", source, "--epochs", 3, "--freeze", "conv1")
    assert result.exit_code == 2 and "--freeze cannot change when resuming" in result.output
