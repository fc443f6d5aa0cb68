"""The training loop: batches, optimizer steps, per-epoch metrics, and the hooks around them.

The loop itself decides nothing about files, screens or signals: history CSV, checkpoints,
progress display, Ctrl-C and the non-finite stop are callbacks (``cnnbuild.callbacks``) on
the ``Callback`` interface below, and any of them can end training with ``Trainer.stop``.
Everything a run needs to continue bit for bit is in the trainer's ``checkpoint()``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.checkpoint import (
    HISTORY_COLUMNS,
    VALIDATION_COLUMNS,
    RunCheckpoint,
    RunState,
    check_resumable,
    load_network_state,
    read_run,
    save_run,
)
from cnnbuild.data import Dataset, dataset_names
from cnnbuild.data.batches import crop_problem, random_crop, random_flip
from cnnbuild.data.normalization import Normalization
from cnnbuild.engine import ENGINES
from cnnbuild.errors import CnnbuildError, ConfigError
from cnnbuild.graph import Network
from cnnbuild.layers.output import cross_entropy
from cnnbuild.optim import Optimizer, make_optimizer
from cnnbuild.options import Option, boolean, choice, defaults, integer, number, section
from cnnbuild.schedules import Schedule, make_schedule

AUGMENT: dict[str, Option] = {
    "crop": integer(
        0, "Pad by this many pixels, then crop back at a random offset; 0 turns it off.", 0
    ),
    "flip": boolean("Flip images left-right with probability 0.5.", False),
}

HISTORY_KEYS = [*HISTORY_COLUMNS, *VALIDATION_COLUMNS]

EARLY_STOPPING: dict[str, Option] = {
    "monitor": choice(
        HISTORY_KEYS, "The history column to watch, such as val_accuracy or val_loss."
    ),
    "patience": integer(1, "Epochs in a row without improvement before stopping.", 5),
    "min_delta": number("How much a change must exceed to count as improvement.", 0, minimum=0),
    "mode": Option(
        {"enum": ["min", "max", None]},
        "Whether lower (min) or higher (max) is better; null: min for *loss, max for "
        "*accuracy (required for other columns).",
        None,
    ),
}


def _nullable_section(options: dict[str, Option], description: str) -> Option:
    """A ``section`` that may also be null, its default (off)."""
    schema = section(options, description).schema
    required = [key for key, option in options.items() if option.required]
    return Option({**schema, "type": ["object", "null"], "required": required}, description, None)


TRAINING: dict[str, Option] = {
    "dataset": choice(dataset_names(), "Dataset to train on.", "mnist"),
    "data_dir": Option(
        {"type": ["string", "null"]},
        "Folder holding the dataset (required for `folder`); null: searched, then downloaded.",
        None,
    ),
    "epochs": integer(1, "Number of passes over the training set.", 10),
    "engine": choice(
        list(ENGINES),
        "What computes the passes: numpy (the reference), fast (compiled kernels, needs "
        "cnnbuild[fast]), or auto (fast when it is installed). Results agree to float rounding.",
        "auto",
    ),
    "batch_size": integer(1, "Images per training step.", 128),
    "seed": integer(
        0, "Seed of the one random generator (weights, shuffling, dropout, augmentation).", 0
    ),
    "optimizer": Option(
        {"$ref": "#/$defs/optimizer"}, "How weights are updated.", {"type": "adam"}
    ),
    "schedule": Option(
        {"$ref": "#/$defs/schedule"}, "How the learning rate changes.", {"type": "constant"}
    ),
    "augment": section(AUGMENT, "Random augmentation of training images."),
    "validation": Option(
        {
            "anyOf": [
                {"type": "null"},
                {"type": "integer", "minimum": 1},
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            ]
        },
        "Images held out of the training set to validate on: a count (an integer >= 1) or a "
        "fraction (0 < f < 1), stratified by class and fixed by the seed; best.npz and early "
        "stopping then select on it. null: none.",
        None,
    ),
    "tensorboard": Option(
        {"type": ["string", "null"]},
        "Folder to write TensorBoard event files to (needs cnnbuild[tensorboard]); null: none.",
        None,
    ),
    "init_from": Option(
        {"type": ["string", "null"]},
        "Checkpoint to start from: every layer whose name and parameter shapes match is "
        "loaded from it (fine-tuning); null: fresh weights.",
        None,
    ),
    "freeze": Option(
        {"type": "array", "items": {"type": "string"}},
        "Names of layers whose parameters (and batch-norm statistics) training leaves as they are.",
        [],
    ),
    "early_stopping": _nullable_section(
        EARLY_STOPPING,
        "Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs "
        "in a row; null: never.",
    ),
}


def resolve_config(training: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A ``training:`` section with every default filled in and the given command-line
    values (those not None) on top. ``lr`` goes into the optimizer."""
    lr = overrides.pop("lr", None)
    config = defaults(TRAINING) | copy.deepcopy(training)
    config |= {key: value for key, value in overrides.items() if value is not None}
    config["augment"] = defaults(AUGMENT) | config["augment"]
    if config["early_stopping"] is not None:
        config["early_stopping"] = defaults(EARLY_STOPPING) | config["early_stopping"]
    if lr is not None:
        config["optimizer"] = {**config["optimizer"], "lr": lr}
    return config


