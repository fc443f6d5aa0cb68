"""Using a trained network: rebuild it from a checkpoint, classify images in batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.builder import build
from cnnbuild.checkpoint import CheckpointError, load_checkpoint, load_into
from cnnbuild.data import Dataset
from cnnbuild.data.batches import channel_stats, to_float
from cnnbuild.errors import SpecError
from cnnbuild.graph import Network
from cnnbuild.spec import spec_from_data

BATCH = 500


@dataclass
class Normalization:
    """Per-channel mean and standard deviation of the training images, on the 0..1 scale."""

    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32

    @classmethod
    def of(cls, train: Dataset) -> Normalization:
        """The statistics of a training set (fixed values for the built-in datasets)."""
        mean, std = channel_stats(train)
        return cls(np.array(mean, np.float32), np.array(std, np.float32))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> normalised float32."""
        return to_float(images, self.mean, self.std)


@dataclass
class TrainedModel:
    """A network with its weights, input normalisation and class names."""

    net: Network
    normalization: Normalization
    class_names: list[str]
    meta: dict[str, Any]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> class probabilities (N, classes) float32."""
        return probabilities(self.net, self.normalization, images)


def load_trained(path: str | Path) -> TrainedModel:
    """Rebuild the network saved in a checkpoint; the checkpoint alone is enough."""
    arrays, meta = load_checkpoint(path)
    if not isinstance(meta.get("spec"), dict):
        raise CheckpointError(f"{path}: holds no architecture — not a cnnbuild run checkpoint")
    try:
        net = build(spec_from_data(meta["spec"], f"{path} (saved architecture)"))
    except SpecError as error:
        raise CheckpointError(f"{path}: the saved architecture is invalid:\n{error}") from None
    load_network_state(net, arrays, path)
    names = meta.get("class_names")
    if not (isinstance(names, list) and len(names) == net.classes):
        names = [str(i) for i in range(net.classes)]
    normalization = normalization_of(arrays, path, net.input_shape[0])
    return TrainedModel(net, normalization, [str(n) for n in names], meta)


def probabilities(
    net: Network, normalization: Normalization, images: np.ndarray, batch_size: int = BATCH
) -> np.ndarray:
    """Class probabilities for uint8 images, a batch at a time, in inference mode."""
    out = np.empty((len(images), net.classes), np.float32)
    for start in range(0, len(images), batch_size):
        batch = normalization.apply(images[start : start + batch_size])
        out[start : start + batch_size] = net.forward(batch, train=False)
    return out


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted], (classes, classes) int64."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def load_network_state(net: Network, arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Copy weights and buffers from checkpoint arrays, naming any mismatching key."""
    try:
        load_into(net.params, section(arrays, "params/"), "the network")
        load_into(net.buffers, section(arrays, "buffers/"), "the network")
    except CheckpointError as error:
        raise CheckpointError(f"{path}: does not fit the architecture: {error}") from None


def normalization_of(
    arrays: dict[str, np.ndarray], path: str | Path, channels: int
) -> Normalization:
    """The saved input normalisation: 1 or ``channels`` finite means and positive stds."""
    try:
        mean, std = arrays["normalization/mean"], arrays["normalization/std"]
    except KeyError as missing:
        raise CheckpointError(
            f"{path}: no {missing} entry — not a cnnbuild run checkpoint"
        ) from None
    for name, values in (("mean", mean), ("std", std)):
        if not (
            values.dtype.kind == "f"
            and values.shape in ((1,), (channels,))
            and np.isfinite(values).all()
        ):
            raise CheckpointError(
                f"{path}: normalization/{name} should hold 1 or {channels} finite numbers, "
                f"found {values.dtype} {values.shape}"
            )
    if (std <= 0).any():
        raise CheckpointError(f"{path}: normalization/std must be positive, found {std}")
    return Normalization(mean.astype(np.float32), std.astype(np.float32))


def section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
