"""``load_dataset``: dataset name -> loader, each combining locate, read and verify."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from cnnbuild.data import catalog, cifar, idx
from cnnbuild.data.dataset import DataError, Dataset
from cnnbuild.data.download import Progress
from cnnbuild.data.folder import check_image_shape, read_image_folder
from cnnbuild.data.locate import describe, obtain, search_places

Loader = Callable[[str, Path | None, tuple[int, ...] | None, bool, Progress | None], Dataset]


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
    loader = LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(LOADERS))}")
    shape = None if image_shape is None else check_image_shape(image_shape)
    if shape is not None and name in catalog.IMAGE_SHAPES and shape != catalog.IMAGE_SHAPES[name]:
        raise DataError(
            f"{name} images are {catalog.IMAGE_SHAPES[name]} (channels, height, width), but "
            f"{shape} was asked for; use a network whose input shape matches"
        )
    root = None if data_dir is None else Path(data_dir).expanduser()
    return loader(split, root, shape, download, progress)


def _check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise DataError(f"{name} has no split {split!r}; choose one of: {', '.join(splits)}")


def _load_idx(
    name: str,
    split: str,
    data_dir: Path | None,
    image_shape: tuple[int, ...] | None,
    download: bool,
    progress: Progress | None,
) -> Dataset:
    _check_split(name, split, tuple(catalog.IDX_FILES))
    source = catalog.IDX_SOURCES[name]
    places = search_places(name, data_dir)
    every_file = [f"{stem}.gz" for stems in catalog.IDX_FILES.values() for stem in stems]
    help_text = describe(
        f"{source.title} needs these files, gzip-compressed or not: {', '.join(every_file)}.",
        source.mirrors,
        places,
    )
    images_stem, labels_stem = catalog.IDX_FILES[split]
    num_classes = len(source.class_names)

    def get(stem: str, read: Callable[[Path], np.ndarray]) -> np.ndarray:
        return obtain(
            (f"{stem}.gz", stem),
            places,
            read,
            urls=[mirror + f"{stem}.gz" for mirror in source.mirrors],
            save_as=f"{stem}.gz",
            download=download,
            progress=progress,
            help_text=help_text,
        )

    images = get(images_stem, partial(idx.read_images, sha256=source.sha256[images_stem]))
    labels = get(
        labels_stem,
        partial(idx.read_labels, num_classes=num_classes, sha256=source.sha256[labels_stem]),
    )
    if len(images) != len(labels):
        raise DataError(
            f"{source.title} {split}: {len(images)} images but {len(labels)} labels; "
            f"{images_stem} and {labels_stem} do not belong together"
        )
    return Dataset(name, images, labels, source.class_names)


def _load_cifar10(
    split: str,
    data_dir: Path | None,
    image_shape: tuple[int, ...] | None,
    download: bool,
    progress: Progress | None,
) -> Dataset:
    _check_split("cifar10", split, tuple(cifar.SPLITS))
    source = catalog.CIFAR10
    if data_dir is not None and data_dir.name == cifar.FOLDER:  # pointed at the batches folder
        data_dir = data_dir.parent
    places = search_places("cifar10", data_dir)
    help_text = describe(
        f"{source.title} needs {source.file_name}, or the {cifar.FOLDER}/ folder unpacked from it.",
        source.urls,
        places,
    )

    def read(path: Path) -> cifar.CifarData:
        if path.is_dir():
            return cifar.read_cifar_folder(path, split)
        return cifar.read_cifar_archive(path, split, source.md5)

    images, labels, class_names = obtain(
        (cifar.FOLDER, source.file_name),
        places,
        read,
        urls=source.urls,
        save_as=source.file_name,
        download=download,
        progress=progress,
        help_text=help_text,
    )
    return Dataset("cifar10", images, labels, class_names)


def _load_folder(
    split: str,
    data_dir: Path | None,
    image_shape: tuple[int, ...] | None,
    download: bool,
    progress: Progress | None,
) -> Dataset:
    if data_dir is None:
        raise DataError(
            "the folder dataset needs data_dir: a folder holding train/<class>/*.png "
            "and test/<class>/*.png (or .jpg), one sub-folder per class"
        )
    images, labels, class_names = read_image_folder(data_dir, split, image_shape)
    return Dataset("folder", images, labels, class_names)


LOADERS: dict[str, Loader] = {
    "mnist": partial(_load_idx, "mnist"),
    "fashion-mnist": partial(_load_idx, "fashion-mnist"),
    "cifar10": _load_cifar10,
    "folder": _load_folder,
}
