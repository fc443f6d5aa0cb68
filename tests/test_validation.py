"""A validation split held out of the training set, best.npz chosen on it, and early
stopping."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from test_train import SPEC, tiny_dataset

from cnnbuild.callbacks import EarlyStopping
from cnnbuild.checkpoint import HISTORY_COLUMNS, VALIDATION_COLUMNS, load_checkpoint
from cnnbuild.cli import main
from cnnbuild.errors import CnnbuildError, ConfigError
from cnnbuild.train import split_validation


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, result.output


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.parametrize("validation", [12, 0.25, 1])
def test_the_split_is_sized_stratified_disjoint_and_fixed_by_the_seed(validation):
    dataset = tiny_dataset(96, 1)
    train, held = split_validation(dataset, validation, seed=5)
    expected = validation if isinstance(validation, int) else 24
    assert len(held) == expected and len(train) == 96 - expected
    # every image is in exactly one part: together they are the training set
    both = np.concatenate([train.images, held.images]).reshape(96, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, dataset.images.reshape(96, -1)))
    # each class gives its share
    shares = np.bincount(held.labels, minlength=3) / expected
    whole = np.bincount(dataset.labels, minlength=3) / 96
    assert np.abs(shares - whole).max() <= 1 / expected + 1e-9
    again, held_again = split_validation(dataset, validation, seed=5)
    assert np.array_equal(held.images, held_again.images)
    assert np.array_equal(train.labels, again.labels)
    if expected > 1:
        other = split_validation(dataset, validation, seed=6)[1]
        assert not np.array_equal(held.images, other.images)


def test_no_validation_leaves_the_dataset_alone():
    dataset = tiny_dataset(12, 1)
    assert split_validation(dataset, None, seed=0) == (dataset, None)


@pytest.mark.parametrize("validation", [96, 200, 0.001])
def test_a_split_that_leaves_nothing_is_refused(validation):
    with pytest.raises(ConfigError, match=r"training\.validation"):
        split_validation(tiny_dataset(96, 1), validation, seed=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", "'validation' got 0"), ("1.5", "'validation' got 1.5"), ("-3", "got -3")],
)
def test_the_schema_refuses_bad_validation_values(spec_file, value, expected):
    result, output = run("validate", spec_file, "--set", f"training.validation={value}")
    assert result.exit_code == 2 and "--set training.validation" in output and expected in output


@pytest.mark.usefixtures("without_curves")
def test_training_reports_validation_and_selects_best_on_it(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    result, output = run(
        "train", spec_file, "--epochs", 2, "--data-dir", image_folder, "--out", out,
        "--set", "training.validation=0.25",
    )  # fmt: skip
    assert result.exit_code == 0, output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "epoch", "loss", "train", "acc", "test", "acc", "val", "loss", "val", "acc", "time",
    ]  # fmt: skip
    assert len(lines[1].split()) == 7
    assert "72 training, 24 validation and 48 test images" in result.stderr
    assert "best.npz is selected on validation accuracy" in result.stderr
    assert "best validation accuracy" in result.stderr.splitlines()[-1]
    with (out / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == [*HISTORY_COLUMNS, *VALIDATION_COLUMNS] and len(rows) == 2
    _, meta = load_checkpoint(out / "best.npz")
    best = max(float(row["val_accuracy"]) for row in rows)
    assert meta["best_accuracy"] == pytest.approx(best)
    assert meta["history"][-1]["val_accuracy"] == pytest.approx(best)


@pytest.mark.usefixtures("without_curves")
def test_without_a_split_it_says_best_is_on_test(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    result, output = run(
        "train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out
    )
    assert result.exit_code == 0, output
    assert "best.npz is selected on test accuracy (no validation split)" in result.stderr


@pytest.mark.usefixtures("without_curves")
def test_early_stopping_stops_after_patience_and_keeps_best(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    result, output = run(
        "train", spec_file, "--epochs", 10, "--data-dir", image_folder, "--out", out,
        "--set", "training.validation=12",
        # nothing improves by 100: epoch 1 is the best, then 2 epochs of patience
        "--set", "training.early_stopping={monitor: val_loss, patience: 2, min_delta: 100}",
    )  # fmt: skip
    assert result.exit_code == 0, output
    assert len(result.stdout.splitlines()) == 1 + 3
    last = result.stderr.splitlines()[-1]
    assert last.startswith("stopped after epoch 3 of 10: early stopping: val_loss has not improved")
    assert "best" in last and "patience 2" in last
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["epoch"] == 3 and meta["stop_reason"].startswith("early stopping: val_loss")
    assert (out / "best.npz").exists()
    with (out / "history.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 3


@pytest.mark.usefixtures("without_curves")
def test_early_stopping_on_val_needs_a_split(tmp_path, spec_file, image_folder):
    result, output = run(
        "train", spec_file, "--epochs", 2, "--data-dir", image_folder, "--out", tmp_path / "r",
        "--set", "training.early_stopping.monitor=val_accuracy",
    )  # fmt: skip
    assert result.exit_code == 2 and "needs a validation split" in output


def test_direction_is_inferred_or_required():
    assert EarlyStopping("val_loss").mode == "min"
    assert EarlyStopping("test_accuracy").mode == "max"
    assert EarlyStopping("lr", mode="min").mode == "min"
    with pytest.raises(CnnbuildError, match="give `mode: min` or `mode: max`"):
        EarlyStopping("lr")


def test_monitor_must_be_a_history_column(spec_file):
    result, output = run(
        "validate", spec_file, "--set", "training.early_stopping={monitor: val_acuracy}"
    )
    assert result.exit_code == 2 and "did you mean 'val_accuracy'?" in output
