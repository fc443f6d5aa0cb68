"""TensorBoard event files for a run (``cnnbuild train --tensorboard DIR``).

Written through tensorboardX (the ``tensorboard`` extra), a small, maintained writer that
needs neither TensorFlow nor PyTorch; images are PNGs from ``cnnbuild.png``, so Pillow is not
needed either. Open the files with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbuild.errors import CnnbuildError
from cnnbuild.png import encode_png, enlarge
from cnnbuild.train import Callback, Progress, Trainer

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

MISTAKES = 32  # the most confidently wrong test images logged each epoch
INSTALL = "pip install 'cnnbuild[tensorboard]'"


class TensorBoardLogger(Callback):
    """Logs to ``log_dir``: the loss and learning rate of every step (``step/*``, by
    optimizer step), every history column per epoch (``epoch/*``), histograms of each
    weight and of its last gradient per epoch, and a grid of the test images the network is
    most sure of and gets wrong (``mistakes``, captioned by the text ``mistakes/labels``)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise CnnbuildError(f"--tensorboard needs tensorboardX: {INSTALL}") from None
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self.writer: SummaryWriter | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        try:
            self.writer = self._writer_class(str(self.log_dir), flush_secs=10)
        except OSError as error:
            raise CnnbuildError(f"cannot write to {self.log_dir}: {error.strerror}") from None

    def on_batch_end(self, trainer: Trainer, progress: Progress) -> None:
        step = trainer.state.step
        self.writer.add_scalar("step/loss", progress.step_loss, step)
        self.writer.add_scalar("step/lr", trainer.optimizer.lr, step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        net = trainer.net
        for name, values in net.params.items():
            self.writer.add_histogram(f"weights/{name}", values, epoch)
            self.writer.add_histogram(f"gradients/{name}", net.grads[name], epoch)
        self._log_mistakes(trainer, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _log_mistakes(self, trainer: Trainer, epoch: int) -> None:
        test = trainer.test_set
        p = trainer.net.predict(test.images, prepare=trainer.normalization.apply)
        predicted = p.argmax(axis=1)
        wrong = np.flatnonzero(predicted != test.labels)
        if not len(wrong):
            return
        worst = wrong[np.argsort(-p[wrong, predicted[wrong]], kind="stable")[:MISTAKES]]
        self._add_image("mistakes", image_grid(test.images[worst]), epoch)
        names = test.class_names
        lines = [
            "| position | index | true | predicted | probability |",
            "|---:|---:|---|---|---:|",
        ]
        lines += [
            f"| {n + 1} | {i} | {names[test.labels[i]]} | {names[predicted[i]]} | "
            f"{p[i, predicted[i]]:.1%} |"
            for n, i in enumerate(worst)
        ]
        self.writer.add_text("mistakes/labels", "\n".join(lines), epoch)

    def _add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A uint8 (C, H, W) image, encoded without Pillow (tensorboardX's add_image needs it)."""
        from tensorboardX.proto.summary_pb2 import Summary

        channels, height, width = image.shape
        encoded = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=encode_png(image)
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=encoded)])
        self.writer.file_writer.add_summary(summary, step)


def image_grid(images: np.ndarray, columns: int = 8, size: int = 64, gap: int = 2) -> np.ndarray:
    """uint8 images (N, C, H, W) tiled left to right, then top to bottom, each enlarged to
    about ``size`` pixels, on a grey background: (C, height, width)."""
    tiles = np.stack([enlarge(image, size) for image in images])
    count, channels, height, width = tiles.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = np.full(
        (channels, rows * (height + gap) + gap, columns * (width + gap) + gap), 128, np.uint8
    )
    for n, tile in enumerate(tiles):
        top, left = gap + (n // columns) * (height + gap), gap + (n % columns) * (width + gap)
        grid[:, top : top + height, left : left + width] = tile
    return grid


def tensorboard_callbacks(config: dict[str, Any]) -> list[Callback]:
    """A TensorBoardLogger when ``config["tensorboard"]`` names a folder, else none."""
    folder = config.get("tensorboard")
    return [TensorBoardLogger(folder)] if folder else []
