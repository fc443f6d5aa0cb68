"""The training loop: batches, optimizer steps, per-epoch metrics, checkpoints, exact resume.

No click and no printing here: progress goes to a ``Callback``, which the CLI draws.
Everything a run needs to continue bit for bit (weights, batch-norm statistics, optimizer
state, both random generators, the epoch's shuffled order and where in it we stopped) is in
``last.npz``, written atomically after every epoch and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cnnbuild.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cnnbuild.data import Dataset
from cnnbuild.data.batches import random_crop, random_flip
from cnnbuild.errors import CnnbuildError
from cnnbuild.graph import INPUT, Network
from cnnbuild.inference import (
    Normalization,
    load_network_state,
    normalization_of,
    probabilities,
    section,
)
from cnnbuild.layers.output import cross_entropy
from cnnbuild.optim import Optimizer, make_optimizer
from cnnbuild.schedules import Schedule, make_schedule

HISTORY_COLUMNS = ["epoch", "loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"]


class TrainingStopped(CnnbuildError):
    """Training stopped early (Ctrl-C); the checkpoint named in the message holds the state."""


class TrainingDiverged(CnnbuildError):
    """The loss became non-finite; the last good checkpoint is left as it was."""


@dataclass
class Progress:
    """What the callback hears after every training step."""

    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based within the epoch
    batches: int
    loss: float  # running mean over the epoch so far
    accuracy: float
    images_per_second: float
    seconds: float  # spent on this epoch so far


class Callback(Protocol):
    def on_batch(self, progress: Progress) -> None: ...

    def on_epoch(self, record: dict[str, float]) -> None: ...


@dataclass
class RunState:
    """Where a run stands, beyond weights and optimizer state."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in the current epoch
    order: np.ndarray | None = None  # the current epoch's shuffled indices
    loss_sum: float = 0.0  # sums over the current epoch
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    best_accuracy: float = -1.0

    def start_epoch(self, order: np.ndarray) -> None:
        self.order, self.batch = order, 0
        self.loss_sum, self.correct, self.seen, self.seconds = 0.0, 0, 0, 0.0


