"""Using a trained network: rebuild it from a checkpoint, classify uint8 images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbuild.builder import build
from cnnbuild.checkpoint import CheckpointError, RunCheckpoint, load_network_state, read_run
from cnnbuild.errors import SpecError
from cnnbuild.graph import Network
from cnnbuild.specfile import spec_from_data


@dataclass
class TrainedModel:
    """A network with its weights, input normalisation and class names."""

    net: Network
    run: RunCheckpoint
    class_names: list[str]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> class probabilities (N, classes) float32."""
        return self.net.predict(images, prepare=self.run.normalization.apply)


def load_trained(path: str | Path) -> TrainedModel:
    """Rebuild the network saved in a checkpoint; the checkpoint alone is enough."""
    run = read_run(path)
    try:
        net = build(spec_from_data(run.spec, f"{path} (saved architecture)"))
    except SpecError as error:
        raise CheckpointError(f"{path}: the saved architecture is invalid:\n{error}") from None
    load_network_state(net, run, path)
    names = run.class_names
    if len(names) != net.classes:
        names = [str(i) for i in range(net.classes)]
    return TrainedModel(net, run, names)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted], (classes, classes) int64."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts
