"""Promises 7 and 8: stopping and resuming changes nothing, bit for bit; a non-finite value
stops training at once, naming where it came from, and leaves the last good checkpoint.

The one test of the trainer's exact resume; an optimizer's state round trip is tested in
test_optim.py, Ctrl-C and --resume through the command line in test_promise_crashes.py."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, require_engine
from promises import FULL, record
from test_train import SPEC, TEST, TRAIN, StopAfter

import cnnbuild
from cnnbuild.callbacks import standard_callbacks
from cnnbuild.data import Dataset
from cnnbuild.engine import use as use_engine
from cnnbuild.graph import Observer
from cnnbuild.train import Callback, Trainer, TrainingFailed, resolve_config

MORE = ["cifar_resnet", *(["cifar", "cifar_deep", "mnist_mlp"] if FULL else [])]
ARCHS = ["mnist", *(pytest.param(arch, marks=pytest.mark.slow) for arch in MORE)]
EPOCHS = 3


def synthetic(shape: tuple[int, ...], n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return Dataset("synthetic", images, rng.integers(0, 10, n), tuple(map(str, range(10))))


def arch_trainer(
    arch: str, run_dir: Path, epochs: int, callbacks=(), engine: str = "numpy", **settings
) -> Trainer:
    net = cnnbuild.load(ROOT / "archs" / f"{arch}.yaml", seed=0)
    settings = {"batch_size": 4, **settings}
    config = resolve_config(net.spec.get("training", {}), epochs=epochs, **settings)
    train, test = synthetic(net.input_shape, 8, 1), synthetic(net.input_shape, 4, 2)
    trainer = Trainer(net, config, train, test, [*standard_callbacks(run_dir), *callbacks])
    use_engine(net, engine, trainer.optimizer)
    return trainer


def everything(trainer: Trainer) -> dict[str, np.ndarray]:
    """Weights, batch-norm statistics, optimizer state and both generators' states."""
    arrays = {f"params/{k}": v for k, v in trainer.net.params.items()}
    arrays |= {f"buffers/{k}": v for k, v in trainer.net.buffers.items()}
    arrays |= {f"optimizer/{k}": v for k, v in trainer.optimizer.state_dict().items()}
    for name, rng in (("net", trainer.net.rng), ("data", trainer.data_rng)):
        arrays[f"rng/{name}"] = np.array(rng.bit_generator.state["state"]["state"], dtype=object)
    return arrays


def difference(a: Trainer, b: Trainer) -> float:
    """The largest absolute difference between two trainers' states and histories."""
    left, right = everything(a), everything(b)
    assert left.keys() == right.keys()
    worst = max(float(np.abs(left[k].astype(float) - right[k]).max(initial=0)) for k in left)
    rows = zip(a.state.history, b.state.history, strict=True)
    numbers = [abs(x[k] - y[k]) for x, y in rows for k in x if k != "seconds"]
    return max(worst, *numbers)


@pytest.mark.parametrize("engine", ["numpy", "fast"])
@pytest.mark.parametrize("arch", ARCHS)
def test_stopping_and_resuming_gives_the_same_run_bit_for_bit(tmp_path, arch, engine):
    require_engine(engine)
    straight = arch_trainer(arch, tmp_path / "straight", EPOCHS, engine=engine)
    straight.fit()
    diffs = {}
    for how, steps in (("at the end of epoch 1", 2), ("in the middle of epoch 2", 3)):
        run_dir = tmp_path / f"stopped{steps}"
        stopped = arch_trainer(arch, run_dir, EPOCHS, [StopAfter(steps)], engine=engine)
        stopped.fit()
        assert stopped.stopped
        resumed = arch_trainer(arch, run_dir, EPOCHS, engine=engine)
        resumed.restore(run_dir / "last.npz")
        resumed.fit()
        assert len(resumed.state.history) == EPOCHS
        diffs[how] = difference(straight, resumed)
    layers = {node.layer.type_name for node in straight.net.nodes}
    record(
        7,
        f"{arch}, {engine} engine ({straight.optimizer.type_name}, {', '.join(sorted(layers))})",
        f"{EPOCHS} epochs straight vs stopped {' / '.join(diffs)}: max abs diff "
        f"{max(diffs.values()):g} (weights, optimizer, generators, history)",
    )
    assert max(diffs.values()) == 0


def test_resuming_with_a_validation_split_is_exact(tmp_path):
    """The held-out images are a function of the seed: a resumed run holds out the same."""
    settings = {"validation": 2, "batch_size": 2}  # 6 images trained on: 3 steps an epoch
    straight = arch_trainer("mnist", tmp_path / "straight", EPOCHS, **settings)
    straight.fit()
    assert len(straight.train_set) == 6 and "val_accuracy" in straight.state.history[0]
    for steps in (3, 4):  # the end of epoch 1, the middle of epoch 2
        run_dir = tmp_path / f"stopped{steps}"
        arch_trainer("mnist", run_dir, EPOCHS, [StopAfter(steps)], **settings).fit()
        resumed = arch_trainer("mnist", run_dir, EPOCHS, **settings)
        resumed.restore(run_dir / "last.npz")
        resumed.fit()
        assert difference(straight, resumed) == 0