class Trainer:
    """Trains ``net`` on ``train`` for ``config["epochs"]``, evaluating on ``test``.

    ``config`` is the resolved ``training:`` section (see ``resolve_config``).
    """

    def __init__(
        self,
        net: Network,
        config: dict[str, Any],
        train: Dataset,
        test: Dataset,
        run_dir: str | Path,
        callback: Callback | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        self.net = net
        self.config = config
        self.train_set = train
        self.test_set = test
        self.run_dir = Path(run_dir)
        self.callback = callback
        self.normalization = normalization or Normalization.of(train)
        self.batch_size = min(config["batch_size"], len(train))
        self.steps_per_epoch = len(train) // self.batch_size
        self.optimizer: Optimizer = make_optimizer(config["optimizer"], net.params)
        self.schedule: Schedule = make_schedule(
            config["schedule"], self.optimizer.lr, self.steps_per_epoch, config["epochs"]
        )
        self.data_rng = np.random.default_rng([config["seed"], 1])
        self.state = RunState()
        self._stop = threading.Event()

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> list[dict[str, float]]:
        """Train to the configured number of epochs; returns the history, one row an epoch.

        Ctrl-C finishes the current step, saves ``last.npz`` and raises TrainingStopped.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._interrupts_deferred():
            while self.state.epoch < self.config["epochs"]:
                if self.state.order is None:
                    self.state.start_epoch(self.data_rng.permutation(len(self.train_set)))
                self._train_epoch()
                if self._stop.is_set():
                    break
                self._finish_epoch()
        if self._stop.is_set():
            path = self.save("last.npz")
            raise TrainingStopped(
                f"stopped at epoch {self.state.epoch + 1}, batch {self.state.batch}; saved "
                f"{path} — continue with --resume {path}"
            )
        return self.state.history

    def _train_epoch(self) -> None:
        state = self.state
        started = time.perf_counter()
        done_before = state.seconds
        while state.batch < self.steps_per_epoch and not self._stop.is_set():
            start = state.batch * self.batch_size
            index = state.order[start : start + self.batch_size]
            x = self.normalization.apply(self._augment(self.train_set.images[index]))
            labels = self.train_set.labels[index]
            with np.errstate(all="ignore"):  # a non-finite loss is reported with its cause
                loss, probabilities = self._step(x, labels)
            state.step += 1
            state.batch += 1
            state.loss_sum += loss * len(index)
            state.correct += int((probabilities.argmax(axis=1) == labels).sum())
            state.seen += len(index)
            state.seconds = done_before + time.perf_counter() - started
            if self.callback:
                self.callback.on_batch(
                    Progress(
                        epoch=state.epoch + 1,
                        epochs=self.config["epochs"],
                        batch=state.batch,
                        batches=self.steps_per_epoch,
                        loss=state.loss_sum / state.seen,
                        accuracy=state.correct / state.seen,
                        images_per_second=state.seen / max(state.seconds, 1e-9),
                        seconds=state.seconds,
                    )
                )

    def _step(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """One optimizer step; returns the batch's loss and class probabilities."""
        probabilities = self.net.forward(x, train=True)
        loss = cross_entropy(probabilities, labels)
        if not np.isfinite(loss):
            raise TrainingDiverged(self._divergence_report(x, loss))
        self.net.backward_loss(labels)
        self.optimizer.lr = self.schedule.lr_at(self.state.step)
        self.optimizer.step(self.net.grads)
        return loss, probabilities

    def _augment(self, images: np.ndarray) -> np.ndarray:
        augment = self.config["augment"]
        if augment.get("crop"):
            images = random_crop(images, augment["crop"], self.data_rng)
        if augment.get("flip"):
            images = random_flip(images, self.data_rng)
        return images

    def _finish_epoch(self) -> None:
        state = self.state
        test_loss, test_accuracy = self.evaluate(self.test_set)
        state.epoch += 1
        record = {
            "epoch": state.epoch,
            "loss": state.loss_sum / max(state.seen, 1),
            "train_accuracy": state.correct / max(state.seen, 1),
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "lr": self.optimizer.lr,
            "seconds": state.seconds,
        }
        state.history.append(record)
        state.order, state.batch = None, 0
        self._write_history()
        if test_accuracy > state.best_accuracy:
            state.best_accuracy = test_accuracy
            self.save("best.npz")
        self.save("last.npz")
        if self.callback:
            self.callback.on_epoch(record)

    def evaluate(self, dataset: Dataset) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on ``dataset``, in inference mode."""
        p = probabilities(self.net, self.normalization, dataset.images)
        return cross_entropy(p, dataset.labels), float((p.argmax(axis=1) == dataset.labels).mean())

    def _divergence_report(self, x: np.ndarray, loss: float) -> str:
        state = self.state
        where = (
            f"epoch {state.epoch + 1}, step {state.step + 1} "
            f"(batch {state.batch + 1} of {self.steps_per_epoch})"
        )
        culprit = first_non_finite(self.net, x)
        origin = f"; the first non-finite values come from {culprit}" if culprit else ""
        last = self.run_dir / "last.npz"
        kept = f"; {last} holds the last good state" if last.exists() else ""
        return (
            f"the loss became {loss} at {where}{origin}{kept} — lower the learning rate or "
            "check the input data"
        )

    @contextlib.contextmanager
    def _interrupts_deferred(self) -> Iterator[None]:
        """Turn the first Ctrl-C into a request to stop after the current step."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt
            self._stop.set()

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # --- checkpoints -----------------------------------------------------------------------

    def save(self, name: str) -> Path:
        """Write everything needed to predict or resume to ``run_dir/name``, atomically."""
        state = self.state
        arrays = {f"params/{k}": v for k, v in self.net.params.items()}
        arrays |= {f"buffers/{k}": v for k, v in self.net.buffers.items()}
        arrays |= {f"optimizer/{k}": v for k, v in self.optimizer.state_dict().items()}
        arrays["normalization/mean"] = self.normalization.mean
        arrays["normalization/std"] = self.normalization.std
        if state.order is not None:
            arrays["run/order"] = state.order
        meta = {
            "spec": self.net.spec,
            "config": self.config,
            "class_names": list(self.train_set.class_names),
            "epoch": state.epoch,
            "step": state.step,
            "batch": state.batch,
            "epoch_sums": [state.loss_sum, state.correct, state.seen, state.seconds],
            "history": state.history,
            "best_accuracy": state.best_accuracy,
            "rng": {
                "net": self.net.rng.bit_generator.state,
                "data": self.data_rng.bit_generator.state,
            },
        }
        path = self.run_dir / name
        save_checkpoint(path, arrays, meta)
        return path

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint written by ``save`` (weights and run state)."""
        arrays, meta = load_checkpoint(path)
        state = saved_run_state(
            meta, arrays.get("run/order"), len(self.train_set), self.steps_per_epoch, path
        )
        load_network_state(self.net, arrays, path)
        self.optimizer.load_state_dict(section(arrays, "optimizer/"))
        self.normalization = normalization_of(arrays, path, self.net.input_shape[0])
        self.state = state
        self.optimizer.lr = self.schedule.lr_at(max(state.step - 1, 0))  # the last step's rate
        self.net.rng.bit_generator.state = meta["rng"]["net"]
        self.data_rng.bit_generator.state = meta["rng"]["data"]
        self._write_history()

    def _write_history(self) -> None:
        path = self.run_dir / "history.csv"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(self.state.history)


def saved_run_state(
    meta: dict[str, Any],
    order: np.ndarray | None,
    train_size: int,
    steps_per_epoch: int,
    path: str | Path,
) -> RunState:
    """The run state saved by ``Trainer.save``, checked; CheckpointError says what is wrong."""

    def fail(what: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: {what} — the file is damaged or was not written by `cnnbuild train`"
        )

    counts = [meta.get(key) for key in ("epoch", "step", "batch")]
    if not all(type(value) is int and value >= 0 for value in counts):
        raise fail(f"'epoch', 'step' and 'batch' should be counts, found {counts}")
    epoch, step, batch = counts
    history, sums, best = meta.get("history"), meta.get("epoch_sums"), meta.get("best_accuracy")
    if not (
        isinstance(history, list)
        and len(history) == epoch
        and all(isinstance(row, dict) and list(row) == HISTORY_COLUMNS for row in history)
        and all(_is_number(value) for row in history for value in row.values())
    ):
        raise fail(f"'history' should hold one record of {', '.join(HISTORY_COLUMNS)} an epoch")
    if not (isinstance(sums, list) and len(sums) == 4 and all(map(_is_number, [*sums, best]))):
        raise fail("'epoch_sums' should be 4 numbers and 'best_accuracy' a number")
    if batch > steps_per_epoch or (order is None and batch > 0):
        raise fail(f"stopped at batch {batch} of {steps_per_epoch} without the epoch's order")
    if order is not None and not (
        order.dtype.kind in "iu"
        and order.shape == (train_size,)
        and np.array_equal(np.sort(order), np.arange(train_size))
    ):
        raise fail(f"'run/order' should order the {train_size} training images")
    try:
        for key in ("net", "data"):
            np.random.default_rng().bit_generator.state = meta["rng"][key]
    except (KeyError, TypeError, ValueError):
        raise fail("'rng' should hold the states of the 'net' and 'data' generators") from None
    loss_sum, correct, seen, seconds = sums
    return RunState(
        epoch, step, batch, order, loss_sum, int(correct), int(seen), seconds, history, best
    )


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def resolve_config(spec: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The spec's ``training:`` section with the schema's defaults filled in and the given
    command-line values (those not None) on top. ``lr`` goes into the optimizer."""
    from cnnbuild.spec import load_schema

    properties = load_schema()["properties"]["training"]["properties"]
    config = {key: prop["default"] for key, prop in properties.items() if "default" in prop}
    config |= copy.deepcopy(spec.get("training", {}))
    lr = overrides.pop("lr", None)
    config |= {key: value for key, value in overrides.items() if value is not None}
    if lr is not None:
        config["optimizer"] = {**config["optimizer"], "lr": lr}
    return config


def first_non_finite(net: Network, x: np.ndarray) -> str | None:
    """The first layer whose output holds NaN or infinity for ``x`` (or the input itself)."""
    if not np.isfinite(x).all():
        return "the input batch"
    values = {INPUT: x}
    for node in net.nodes:
        xs = [values[name] for name in node.inputs]
        with np.errstate(all="ignore"):
            values[node.name] = node.layer.forward(xs if node.layer.merge else xs[0], False)
        if not np.isfinite(values[node.name]).all():
            return f"layer {node.name!r} ({node.layer.type_name})"
    return None
