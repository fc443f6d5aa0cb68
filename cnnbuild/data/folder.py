"""The user's own images: ``root/<split>/<class>/*.png|jpg`` read with Pillow (optional).

Class names are the sorted sub-folders of ``root/train`` (of the split's folder when there
is no ``train``), so every split numbers the classes the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cnnbuild.data.dataset import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})

ImageShape = tuple[int, int, int]
FolderData = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


def load_image_file(path: str | Path, image_shape: Sequence[int]) -> np.ndarray:
    """Read one image as uint8 (C, H, W), converted to ``image_shape`` = (C, H, W).

    C = 1 gives grayscale, C = 3 RGB; the image is resized to H x W if needed.
    """
    shape = check_image_shape(image_shape)
    with _open_image(Path(path)) as image:
        return _to_array(image, shape)


def read_image_folder(
    root: Path, split: str, image_shape: Sequence[int] | None = None
) -> FolderData:
    """Read ``root/split``: images (N, C, H, W) uint8, labels (N,) int64, class names.

    With ``image_shape`` every image is converted to it; without, the first image sets
    the shape (grayscale images give C = 1, others C = 3) and all must match it.
    """
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise DataError(f"split {split!r} must be the name of a sub-folder of {root}")
    files, labels, class_names = _list_images(root, split)
    if image_shape is None:
        with _open_image(files[0]) as first:
            shape = (_channels(first), first.height, first.width)
    else:
        shape = check_image_shape(image_shape)
    images = np.empty((len(files), *shape), dtype=np.uint8)
    for i, path in enumerate(files):
        with _open_image(path) as image:
            if image_shape is None:
                _check_same(image, path, shape, files[0])
            images[i] = _to_array(image, shape)
    return images, np.array(labels, dtype=np.int64), class_names


def check_image_shape(image_shape: Sequence[int]) -> ImageShape:
    """``image_shape`` as a (C, H, W) tuple with C 1 or 3 and positive sizes."""
    try:
        shape = tuple(image_shape)
    except TypeError:  # not a sequence at all
        shape = ()
    if not (
        len(shape) == 3
        and all(isinstance(size, (int, np.integer)) and size > 0 for size in shape)
        and shape[0] in (1, 3)
    ):
        raise DataError(
            f"image_shape must be (channels, height, width) with 1 or 3 channels, "
            f"received {image_shape!r}"
        )
    channels, height, width = (int(size) for size in shape)
    return channels, height, width


def _list_images(root: Path, split: str) -> tuple[list[Path], list[int], tuple[str, ...]]:
    split_dir = root / split
    layout = f"{root}/{split}/<class name>/<image files>, one sub-folder per class"
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is not a folder; the images must be laid out as {layout}")
    classes_dir = root / "train" if (root / "train").is_dir() else split_dir
    class_names = tuple(path.name for path in _subfolders(classes_dir))
    if not class_names:
        raise DataError(f"{classes_dir} has no class sub-folders; lay the images out as {layout}")
    files, labels = [], []
    for folder in _subfolders(split_dir):
        if folder.name not in class_names:
            raise DataError(
                f"{folder}: {folder.name!r} is not one of the classes in {classes_dir} "
                f"({', '.join(class_names)}); every split needs the same class folders"
            )
        label = class_names.index(folder.name)
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and _visible(path) and path.is_file():
                files.append(path)
                labels.append(label)
    if not files:
        raise DataError(
            f"{split_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"lay them out as {layout}"
        )
    return files, labels, class_names


def _subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir() and _visible(path))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def pillow() -> ModuleType:
    """The ``PIL.Image`` module; a DataError saying how to install Pillow if it is missing."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "reading image files needs Pillow; install it with: pip install 'cnnbuild[images]'"
        ) from None
    return Image


def _open_image(path: Path) -> Any:
    """The decoded image, upright (EXIF orientation applied); DataError if unreadable."""
    image_module = pillow()
    from PIL import ImageOps

    try:
        with image_module.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as err:  # Pillow's decoders raise many types for a bad file
        raise DataError(
            f"{path}: not a readable image ({type(err).__name__}: {err}); "
            f"use PNG, JPEG or another format Pillow reads"
        ) from None


def _channels(image: Any) -> int:
    return 1 if image.mode in GRAY_MODES else 3


def _check_same(image: Any, path: Path, shape: ImageShape, first: Path) -> None:
    found = (_channels(image), image.height, image.width)
    if found != shape:
        raise DataError(
            f"{path}: image is {found} (channels, height, width) but {first} is {shape}; "
            f"give image_shape to convert every image to one shape"
        )


def _to_array(image: Any, shape: ImageShape) -> np.ndarray:
    channels, height, width = shape
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), pillow().BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[np.newaxis] if channels == 1 else array.transpose(2, 0, 1)
