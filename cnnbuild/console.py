"""What the command line prints while training and evaluating."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from cnnbuild.train import Progress

EPOCH_HEADER = f"{'epoch':>5}  {'loss':>8}  {'train acc':>9}  {'test acc':>8}  {'time':>7}"


class ConsoleProgress:
    """A progress bar during each epoch (on a terminal), then one line per epoch."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.live = self.stream.isatty()
        self._drawn = 0.0
        self._header_shown = False

    def _header(self) -> None:
        if not self._header_shown:
            print(EPOCH_HEADER, file=sys.stdout, flush=True)
            self._header_shown = True

    def on_batch(self, progress: Progress) -> None:
        self._header()
        now = time.monotonic()
        if not self.live or (now - self._drawn < 0.1 and progress.batch < progress.batches):
            return
        self._drawn = now
        done = progress.batch / progress.batches
        bar = "#" * int(done * self.width)
        eta = progress.seconds / progress.batch * (progress.batches - progress.batch)
        self.stream.write(
            f"\repoch {progress.epoch}/{progress.epochs} [{bar:<{self.width}}] "
            f"{progress.batch}/{progress.batches}  loss {progress.loss:.4f}  "
            f"acc {progress.accuracy:.4f}  {progress.images_per_second:,.0f} img/s  "
            f"ETA {_duration(eta)}\x1b[K"
        )
        self.stream.flush()

    def on_epoch(self, record: dict[str, float]) -> None:
        self._header()
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(epoch_line(record), file=sys.stdout, flush=True)


def epoch_line(record: dict[str, float]) -> str:
    """The report's columns: epoch, mean loss, train accuracy, test accuracy; and time."""
    return (
        f"{record['epoch']:>5}  {record['loss']:>8.4f}  {record['train_accuracy']:>9.4f}  "
        f"{record['test_accuracy']:>8.4f}  {_duration(record['seconds']):>7}"
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


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"