# --- promise 8: non-finite values ----------------------------------------------------------


class Watch(Callback):
    """Keeps the state before each step, to replay the step that failed."""

    def __init__(self) -> None:
        self.before, self.first_bad_params = None, None

    def keep(self, trainer: Trainer) -> None:
        net = trainer.net
        self.before = (
            {k: v.copy() for k, v in net.params.items()},
            {k: v.copy() for k, v in net.buffers.items()},
            copy.deepcopy(net.rng.bit_generator.state),
            trainer.state.batch,
        )

    def on_train_start(self, trainer) -> None:
        self.keep(trainer)

    def on_batch_end(self, trainer, progress) -> None:
        if self.first_bad_params is None and not all(
            np.isfinite(p).all() for p in trainer.net.params.values()
        ):
            self.first_bad_params = trainer.state.step
        self.keep(trainer)


class FirstNonFinite(Observer):
    def __init__(self) -> None:
        self.layer = None

    def after_forward(self, name, output) -> None:
        if self.layer is None and not np.isfinite(output).all():
            self.layer = name


def first_non_finite_layer(watch: Watch, trainer: Trainer, train: Dataset) -> str:
    """Replay the failed step's forward pass in training mode: the first non-finite layer."""
    params, buffers, rng_state, batch = watch.before
    net = cnnbuild.loads(SPEC, seed=0)
    for own, saved in ((net.params, params), (net.buffers, buffers)):
        for key, value in saved.items():
            own[key][...] = value
    net.rng.bit_generator.state = rng_state
    index = trainer.state.order[batch * trainer.batch_size : (batch + 1) * trainer.batch_size]
    x = trainer.normalization.apply(train.images[index])
    if not np.isfinite(x).all():
        return "the input batch"
    with net.observed(FirstNonFinite()) as replay, np.errstate(all="ignore"):
        net.forward(x, train=True)
    return f"layer {replay.layer!r}" if replay.layer else "no layer"


def diverge(
    run_dir: Path, train: Dataset, optimizer: str = "adam", lr: float | None = None
) -> tuple[str, Watch, Trainer]:
    """Train one good epoch, then resume on ``train`` at ``lr`` until training stops."""
    spec = cnnbuild.loads(SPEC).spec
    settings = {"augment": {}, "optimizer": {"type": optimizer}}
    good = Trainer(
        cnnbuild.loads(SPEC, seed=0),
        resolve_config(spec["training"], epochs=1, **settings),
        TRAIN,
        TEST,
        standard_callbacks(run_dir),
    )
    good.fit()
    saved = {name: (run_dir / name).read_bytes() for name in ("last.npz", "best.npz")}
    watch = Watch()
    net = cnnbuild.loads(SPEC, seed=0)
    config = resolve_config(net.spec["training"], epochs=4, lr=lr, **settings)
    trainer = Trainer(net, config, train, TEST, [*standard_callbacks(run_dir), watch])
    trainer.restore(run_dir / "last.npz")
    with pytest.raises(TrainingFailed) as caught:
        trainer.fit()
    assert trainer.failed
    for name, content in saved.items():
        assert (run_dir / name).read_bytes() == content, f"{name} changed"
    return str(caught.value), watch, trainer


STOPS: dict[str, tuple[int, str]] = {}  # optimizer -> (step, layer) where training stopped


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adagrad", "rmsprop", "adadelta", "adam"])
def test_a_blown_up_learning_rate_stops_at_once_naming_epoch_step_and_layer(tmp_path, optimizer):
    message, watch, trainer = diverge(tmp_path, TRAIN, optimizer, lr=1e30)
    step = trainer.state.step
    assert f"epoch 2, step {step} " in message, message
    if watch.first_bad_params is not None:
        assert step <= watch.first_bad_params + 1  # no step taken with non-finite weights
    culprit = first_non_finite_layer(watch, trainer, TRAIN)
    assert f"come from {culprit}" in message, (culprit, message)
    STOPS[optimizer] = (step, culprit)
    record(
        8,
        "learning rate 1e30",
        f"{len(STOPS)} optimizers: stopped within one step of the first non-finite value "
        f"({len(STOPS)}/{len(STOPS)}), naming epoch, step and the layer a replay finds; "
        "last.npz and best.npz unchanged",
    )


def test_a_nan_in_the_input_stops_at_its_batch(tmp_path):
    images = TRAIN.images.astype(np.float32)
    images[37, 0, 4, 4] = np.nan
    train = Dataset("tiny", images, TRAIN.labels, TRAIN.class_names)
    message, _, trainer = diverge(tmp_path, train)
    order = list(trainer.state.order)
    batch = order.index(37) // trainer.batch_size + 1
    step = trainer.steps_per_epoch + batch
    assert f"epoch 2, step {step} (batch {batch} of" in message, message
    assert "come from the input batch" in message
    record(
        8,
        "a NaN in one input image",
        f"stopped at its batch (epoch 2, step {step}); "
        "message names the input batch; last.npz and best.npz unchanged",
    )
