"""Training: learning, exact resume, Ctrl-C, divergence, checkpoints that predict alone."""

import numpy as np
import pytest

import cnnbuild
from cnnbuild.checkpoint import CheckpointError, load_checkpoint
from cnnbuild.data import Dataset
from cnnbuild.inference import load_trained
from cnnbuild.train import Trainer, TrainingDiverged, TrainingStopped, resolve_config

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


def make_trainer(run_dir, epochs, spec=SPEC, callback=None, **overrides):
    net = cnnbuild.loads(spec, seed=0)
    config = resolve_config(net.spec, epochs=epochs, **overrides)
    return Trainer(net, config, TRAIN, TEST, run_dir, callback)


def state_of(trainer):
    arrays = {f"p/{k}": v.copy() for k, v in trainer.net.params.items()}
    arrays |= {f"b/{k}": v.copy() for k, v in trainer.net.buffers.items()}
    arrays |= {f"o/{k}": np.array(v).copy() for k, v in trainer.optimizer.state_dict().items()}
    return arrays


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def without_times(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_training_learns_the_tiny_task(tmp_path):
    history = make_trainer(tmp_path, 8).fit()
    assert history[-1]["test_accuracy"] > 0.9
    assert history[-1]["loss"] < history[0]["loss"]
    assert (tmp_path / "last.npz").exists() and (tmp_path / "best.npz").exists()
    assert (tmp_path / "history.csv").read_text().count("\n") == 9


def test_resume_after_an_epoch_boundary_is_bit_exact(tmp_path):
    straight = make_trainer(tmp_path / "a", 4)
    straight.fit()
    make_trainer(tmp_path / "b", 2).fit()
    resumed = make_trainer(tmp_path / "b", 4)
    resumed.restore(tmp_path / "b" / "last.npz")
    resumed.fit()
    assert_identical(state_of(straight), state_of(resumed))
    assert without_times(straight.state.history) == without_times(resumed.state.history)


class StopAfter:
    """Asks the trainer to stop after ``steps`` steps, as Ctrl-C does."""

    def __init__(self, steps: int) -> None:
        self.steps, self.trainer = steps, None

    def on_batch(self, progress) -> None:
        self.steps -= 1
        if self.steps == 0:
            self.trainer._stop.set()

    def on_epoch(self, record) -> None:
        pass


def test_resume_from_the_middle_of_an_epoch_is_bit_exact(tmp_path):
    straight = make_trainer(tmp_path / "a", 3)
    straight.fit()
    stopper = StopAfter(8)  # 6 steps an epoch: stops in the middle of epoch 2
    interrupted = make_trainer(tmp_path / "b", 3, callback=stopper)
    stopper.trainer = interrupted
    with pytest.raises(TrainingStopped, match="--resume"):
        interrupted.fit()
    _, meta = load_checkpoint(tmp_path / "b" / "last.npz")
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    resumed = make_trainer(tmp_path / "b", 3)
    resumed.restore(tmp_path / "b" / "last.npz")
    resumed.fit()
    assert_identical(state_of(straight), state_of(resumed))
    assert without_times(straight.state.history) == without_times(resumed.state.history)


def test_a_diverging_loss_stops_naming_epoch_step_and_layer(tmp_path):
    trainer = make_trainer(tmp_path, 3)
    trainer.fit()
    before = (tmp_path / "last.npz").read_bytes()
    trainer.config["epochs"] = 5
    trainer.net.params["conv1.W"][...] = np.inf
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "epoch 4, step 19" in message and "'conv1'" in message
    assert (tmp_path / "last.npz").read_bytes() == before


def test_a_checkpoint_alone_rebuilds_the_network_and_predicts_the_same(tmp_path):
    trainer = make_trainer(tmp_path, 2)
    trainer.fit()
    model = load_trained(tmp_path / "last.npz")
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
    config = resolve_config(spec, epochs=7, lr=0.5, batch_size=None)
    assert config["epochs"] == 7 and config["batch_size"] == 16
    assert config["optimizer"] == {"type": "adam", "lr": 0.5}
    assert config["schedule"] == {"type": "constant"}  # the schema's default
