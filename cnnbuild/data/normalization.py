"""Input normalisation: uint8 images to the float32 values a network is trained on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnbuild.data.batches import channel_stats, to_float
from cnnbuild.data.dataset import Dataset


@dataclass
class Normalization:
    """Per-channel mean and standard deviation of the training images, on the 0..1 scale."""

    mean: np.ndarray  # (C,) or (1,) float32
    std: np.ndarray  # (C,) or (1,) float32

    @classmethod
    def of(cls, train: Dataset) -> Normalization:
        """The statistics of a training set (fixed values for the built-in datasets)."""
        mean, std = channel_stats(train)
        return cls(np.array(mean, np.float32), np.array(std, np.float32))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> normalised float32 (N, C, H, W)."""
        return to_float(images, self.mean, self.std)
