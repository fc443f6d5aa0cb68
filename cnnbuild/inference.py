"""Using a trained network: rebuild it from a checkpoint, classify uint8 images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbuild.builder import allocate, plan
from cnnbuild.checkpoint import (
    CheckpointError,
    RunCheckpoint,
    check_fits,
    load_network_state,
    read_run,
)
from cnnbuild.engine import use as use_engine
from cnnbuild.errors import SpecError
from cnnbuild.graph import PREDICT_BATCH, Network
from cnnbuild.limits import check_memory, inference_memory
from cnnbuild.specfile import Spec, spec_from_data


@dataclass
class TrainedModel:
    """A network with its weights, input normalisation and class names."""

    net: Network
    run: RunCheckpoint
    class_names: list[str]
    path: Path

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> class probabilities (N, classes) float32; refuses
        NaN or infinite results, which only degenerate weights produce."""
        with np.errstate(all="ignore"):  # overflow shows as non-finite results, refused below
            p = self.net.predict(images, prepare=self.run.normalization.apply)
        bad = int((~np.isfinite(p).all(axis=1)).sum())
        if bad:
            raise CheckpointError(
                f"{self.path}: the network computes NaN or infinite probabilities for {bad} of "
                f"{len(p)} images — its weights or saved normalisation are degenerate; use "
                "another checkpoint (best.npz, or an earlier run)"
            )
        return p


def checked_run(path: str | Path) -> tuple[RunCheckpoint, Spec]:
    """Read a run checkpoint and check its saved architecture and settings with the same
    schema as a YAML file; the spec returned holds both."""
    run = read_run(path)
    try:
        spec = spec_from_data(
            {**run.spec, "training": run.config}, f"{path} (saved architecture and settings)"
        )
    except SpecError as error:
        raise CheckpointError(
            f"{path}: the saved architecture or settings are invalid:\n{error}"
        ) from None
    return run, spec


def load_trained(path: str | Path, engine: str = "auto") -> TrainedModel:
    """Rebuild the network saved in a checkpoint, on ``engine`` whichever trained it (they
    agree to float rounding); the checkpoint alone is enough. Sizes are checked against the
    saved arrays and the memory available before weights exist."""
    run, spec = checked_run(path)
    try:
        net = plan(spec)
    except SpecError as error:
        raise CheckpointError(f"{path}: the saved architecture is invalid:\n{error}") from None
    check_fits(net, run, path)
    check_memory(
        inference_memory(net, PREDICT_BATCH),
        f"classifying with {net.name}",
        "free memory, or use a machine with more",
    )
    allocate(net)
    load_network_state(net, run, path)
    use_engine(net, engine)
    names = run.class_names
    if len(names) != net.classes:
        names = [str(i) for i in range(net.classes)]
    return TrainedModel(net, run, names, Path(path))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted], (classes, classes) int64."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts
