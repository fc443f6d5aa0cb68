"""The callbacks `cnnbuild train` runs: history CSV, checkpoints, the non-finite stop and
Ctrl-C. Each is one responsibility on the ``Callback`` interface of ``cnnbuild.train``."""

from __future__ import annotations

import csv
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.checkpoint import HISTORY_COLUMNS
from cnnbuild.graph import Network, Observer
from cnnbuild.train import Callback, Progress, Trainer


def standard_callbacks(run_dir: str | Path) -> list[Callback]:
    """What every run needs: history.csv, last.npz and best.npz in ``run_dir``, a stop at
    the first non-finite loss, and Ctrl-C as a request to stop."""
    return [HistoryWriter(run_dir), Checkpointer(run_dir), StopOnNonFinite(), StopOnInterrupt()]


class HistoryWriter(Callback):
    """Keeps ``run_dir/history.csv`` equal to the run's history, one row an epoch."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "history.csv"

    def on_train_start(self, trainer: Trainer) -> None:
        self._write(trainer.state.history)  # a resumed run starts from its saved history

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        self._write(trainer.state.history)

    def _write(self, history: list[dict[str, float]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as file:
            writer = csv.DictWriter(file, HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(history)


class Checkpointer(Callback):
    """Saves ``last.npz`` after every epoch and when the run stops mid-epoch, and
    ``best.npz`` whenever the test accuracy is the best so far."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    @property
    def last(self) -> Path:
        return self.run_dir / "last.npz"

    @property
    def best(self) -> Path:
        return self.run_dir / "best.npz"

    def on_train_start(self, trainer: Trainer) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if record["test_accuracy"] > trainer.state.best_accuracy:
            trainer.state.best_accuracy = record["test_accuracy"]
            trainer.save(self.best)
        trainer.save(self.last)

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.state.order is not None and not trainer.failed:  # stopped mid-epoch
            trainer.save(self.last)


class StopOnNonFinite(Callback):
    """Fails the run at the first non-finite loss, naming the epoch, the step and the first
    layer whose output went non-finite."""

    def on_batch_end(self, trainer: Trainer, progress: Progress) -> None:
        if np.isfinite(progress.step_loss):
            return
        where = (
            f"epoch {progress.epoch}, step {trainer.state.step} "
            f"(batch {progress.batch} of {progress.batches})"
        )
        culprit = first_non_finite(trainer.net, trainer.batch_inputs)
        origin = f"; the first non-finite values come from {culprit}" if culprit else ""
        trainer.stop(
            f"the loss became {progress.step_loss} at {where}{origin} — lower the learning "
            "rate or check the input data",
            failed=True,
        )


class _FirstNonFinite(Observer):
    def __init__(self) -> None:
        self.layer: str | None = None

    def after_forward(self, name: str, output: np.ndarray) -> None:
        if self.layer is None and not np.isfinite(output).all():
            self.layer = name


def first_non_finite(net: Network, x: np.ndarray) -> str | None:
    """The first layer whose output holds NaN or infinity for ``x`` (or the input itself)."""
    if not np.isfinite(x).all():
        return "the input batch"
    with net.observed(_FirstNonFinite()) as watch, np.errstate(all="ignore"):
        net.forward(x, train=False)
    if watch.layer is None:
        return None
    return f"layer {watch.layer!r} ({net.layers[watch.layer].type_name})"


class StopOnInterrupt(Callback):
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current step; a
    second one interrupts at once. Only in the main thread, where signals arrive."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            trainer.stop("interrupted (Ctrl-C)")

        self._previous = signal.signal(signal.SIGINT, request_stop)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