def split_validation(
    dataset: Dataset, validation: int | float | None, seed: int
) -> tuple[Dataset, Dataset | None]:
    """(the images to train on, the held-out validation images): ``validation`` images (a
    count, or a fraction of ``dataset``), the same share of every class, chosen by ``seed``
    alone, so a resumed run holds out the same ones. Both keep the dataset's order."""
    if validation is None:
        return dataset, None
    total = len(dataset)
    count = int(validation) if validation >= 1 else round(validation * total)
    if not 1 <= count < total:
        raise ConfigError(
            f"training.validation: {validation!r} holds out {count:,} of the {total:,} training "
            f"images — give a count from 1 to {total - 1:,}, or a fraction between 0 and 1"
        )
    classes, sizes = np.unique(dataset.labels, return_counts=True)
    exact = sizes * count / total
    take = np.floor(exact).astype(int)
    remainder = count - int(take.sum())
    order = np.argsort(-(exact - take), kind="stable")  # largest fractions first
    take[order[:remainder]] += 1
    rng = np.random.default_rng([seed, 2])
    held: list[np.ndarray] = []
    for label, size in zip(classes, take, strict=True):
        members = np.flatnonzero(dataset.labels == label)
        held.append(rng.permutation(members)[:size])
    mask = np.zeros(total, dtype=bool)
    mask[np.concatenate(held)] = True
    return _subset(dataset, ~mask), _subset(dataset, mask)


def _subset(dataset: Dataset, mask: np.ndarray) -> Dataset:
    return dataclasses.replace(dataset, images=dataset.images[mask], labels=dataset.labels[mask])


class TrainingFailed(CnnbuildError):
    """Training could not go on (the loss became non-finite); checkpoints on disk are left
    as they were, holding the last good state."""


@dataclass
class Progress:
    """What callbacks hear after every training step."""

    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based within the epoch
    batches: int
    step_loss: float  # this step's loss
    loss: float  # running mean over the epoch so far
    accuracy: float
    images_per_second: float
    seconds: float  # spent on this epoch so far


class Callback:
    """The hooks a trainer calls, in this order: ``on_train_start``, then for each epoch
    ``on_epoch_start``, ``on_batch_end`` after every step and ``on_epoch_end`` with the
    epoch's record (a row of HISTORY_COLUMNS), and ``on_train_end`` however the run ends:
    finished, stopped with ``trainer.stop`` (``trainer.stop_reason``), or failed
    (``trainer.failed``, also on an exception). Override what you need; the trainer's
    state, network and optimizer are there to read. End training with ``trainer.stop``,
    never by raising."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first step (also of a resumed run)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before an epoch's first step, or its next step when resuming mid-epoch."""

    def on_batch_end(self, trainer: Trainer, progress: Progress) -> None:
        """After each optimizer step."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        """After an epoch is trained and evaluated."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last step, however the run ended."""


