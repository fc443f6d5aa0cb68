"""The user's own images: ``root/<split>/<class>/*.png|jpg`` read with Pillow (optional).

Class names are the sorted sub-folders of ``root/train`` (of the split's folder when there
is no ``train``), so every split numbers the classes the same way.

Images are read as they are, whatever their mode, then converted to uint8:

- 8-bit images read as Pillow reads them: 1 and L as gray, RGB as colour, and other modes
  (P, CMYK, YCbCr, ...) converted to RGB by Pillow;
- 16-bit images (I;16, I;16B, ...) scale by their real depth: round(value * 255 / 65535);
- 32-bit integer images (I) are read by the range their values use: 0..255 as 8-bit,
  0..65535 as 16-bit, larger as 32-bit (value * 255 / 2**31-1); negative values are refused;
- float images (F) whose values lie in 0..1 are scaled by 255, in 0..255 kept; any other
  range, NaN or infinity is refused;
- transparent pixels (alpha channels, PNG transparency, palettes) are composited over a
  plain background that contrasts with what is drawn: white when the visible pixels are dark
  on average (alpha-weighted mean luminance below 128), otherwise black, so a drawing on a
  transparent background keeps its shape; a wholly transparent image reads as black.

Values are rounded half up. The gray or colour image so read is then converted to the
channels asked for (Pillow's RGB -> L uses the ITU-R 601-2 luma) and resized (bilinear).

Before decoding, a folder's images are refused when their uint8 array would not fit in the
memory available; so is a file over Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cnnbuild import limits
from cnnbuild.data.dataset import DataError, DataWarning

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GRAY_BANDS = frozenset({"1", "L", "I", "F"})  # first band of the modes read as one channel
ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
INT32_MAX = 2**31 - 1

ImageShape = tuple[int, int, int]
FolderData = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


def load_image_file(path: str | Path, image_shape: Sequence[int]) -> np.ndarray:
    """Read one image as uint8 (C, H, W), converted to ``image_shape`` = (C, H, W).

    C = 1 gives grayscale, C = 3 RGB; the image is resized to H x W if needed. How modes,
    bit depths and transparency are read: see the module docstring.
    """
    shape = check_image_shape(image_shape)
    path = Path(path)
    check_memory(1, shape, str(path))
    with _open_image(path) as image:
        return _to_array(image, shape, path)


def read_image_folder(
    root: Path, split: str, image_shape: Sequence[int] | None = None
) -> FolderData:
    """Read ``root/split``: images (N, C, H, W) uint8, labels (N,) int64, class names.

    With ``image_shape`` every image is converted to it; without, the first image sets
    the shape (grayscale images give C = 1, others C = 3) and all must match it. A class
    folder without images gives a DataWarning; a split without any, a DataError.
    """
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise DataError(f"split {split!r} must be the name of a sub-folder of {root}")
    files, labels, class_names = _list_images(root, split)
    if image_shape is None:
        with _open_image(files[0]) as first:
            shape = (_channels(first), first.height, first.width)
    else:
        shape = check_image_shape(image_shape)
    check_memory(len(files), shape, str(root / split))
    images = np.empty((len(files), *shape), dtype=np.uint8)
    for i, path in enumerate(files):
        with _open_image(path) as image:
            if image_shape is None:
                _check_same(image, path, shape, files[0])
            images[i] = _to_array(image, shape, path)
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


def check_memory(count: int, shape: ImageShape, where: str) -> None:
    """ResourceError when ``count`` uint8 images of ``shape`` need more than the available
    memory."""
    images = "1 image" if count == 1 else f"{count:,} images"
    limits.check_memory(
        count * shape[0] * shape[1] * shape[2],
        f"{where}: {images} of shape {shape} (channels, height, width) as uint8",
        "use a smaller input shape (the spec's input:) or fewer images",
    )


def _list_images(root: Path, split: str) -> tuple[list[Path], list[int], tuple[str, ...]]:
    split_dir = root / split
    layout = f"{root}/{split}/<class name>/<image files>, one sub-folder per class"
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is not a folder; the images must be laid out as {layout}")
    classes_dir = root / "train" if (root / "train").is_dir() else split_dir
    class_names = tuple(path.name for path in _subfolders(classes_dir))
    if not class_names:
        raise DataError(f"{classes_dir} has no class sub-folders; lay the images out as {layout}")
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    files, labels, empty = [], [], []
    for folder in _subfolders(split_dir):
        if folder.name not in class_names:
            raise DataError(
                f"{folder}: {folder.name!r} is not one of the classes in {classes_dir} "
                f"({', '.join(class_names)}); every split needs the same class folders"
            )
        label = class_names.index(folder.name)
        found, ignored = 0, 0
        for path in sorted(folder.iterdir()):
            if not _visible(path):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                files.append(path)
                labels.append(label)
                found += 1
            else:
                ignored += 1
        if not found:
            entries = "entry" if ignored == 1 else "entries"
            others = f" ({ignored} other {entries} ignored: only {suffixes} are read)"
            empty.append((folder, others if ignored else ""))
    if not files:
        empty_folders = f": its class folders ({', '.join(f.name for f, _ in empty)}) are empty"
        raise DataError(
            f"{split_dir} holds no images ({suffixes}){empty_folders if empty else ''}; "
            f"lay them out as {layout}"
        )
    for folder, others in empty:
        if split == "train":
            effect = "has no training images and will never be predicted correctly"
        else:
            effect = f"has no {split} images, so the {split} accuracy says nothing about it"
        warnings.warn(
            f"{folder} holds no images{others}: class {folder.name!r} {effect}; add its "
            f"images, or remove the folder if the class is not wanted",
            DataWarning,
            stacklevel=3,
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
    """The decoded image, upright (EXIF orientation applied); DataError if unreadable or
    over Pillow's decompression-bomb limit."""
    image_module = pillow()
    from PIL import ImageOps

    bomb = (image_module.DecompressionBombError, image_module.DecompressionBombWarning)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_module.DecompressionBombWarning)
            with image_module.open(path) as image:
                image.load()
                if image.format == "PNG" and image.mode == "I":  # older Pillow, 16-bit gray
                    image = image.convert("I;16")
                return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except bomb as err:
        raise DataError(
            f"{path}: refused as a possible decompression bomb ({err}); shrink the image, "
            f"or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this image; shrink it") from None
    except Exception as err:  # Pillow's decoders raise many types for a bad file
        raise DataError(
            f"{path}: not a readable image ({type(err).__name__}: {err}); "
            f"use PNG, JPEG or another format Pillow reads"
        ) from None


