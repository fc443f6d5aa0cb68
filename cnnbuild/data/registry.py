"""``load_dataset``: a dataset's name -> its declaration in the catalog -> its loader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cnnbuild.data.catalog import DATASETS
from cnnbuild.data.dataset import DataError, Dataset
from cnnbuild.data.download import Progress
from cnnbuild.data.folder import check_image_shape


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    image_shape: Sequence[int] | None = None,
    download: bool = True,
    progress: Progress | None = None,
) -> Dataset:
    """Load a split of a dataset as uint8 images (N, C, H, W) and int64 labels (N,).

    name: "mnist", "fashion-mnist", "cifar10", or "folder" (your own images in
    ``data_dir/<split>/<class>/``). Files are looked for in ``data_dir``, ``$CNNBUILD_DATA``,
    the package (MNIST), the cache ``~/.cache/cnnbuild`` and system folders, and else
    downloaded into the cache when ``download``, calling ``progress(done_bytes,
    total_bytes)`` as each file arrives (from 0 for each file; total None if unknown).
    ``image_shape`` (C, H, W) converts folder images; for the built-in datasets it must
    equal their shape. Raises DataError.
    """
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    shape = None if image_shape is None else check_image_shape(image_shape)
    if shape is not None and info.image_shape is not None and shape != info.image_shape:
        raise DataError(
            f"{name} images are {info.image_shape} (channels, height, width), but "
            f"{shape} was asked for; use a network whose input shape matches"
        )
    root = None if data_dir is None else Path(data_dir).expanduser()
    return info.load(info, split, root, shape, download, progress)
