"""Training: learning, callbacks, stopping, freezing, checkpoints that predict (divergence and
exact resume are promises 7 and 8, tests/test_promise_training.py)."""

import numpy as np
import pytest

import cnnbuild
from cnnbuild.callbacks import standard_callbacks
from cnnbuild.checkpoint import CheckpointError, load_checkpoint
from cnnbuild.data import Dataset
from cnnbuild.inference import load_trained
from cnnbuild.train import Callback, Trainer, resolve_config

SPEC = """\
name: tiny
input: [1, 8, 8]
classes: 3
layers:
  - {name: conv1, type: conv, filters: 4, kernel: 3, padding: same}
  - {type: batchnorm}
  - {type: relu}
  - {type: maxpool, size: 2}
  - {type: flatten}
  - {type: dense, units: 16}
  - {type: batchnorm}
  - {type: relu}
  - {type: dropout, rate: 0.3}
  - {type: dense, units: 3}
  - {type: softmax}
training:
  dataset: folder
  batch_size: 16
  optimizer: {type: adam, lr: 0.01}
  augment: {crop: 1, flip: true}
  seed: 5
"""


def tiny_dataset(n: int, seed: int) -> Dataset:
    """Three learnable classes: a bright top, middle or bottom band."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 0, 3 * label : 3 * label + 2] += 180
    return Dataset("tiny", images, labels.astype(np.int64), ("top", "middle", "bottom"))


TRAIN, TEST = tiny_dataset(96, 1), tiny_dataset(48, 2)


def make_trainer(run_dir, epochs, spec=SPEC, callbacks=(), **overrides):
    net = cnnbuild.loads(spec, seed=0)
    config = resolve_config(net.spec["training"], epochs=epochs, **overrides)
    return Trainer(net, config, TRAIN, TEST, [*standard_callbacks(run_dir), *callbacks])


class StopAfter(Callback):
    """Stops training after ``steps`` steps, as Ctrl-C does."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_batch_end(self, trainer, progress) -> None:
        self.steps -= 1
        if self.steps == 0:
            trainer.stop("asked by StopAfter")


def test_training_learns_the_tiny_task(tmp_path):
    history = make_trainer(tmp_path, 8).fit()
    assert history[-1]["test_accuracy"] > 0.9
    assert history[-1]["loss"] < history[0]["loss"]
    assert (tmp_path / "last.npz").exists() and (tmp_path / "best.npz").exists()
    assert (tmp_path / "history.csv").read_text().count("\n") == 9


def test_a_stopped_run_saves_where_it_stopped_and_says_why(tmp_path):
    trainer = make_trainer(tmp_path, 3, callbacks=[StopAfter(8)])  # 6 steps an epoch
    history = trainer.fit()
    assert trainer.stop_reason == "asked by StopAfter" and not trainer.failed
    assert len(history) == 1
    _, meta = load_checkpoint(tmp_path / "last.npz")
    assert (meta["epoch"], meta["batch"]) == (1, 2)


class Recorder(Callback):
    """Writes down the hooks called, in order."""

    def __init__(self) -> None:
        self.calls = []

    def on_train_start(self, trainer):
        self.calls.append("train_start")

    def on_epoch_start(self, trainer):
        self.calls.append("epoch_start")

    def on_batch_end(self, trainer, progress):
        self.calls.append("batch")

    def on_epoch_end(self, trainer, record):
        self.calls.append(f"epoch_end {record['epoch']}")

    def on_train_end(self, trainer):
        self.calls.append("train_end")


def test_callbacks_hear_every_hook_in_order(tmp_path):
    recorder = Recorder()
    make_trainer(tmp_path, 2, callbacks=[recorder]).fit()
    epoch = ["epoch_start", *["batch"] * 6]
    assert recorder.calls == [
        "train_start", *epoch, "epoch_end 1", *epoch, "epoch_end 2", "train_end"
    ]  # fmt: skip


def test_a_frozen_layer_keeps_its_weights(tmp_path):
    trainer = make_trainer(tmp_path, 1)
    before = {key: value.copy() for key, value in trainer.net.params.items()}
    net = cnnbuild.loads(SPEC, seed=0)
    net.layers["conv1"].freeze()
    frozen = Trainer(net, trainer.config, TRAIN, TEST)
    frozen.fit()
    for key, value in net.params.items():
        assert np.array_equal(value, before[key]) == key.startswith("conv1."), key
    assert not any("conv1" in key for key in frozen.optimizer.state_dict())


def test_a_checkpoint_alone_rebuilds_the_network_and_predicts_the_same(tmp_path):
    trainer = make_trainer(tmp_path, 2)
    trainer.fit()
    model = load_trained(tmp_path / "last.npz", engine="numpy")  # the engine that trained it
    expected = trainer.net.forward(trainer.normalization.apply(TEST.images), train=False)
    assert np.array_equal(model.probabilities(TEST.images), expected)
    assert model.class_names == ["top", "middle", "bottom"]


def test_loading_into_another_architecture_names_the_key_and_both_shapes(tmp_path):
    make_trainer(tmp_path, 1).fit()
    other = make_trainer(tmp_path / "other", 1, spec=SPEC.replace("units: 16", "units: 12"))
    with pytest.raises(CheckpointError) as caught:
        other.restore(tmp_path / "last.npz")
    message = str(caught.value)
    assert "dense1.W" in message and "(64, 16)" in message and "(64, 12)" in message


def test_flags_override_the_spec_and_lr_goes_to_the_optimizer():
    spec = cnnbuild.loads(SPEC).spec
    config = resolve_config(spec["training"], epochs=7, lr=0.5, batch_size=None)
    assert config["epochs"] == 7 and config["batch_size"] == 16
    assert config["optimizer"] == {"type": "adam", "lr": 0.5}
    assert config["schedule"] == {"type": "constant"}  # the declared default
    assert config["augment"] == {"crop": 1, "flip": True}
