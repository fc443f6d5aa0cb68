"""What the command line prints while training and evaluating."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from cnnbuild.train import Callback, Progress, Trainer

EPOCH_HEADER = f"{'epoch':>5}  {'loss':>8}  {'train acc':>9}  {'test acc':>8}  {'time':>7}"
# with a validation split: its loss and accuracy after the test column
VALIDATION_HEADER = (
    f"{'epoch':>5}  {'loss':>8}  {'train acc':>9}  {'test acc':>8}  {'val loss':>8}  "
    f"{'val acc':>7}  {'time':>7}"
)


class ConsoleProgress(Callback):
    """A progress bar during each epoch on ``bar`` when it is a terminal, then one line per
    epoch on ``table`` (the report's columns). Defaults: standard error and output, looked up
    when written to."""

    def __init__(
        self, table: TextIO | None = None, bar: TextIO | None = None, width: int = 24
    ) -> None:
        self._table, self._bar = table, bar
        self.width = width
        self._drawn = 0.0
        self._header_shown = False

    @property
    def table(self) -> TextIO:
        return self._table or sys.stdout

    @property
    def bar(self) -> TextIO:
        return self._bar or sys.stderr

    def _header(self, trainer: Trainer) -> None:
        if not self._header_shown:
            validated = getattr(trainer, "validation_set", None) is not None
            header = VALIDATION_HEADER if validated else EPOCH_HEADER
            print(header, file=self.table, flush=True)
            self._header_shown = True

    def on_batch_end(self, trainer: Trainer, progress: Progress) -> None:
        self._header(trainer)
        now = time.monotonic()
        if not self.bar.isatty() or (now - self._drawn < 0.1 and progress.batch < progress.batches):
            return
        self._drawn = now
        done = progress.batch / progress.batches
        bar = "#" * int(done * self.width)
        eta = progress.seconds / progress.batch * (progress.batches - progress.batch)
        self.bar.write(
            f"\repoch {progress.epoch}/{progress.epochs} [{bar:<{self.width}}] "
            f"{progress.batch}/{progress.batches}  loss {progress.loss:.4f}  "
            f"acc {progress.accuracy:.4f}  {progress.images_per_second:,.0f} img/s  "
            f"ETA {duration(eta)}\x1b[K"
        )
        self.bar.flush()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        self._header(trainer)
        if self.bar.isatty():
            self.bar.write("\r\x1b[K")
            self.bar.flush()
        print(epoch_line(record), file=self.table, flush=True)


def epoch_line(record: dict[str, float]) -> str:
    """The report's columns: epoch, mean loss, train accuracy, test accuracy; validation
    loss and accuracy when the record has them; and time."""
    validation = ""
    if "val_accuracy" in record:
        validation = f"{record['val_loss']:>8.4f}  {record['val_accuracy']:>7.4f}  "
    return (
        f"{record['epoch']:>5}  {record['loss']:>8.4f}  {record['train_accuracy']:>9.4f}  "
        f"{record['test_accuracy']:>8.4f}  {validation}{duration(record['seconds']):>7}"
    )


def confusion_table(counts: np.ndarray, names: list[str]) -> str:
    """A confusion matrix with class names: rows are true classes, columns predictions."""
    short = [name[:8] for name in names]
    width = max(6, *(len(name) for name in short), len(f"{counts.max():,}"))
    label = max(len(name) for name in names)
    corner = "true \\ predicted"
    label = max(label, len(corner))
    lines = [f"{corner:<{label}}  " + " ".join(f"{n:>{width}}" for n in short)]
    for name, row in zip(names, counts, strict=True):
        lines.append(f"{name:<{label}}  " + " ".join(f"{c:>{width},}" for c in row))
    return "\n".join(lines)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"
