"""`cnnbuild train --tensorboard DIR`: event files that TensorBoard's own reader reads back."""

import csv
import itertools
import sys

import pytest
from test_report import SIZES, decoded_png, run, small_mnist, train_tiny

from cnnbuild.png import SIGNATURE


@pytest.fixture
def quick(monkeypatch):
    small_mnist(monkeypatch)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no curves.png: faster


@pytest.mark.usefixtures("quick")
def test_events_hold_steps_epochs_histograms_and_mistakes(tmp_path):
    pytest.importorskip("tensorboardX", reason="pip install 'cnnbuild[tensorboard]'")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logs = tmp_path / "logs"
    run_dir = train_tiny(tmp_path, "--tensorboard", logs, "--set", "training.schedule.type=cosine")
    events = accumulator.EventAccumulator(str(logs), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    steps = SIZES["train"] // 32
    assert [event.step for event in events.Scalars("step/loss")] == list(range(1, steps + 1))
    rates = [event.value for event in events.Scalars("step/lr")]
    assert rates[0] == pytest.approx(0.01) and all(b < a for a, b in itertools.pairwise(rates))
    (record,) = csv.DictReader((run_dir / "history.csv").open())
    for column in ("loss", "test_accuracy", "test_loss", "lr"):
        (logged,) = events.Scalars(f"epoch/{column}")
        assert (logged.step, logged.value) == (1, pytest.approx(float(record[column])))
    for name in ("conv1.W", "conv1.b", "dense1.W"):
        (weights,) = events.Histograms(f"weights/{name}")
        (gradients,) = events.Histograms(f"gradients/{name}")
        assert weights.histogram_value.num == gradients.histogram_value.num > 0
    (image,) = events.Images("mistakes")
    assert image.encoded_image_string.startswith(SIGNATURE)
    assert decoded_png(image.encoded_image_string) == (image.width, image.height, 1)
    assert (image.width, image.height) == (8 * 58 + 2, 4 * 58 + 2)  # 32 digits, doubled
    (labels,) = events.Tensors("mistakes/labels/text_summary")
    table = labels.tensor_proto.string_val[0].decode()
    assert table.count("\n") == 2 + 32 - 1 and "| 1 | " in table
    # a resumed run logs only when told again: a checkpoint never says where to write
    spec = run_dir.parent / "tiny.yaml"
    result, output = run("train", spec, "--epochs", 2, "--resume", run_dir / "last.npz")
    assert result.exit_code == 0, output
    assert len(list(logs.iterdir())) == 1


@pytest.mark.usefixtures("quick")
def test_without_the_extra_it_says_what_to_install_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: t\ninput: [1, 28, 28]\nclasses: 10\nlayers: [{type: dense, units: 10}, "
        "{type: softmax}]\n"
    )
    result, output = run(
        "train", spec, "--out", tmp_path / "run", "--set", f"training.tensorboard={tmp_path}"
    )
    assert result.exit_code == 2
    assert (
        output == "error: --tensorboard needs tensorboardX: pip install 'cnnbuild[tensorboard]'\n"
    )
    assert not (tmp_path / "run").exists()
