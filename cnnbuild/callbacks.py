"""The callbacks `cnnbuild train` runs: checkpoints, history CSV, the divergence stop and
signals. Each is one responsibility on the ``Callback`` interface of ``cnnbuild.train``."""

from __future__ import annotations

import csv
import io
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.checkpoint import HISTORY_COLUMNS
from cnnbuild.errors import CnnbuildError
from cnnbuild.files import atomic_write
from cnnbuild.graph import Network, Observer
from cnnbuild.layers.output import MIN_PROBABILITY
from cnnbuild.train import Callback, Progress, Trainer

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")  # Ctrl-C; kill, timeout, Docker, SLURM; hang-up


def standard_callbacks(
    run_dir: str | Path, early_stopping: dict[str, Any] | None = None
) -> list[Callback]:
    """What every run needs: last.npz, best.npz and history.csv in ``run_dir``, a stop when
    training diverges, and stop signals (Ctrl-C, SIGTERM, SIGHUP) as requests to stop; with
    ``early_stopping`` (the resolved ``training.early_stopping``), an EarlyStopping first."""
    early = [EarlyStopping(**early_stopping)] if early_stopping else []
    standard = [Checkpointer(run_dir), HistoryWriter(run_dir), StopOnDivergence(), StopOnSignal()]
    return [*early, *standard]


class EarlyStopping(Callback):
    """Stops the run when ``monitor`` (a history column) has not improved by more than
    ``min_delta`` for ``patience`` epochs in a row. ``mode`` says whether lower ("min") or
    higher ("max") is better; None infers it: min for ``*loss``, max for ``*accuracy``.

    Put it before the Checkpointer, so that the last.npz of the final epoch records why the
    run stopped (``state.stop_reason``). Its count is recomputed from the history when
    training starts, so a resumed run stops where the run never stopped would have.
    """

    def __init__(
        self, monitor: str, patience: int = 5, min_delta: float = 0.0, mode: str | None = None
    ) -> None:
        if mode is None:
            if monitor.endswith("loss"):
                mode = "min"
            elif monitor.endswith("accuracy"):
                mode = "max"
            else:
                raise CnnbuildError(
                    f"training.early_stopping: give `mode: min` or `mode: max` for monitor "
                    f"{monitor!r} (it is inferred only for *loss and *accuracy columns)"
                )
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best: float | None = None
        self.best_epoch = 0
        self.waited = 0

    def on_train_start(self, trainer: Trainer) -> None:
        columns = trainer.state.history[0] if trainer.state.history else None
        if self.monitor.startswith("val_") and getattr(trainer, "validation_set", None) is None:
            raise CnnbuildError(
                f"training.early_stopping: monitor {self.monitor!r} needs a validation split — "
                "set training.validation (e.g. 0.1), or monitor test_accuracy"
            )
        if columns is not None and self.monitor not in columns:
            raise CnnbuildError(f"training.early_stopping: no column {self.monitor!r} in history")
        trainer.state.stop_reason = None
        self.best, self.best_epoch, self.waited = None, 0, 0
        for record in trainer.state.history:
            self._update(record)

    def _update(self, record: dict[str, float]) -> None:
        value = record[self.monitor]
        if self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.waited = value, int(record["epoch"]), 0
        else:
            self.waited += 1

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        self._update(record)
        if self.waited >= self.patience and record["epoch"] < trainer.config["epochs"]:
            reason = (
                f"early stopping: {self.monitor} has not improved for {self.waited} "
                f"epoch{'s' if self.waited != 1 else ''} "
                f"(best {self.best:.4f} at epoch {self.best_epoch}, patience {self.patience})"
            )
            trainer.state.stop_reason = reason
            trainer.stop(reason)


