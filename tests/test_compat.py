"""Checkpoints written by cnnbuild 0.1.0 keep working: evaluate, predict and --resume.

The fixture in tests/fixtures/v0_1_0/ (see its README) was written by 0.1.0 on the MNIST
that ships with the package, so these tests need no data from outside.
"""

import csv
import shutil

import pytest
from click.testing import CliRunner
from conftest import ROOT

from cnnbuild.checkpoint import read_run
from cnnbuild.cli import main
from cnnbuild.inference import load_trained

FIXTURE = ROOT / "tests" / "fixtures" / "v0_1_0"


def test_a_0_1_0_checkpoint_evaluates_to_the_accuracy_0_1_0_measured():
    result = CliRunner().invoke(main, ["evaluate", str(FIXTURE / "last.npz")])
    assert result.exit_code == 0, result.output
    assert "tiny on mnist test: accuracy 0.9692 (9,692 of 10,000)" in result.output


def test_a_0_1_0_checkpoint_predicts_and_keeps_its_class_names():
    model = load_trained(FIXTURE / "last.npz")
    assert model.class_names == [str(digit) for digit in range(10)]
    result = CliRunner().invoke(main, ["predict", str(FIXTURE / "last.npz"), "--index", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test[0]: predicted 7, true 7 (right)")


@pytest.mark.slow
def test_resuming_a_0_1_0_checkpoint_finishes_the_run_as_0_1_0_did(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(FIXTURE / "last.npz", run_dir / "last.npz")
    assert read_run(run_dir / "last.npz").state.epoch == 1
    result = CliRunner().invoke(
        main, ["train", str(FIXTURE / "tiny.yaml"), "--resume", str(run_dir / "last.npz")]
    )
    assert result.exit_code == 0, result.output
    with (run_dir / "history.csv").open() as ours, (FIXTURE / "history.csv").open() as theirs:
        rows = [list(csv.DictReader(file)) for file in (ours, theirs)]
    # The test set is evaluated 128 images at a time (500 in 0.1.0), and BLAS rounds a
    # product differently with the batch's size: the test loss agrees to float32 rounding,
    # everything else exactly.
    test_losses = [[float(row.pop("test_loss")) for row in run] for run in rows]
    assert test_losses[0] == pytest.approx(test_losses[1], rel=1e-6)
    for row in rows[0] + rows[1]:
        del row["seconds"]
    assert rows[0] == rows[1]
