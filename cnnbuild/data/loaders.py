"""How each kind of dataset is read: IDX files, CIFAR-10, the user's image folder.

A loader gets its dataset's declaration (``catalog.DatasetInfo``) and combines locate, read
and verify into a ``Dataset``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnbuild.data import cifar, idx
from cnnbuild.data.dataset import DataError, Dataset
from cnnbuild.data.download import Progress
from cnnbuild.data.folder import ImageShape, read_image_folder
from cnnbuild.data.locate import Place, describe, obtain, search_places

if TYPE_CHECKING:
    from cnnbuild.data.catalog import DatasetInfo

IDX_FILES = {  # split -> (images, labels), as published but without the ".gz" ending
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_idx(
    info: DatasetInfo,
    split: str,
    data_dir: Path | None,
    image_shape: ImageShape | None,
    download: bool,
    progress: Progress | None,
) -> Dataset:
    """A dataset published as the four gzipped IDX files of ``IDX_FILES``."""
    _check_split(info.name, split, tuple(IDX_FILES))
    places = _places(info, data_dir)
    every_file = [f"{stem}.gz" for stems in IDX_FILES.values() for stem in stems]
    help_text = describe(
        f"{info.title} needs these files, gzip-compressed or not: {', '.join(every_file)}.",
        info.mirrors,
        places,
    )
    images_stem, labels_stem = IDX_FILES[split]

    def get(stem: str, read: Callable[[Path], np.ndarray]) -> np.ndarray:
        return obtain(
            (f"{stem}.gz", stem),
            places,
            read,
            urls=[mirror + f"{stem}.gz" for mirror in info.mirrors],
            save_as=f"{stem}.gz",
            download=download,
            progress=progress,
            help_text=help_text,
        )

    images = get(images_stem, partial(idx.read_images, sha256=info.checksums[images_stem]))
    labels = get(
        labels_stem,
        partial(
            idx.read_labels,
            num_classes=len(info.class_names),
            sha256=info.checksums[labels_stem],
        ),
    )
    if len(images) != len(labels):
        raise DataError(
            f"{info.title} {split}: {len(images)} images but {len(labels)} labels; "
            f"{images_stem} and {labels_stem} do not belong together"
        )
    return Dataset(info.name, images, labels, info.class_names)


def load_cifar10(
    info: DatasetInfo,
    split: str,
    data_dir: Path | None,
    image_shape: ImageShape | None,
    download: bool,
    progress: Progress | None,
) -> Dataset:
    """CIFAR-10 from ``cifar.ARCHIVE`` or the ``cifar.FOLDER`` unpacked from it."""
    _check_split(info.name, split, tuple(cifar.SPLITS))
    if data_dir is not None and data_dir.name == cifar.FOLDER:  # pointed at the batches folder
        data_dir = data_dir.parent
    places = _places(info, data_dir)
    urls = [mirror + cifar.ARCHIVE for mirror in info.mirrors]
    help_text = describe(
        f"{info.title} needs {cifar.ARCHIVE}, or the {cifar.FOLDER}/ folder unpacked from it.",
        urls,
        places,
    )

    def read(path: Path) -> cifar.CifarData:
        if path.is_dir():
            return cifar.read_cifar_folder(path, split)
        return cifar.read_cifar_archive(path, split, info.checksums[cifar.ARCHIVE])

    images, labels, class_names = obtain(
        (cifar.FOLDER, cifar.ARCHIVE),
        places,
        read,
        urls=urls,
        save_as=cifar.ARCHIVE,
        download=download,
        progress=progress,
        help_text=help_text,
    )
    return Dataset(info.name, images, labels, class_names)


def load_folder(
    info: DatasetInfo,
    split: str,
    data_dir: Path | None,
    image_shape: ImageShape | None,
    download: bool,
    progress: Progress | None,
) -> Dataset:
    """The user's images in ``data_dir/<split>/<class>/``; nothing is searched or downloaded."""
    if data_dir is None:
        raise DataError(
            "the folder dataset needs data_dir: a folder holding train/<class>/*.png "
            "and test/<class>/*.png (or .jpg), one sub-folder per class"
        )
    images, labels, class_names = read_image_folder(data_dir, split, image_shape)
    return Dataset(info.name, images, labels, class_names)


def _check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise DataError(f"{name} has no split {split!r}; choose one of: {', '.join(splits)}")


def _places(info: DatasetInfo, data_dir: Path | None) -> list[Place]:
    return search_places(info.name, data_dir, info.package_folder, info.system_folders)