class HistoryWriter(Callback):
    """Keeps ``run_dir/history.csv`` equal to the run's history, one row an epoch, rewritten
    atomically: a full disk or a crash leaves the previous file whole."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "history.csv"

    def on_train_start(self, trainer: Trainer) -> None:
        self._write(trainer.state.history)  # a resumed run starts from its saved history

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        self._write(trainer.state.history)

    def _write(self, history: list[dict[str, float]]) -> None:
        text = io.StringIO(newline="")
        columns = list(history[0]) if history else HISTORY_COLUMNS
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(history)
        try:
            atomic_write(self.path, lambda file: file.write(text.getvalue().encode()))
        except OSError as error:
            raise CnnbuildError(
                f"cannot write {self.path}: {error.strerror}; the checkpoints hold the whole "
                "history — free space and resume"
            ) from None


class Checkpointer(Callback):
    """Saves ``last.npz`` after every epoch and when the run stops mid-epoch, and
    ``best.npz`` whenever the validation accuracy (with a validation split; else the test
    accuracy) is the best so far (``trainer.selection_metric``)."""

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
        metric = record[trainer.selection_metric]
        if metric > trainer.state.best_accuracy:
            trainer.state.best_accuracy = metric
            trainer.save(self.best)
        trainer.save(self.last)

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.state.order is not None and not trainer.failed:  # stopped mid-epoch
            trainer.save(self.last)


class StopOnDivergence(Callback):
    """Fails the run when it diverges, naming the epoch, the step and the layer at fault, so
    that no checkpoint is ever saved in a state that cannot be loaded or is useless:

    - at the first non-finite loss, parameter or buffer (a batch-norm running statistic);
    - when the loss stays at or above half its ceiling for ``patience`` steps in a row. The
      cross-entropy is clipped at -log(MIN_PROBABILITY) (about 27.6), where a network is
      certain of wrong classes; half of it means the true class gets a probability of about
      1e-6 on average, far below a guess (1/classes), which a learning network never does.
    """

    def __init__(self, patience: int = 20) -> None:
        self.patience = patience
        self._high = 0  # steps in a row with the loss near its ceiling

    def on_batch_end(self, trainer: Trainer, progress: Progress) -> None:
        where = (
            f"epoch {progress.epoch}, step {trainer.state.step} "
            f"(batch {progress.batch} of {progress.batches})"
        )
        ceiling = -np.log(MIN_PROBABILITY)
        self._high = self._high + 1 if progress.step_loss >= ceiling / 2 else 0
        if not np.isfinite(progress.step_loss):
            culprit = first_non_finite(trainer.net, trainer.batch_inputs)
            origin = f"; the first non-finite values come from {culprit}" if culprit else ""
            what = f"the loss became {progress.step_loss} at {where}{origin}"
        elif self._high >= self.patience:
            what = (
                f"the loss stayed at {progress.step_loss:.1f} or near it for {self._high} steps "
                f"up to {where}: the network is certain of wrong classes (the loss cannot "
                f"exceed {ceiling:.1f}), so training has diverged"
            )
        else:
            arrays = {**trainer.net.params, **trainer.net.buffers}
            bad = next((key for key, a in arrays.items() if not np.isfinite(a).all()), None)
            if bad is None:
                return
            layer = bad.split(".")[0]
            kind = trainer.net.layers[layer].type_name
            what = f"{bad} of layer {layer!r} ({kind}) became non-finite at {where}"
        trainer.stop(f"{what} — lower the learning rate or check the input data", failed=True)


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


class StopOnSignal(Callback):
    """Turns the first stop signal (Ctrl-C's SIGINT, SIGTERM, SIGHUP) into a request to stop
    after the current step, so the run is saved; a second one interrupts at once.
    ``received`` is the signal's number. Only in the main thread, where signals arrive."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: Trainer) -> None:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self.received is not None:
                raise KeyboardInterrupt
            self.received = signum
            trainer.stop(f"stopped by {signal.Signals(signum).name}")

        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, request_stop)

    def on_train_end(self, trainer: Trainer) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