class Trainer:
    """Trains ``net`` on ``train`` for ``config["epochs"]``, evaluating on ``test``.

    ``config`` is the resolved ``training:`` section (see ``resolve_config``); callbacks
    are called in order (see ``Callback``). With ``config["validation"]``, that many
    images of ``train`` are held out (``split_validation``): ``train_set`` is the rest and
    ``validation_set`` them, evaluated every epoch as ``val_loss`` and ``val_accuracy``.
    """

    def __init__(
        self,
        net: Network,
        config: dict[str, Any],
        train: Dataset,
        test: Dataset,
        callbacks: Sequence[Callback] = (),
        normalization: Normalization | None = None,
    ) -> None:
        self.net = net
        self.config = config
        train, self.validation_set = split_validation(
            train, config.get("validation"), config["seed"]
        )
        self.train_set = train
        self.test_set = test
        self.callbacks = list(callbacks)
        self.normalization = normalization or Normalization.of(train)
        problem = crop_problem(config["augment"]["crop"], *train.image_shape[1:])
        if config["augment"]["crop"] and problem:
            raise ConfigError(f"training.augment: {problem}")
        self.batch_size = min(config["batch_size"], len(train))
        self.steps_per_epoch = len(train) // self.batch_size
        self.optimizer: Optimizer = make_optimizer(config["optimizer"], net.params, net.roles)
        self.schedule: Schedule = make_schedule(
            config["schedule"], self.optimizer.lr, self.steps_per_epoch, config["epochs"]
        )
        self.data_rng = np.random.default_rng([config["seed"], 1])
        self.state = RunState()
        self.batch_inputs: np.ndarray | None = None  # the last step's network input
        self.stop_reason: str | None = None
        self.failed = False
        self.overrides: list[str] = []  # the --set PATH=VALUE that made net.spec, recorded

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> list[dict[str, float]]:
        """Train to the configured number of epochs, or until a callback calls ``stop``;
        returns the history, one record an epoch. Raises TrainingFailed when a callback
        stopped it as failed."""
        self.stop_reason, self.failed = None, False
        try:
            self._call("on_train_start")
            while self.state.epoch < self.config["epochs"] and self.stop_reason is None:
                if self.state.order is None:
                    self.state.start_epoch(self.data_rng.permutation(len(self.train_set)))
                self._call("on_epoch_start")
                self._train_epoch()
                if self.stop_reason is None:
                    self._finish_epoch()
        except BaseException as error:
            self.stop(f"{type(error).__name__}: {error}", failed=True)
            raise
        finally:
            self._call("on_train_end")
        if self.failed:
            raise TrainingFailed(self.stop_reason)
        return self.state.history

    @property
    def selection_metric(self) -> str:
        """The column best.npz is chosen on: val_accuracy with a validation split."""
        return "val_accuracy" if self.validation_set is not None else "test_accuracy"

    def stop(self, reason: str, failed: bool = False) -> None:
        """End training after the current step; ``fit`` then returns, or raises
        TrainingFailed when ``failed``. The first call wins."""
        if self.stop_reason is None:
            self.stop_reason, self.failed = reason, failed

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _train_epoch(self) -> None:
        state = self.state
        started = time.perf_counter()
        done_before = state.seconds
        while state.batch < self.steps_per_epoch and self.stop_reason is None:
            start = state.batch * self.batch_size
            index = state.order[start : start + self.batch_size]
            x = self.normalization.apply(self._augment(self.train_set.images[index]))
            labels = self.train_set.labels[index]
            with np.errstate(all="ignore"):  # non-finite values are reported by a callback
                loss, probabilities = self._step(x, labels)
            state.step += 1
            state.batch += 1
            state.loss_sum += loss * len(index)
            state.correct += int((probabilities.argmax(axis=1) == labels).sum())
            state.seen += len(index)
            state.seconds = done_before + time.perf_counter() - started
            progress = Progress(
                epoch=state.epoch + 1,
                epochs=self.config["epochs"],
                batch=state.batch,
                batches=self.steps_per_epoch,
                step_loss=loss,
                loss=state.loss_sum / state.seen,
                accuracy=state.correct / state.seen,
                images_per_second=state.seen / max(state.seconds, 1e-9),
                seconds=state.seconds,
            )
            self._call("on_batch_end", progress)

    def _step(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """One optimizer step; returns the batch's loss and class probabilities. A step
        whose loss is not finite updates nothing."""
        self.batch_inputs = x
        probabilities = self.net.forward(x, train=True)
        loss = cross_entropy(probabilities, labels)
        if np.isfinite(loss):
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
        if self.validation_set is not None:
            record["val_loss"], record["val_accuracy"] = self.evaluate(self.validation_set)
        state.history.append(record)
        state.order, state.batch = None, 0
        self._call("on_epoch_end", record)

    def evaluate(self, dataset: Dataset) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on ``dataset``, in inference mode."""
        p = self.net.predict(dataset.images, prepare=self.normalization.apply)
        return cross_entropy(p, dataset.labels), float((p.argmax(axis=1) == dataset.labels).mean())

    # --- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> RunCheckpoint:
        """Everything needed to predict with the network or resume the run, as it is now."""
        return RunCheckpoint(
            spec=self.net.spec,
            config=self.config,
            class_names=list(self.train_set.class_names),
            params=self.net.params,
            buffers=self.net.buffers,
            optimizer=self.optimizer.state_dict(),
            normalization=self.normalization,
            state=self.state,
            rng={
                "net": self.net.rng.bit_generator.state,
                "data": self.data_rng.bit_generator.state,
            },
            overrides=list(self.overrides),
        )

    def save(self, path: str | Path) -> Path:
        """Write ``checkpoint()`` to ``path`` atomically."""
        save_run(path, self.checkpoint())
        return Path(path)

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint written by ``save`` (weights and run state)."""
        run = read_run(path)
        check_resumable(run.state, len(self.train_set), self.steps_per_epoch, path)
        load_network_state(self.net, run, path)
        self.optimizer.load_state_dict(run.optimizer)
        self.normalization = run.normalization
        self.state = run.state
        self.optimizer.lr = self.schedule.lr_at(max(run.state.step - 1, 0))  # the last rate
        self.net.rng.bit_generator.state = run.rng["net"]
        self.data_rng.bit_generator.state = run.rng["data"]