def _channels(image: Any) -> int:
    return 1 if image.getbands()[0] in GRAY_BANDS else 3


def _check_same(image: Any, path: Path, shape: ImageShape, first: Path) -> None:
    found = (_channels(image), image.height, image.width)
    if found != shape:
        raise DataError(
            f"{path}: image is {found} (channels, height, width) but {first} is {shape}; "
            f"give image_shape to convert every image to one shape"
        )


def _to_array(image: Any, shape: ImageShape, path: Path) -> np.ndarray:
    channels, height, width = shape
    try:
        image = _convert(_eight_bit(image, path), "L" if channels == 1 else "RGB", path)
        if image.size != (width, height):
            image = image.resize((width, height), pillow().BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    except MemoryError:
        raise DataError(
            f"{path}: not enough memory to convert this {image.width}x{image.height} image "
            f"to {shape} (channels, height, width)"
        ) from None
    return array[np.newaxis] if channels == 1 else array.transpose(2, 0, 1)


def _eight_bit(image: Any, path: Path) -> Any:
    """``image`` as an 8-bit image without transparency: mode 1, L or RGB."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _from_numbers(image, path)
    gray = image.getbands()[0] in GRAY_BANDS
    if not _has_alpha(image):  # 8-bit: Pillow's conversions are right
        return image if image.mode in ("1", "L", "RGB") else _convert(image, "RGB", path)
    pixels = np.asarray(_convert(image, "LA" if gray else "RGBA", path), dtype=np.float32)
    return _composite(pixels[..., :-1], pixels[..., -1] / 255)


def _has_alpha(image: Any) -> bool:
    palette_alpha = image.mode == "P" and getattr(image.palette, "mode", "").endswith("A")
    return image.mode in ALPHA_MODES or "transparency" in image.info or palette_alpha


def _from_numbers(image: Any, path: Path) -> Any:
    """An I;16*, I or F image as 8-bit L, scaled by its real value range (module docstring)."""
    raw = np.asarray(image)
    if image.mode == "F":
        values = _float_values(raw, path)
    else:
        values = raw.astype(np.float32) * np.float32(255 / _integer_top(image.mode, raw, path))
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)) and not isinstance(transparent, bool):
        return _composite(values[..., np.newaxis], (raw != transparent).astype(np.float32))
    return pillow().fromarray(_round(values))


def _integer_top(mode: str, raw: np.ndarray, path: Path) -> int:
    """The value that reads as white: 65535 for 16-bit modes; for I, by the values' range."""
    if mode != "I":
        return 65535
    low, high = int(raw.min()), int(raw.max())
    if low < 0:
        raise DataError(
            f"{path}: a 32-bit integer image with values from {low:,} to {high:,}; negative "
            f"pixel values have no brightness — save it with values from 0 (8 or 16 bits)"
        )
    return 255 if high <= 255 else 65535 if high <= 65535 else INT32_MAX


def _float_values(raw: np.ndarray, path: Path) -> np.ndarray:
    finite = np.isfinite(raw)
    if not finite.all():
        bad = int(raw.size - np.count_nonzero(finite))
        raise DataError(
            f"{path}: {bad:,} of its {raw.size:,} pixels are not finite numbers (NaN or "
            f"infinity); an image's pixels must be numbers from 0 to 1 or 0 to 255"
        )
    low, high = float(raw.min()), float(raw.max())
    if low < 0 or high > 255:
        raise DataError(
            f"{path}: a floating-point image with values from {low:g} to {high:g}; cnnbuild "
            f"reads float images with values from 0 to 1 or from 0 to 255 — rescale it"
        )
    return raw.astype(np.float32) * np.float32(255 if high <= 1 else 1)


def _composite(values: np.ndarray, alpha: np.ndarray) -> Any:
    """(H, W, C) values in 0..255 with alpha (H, W) in 0..1, over a contrasting background
    (module docstring), as an 8-bit L or RGB image."""
    weight = float(alpha.sum(dtype=np.float64))
    luminance = values[..., 0] if values.shape[-1] == 1 else values @ LUMA
    dark = weight > 0 and float((luminance * alpha).sum(dtype=np.float64)) / weight < 128
    background = np.float32(255 if dark else 0)
    alpha = alpha[..., np.newaxis]
    mixed = _round(values * alpha + background * (1 - alpha))
    return pillow().fromarray(mixed[..., 0] if mixed.shape[-1] == 1 else mixed)


def _round(values: np.ndarray) -> np.ndarray:
    """Values in 0..255 as uint8, rounded half up."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _convert(image: Any, mode: str, path: Path) -> Any:
    """``image.convert(mode)``, through RGB where Pillow has no direct conversion."""
    try:
        return image.convert(mode)
    except ValueError:
        pass
    try:
        return image.convert("RGB").convert(mode)
    except ValueError:
        raise DataError(
            f"{path}: Pillow cannot convert its mode {image.mode!r} to {mode}; "
            f"save it as an 8-bit RGB or grayscale PNG"
        ) from None
