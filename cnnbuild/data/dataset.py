"""The in-memory dataset and the errors every loader raises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnbuild.errors import CnnbuildError


class DataError(CnnbuildError):
    """A dataset is missing, damaged or in the wrong layout; the message names the file."""


class DataWarning(UserWarning):
    """Something is wrong but reading went on: a damaged cached file was downloaded again,
    or a class folder holds no images."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images kept as uint8 to save memory; convert batches with ``batches.to_float``.

    images: (N, C, H, W) uint8. labels: (N,) int64 indices into ``class_names``.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
