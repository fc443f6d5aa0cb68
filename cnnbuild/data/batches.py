"""Mini-batches for training: index order, normalisation to float32, augmentation.

Datasets stay uint8 in memory; each batch is augmented as uint8 and converted with
``to_float``. Randomness comes only from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnbuild.data.catalog import DATASETS, Stats
from cnnbuild.data.dataset import Dataset
from cnnbuild.errors import ConfigError


def iterate_batches(
    n: int,
    batch_size: int,
    rng: np.random.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[np.ndarray]:
    """Index arrays that cover ``range(n)`` once, ``batch_size`` at a time.

    Shuffled with ``rng`` (a fresh unseeded generator if None) when this is called; with
    ``drop_last`` the final short batch is left out. Arguments are checked at once.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ConfigError(f"batch_size must be an integer, received {batch_size!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, received {batch_size}")
    if shuffle:
        order = (rng if rng is not None else np.random.default_rng()).permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return (order[start : start + batch_size] for start in range(0, stop, batch_size))


def to_float(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(images / 255 - mean) / std`` per channel.

    images: (N, C, H, W) uint8; mean, std: C values (or one) on the 0..1 scale.
    Returns (N, C, H, W) float32.
    """
    channels = images.shape[1]
    mean_c = np.asarray(mean, dtype=np.float64).reshape(-1)
    std_c = np.asarray(std, dtype=np.float64).reshape(-1)
    if mean_c.size not in (1, channels) or std_c.size not in (1, channels):
        raise ValueError(
            f"mean and std need 1 or {channels} values for images {images.shape}, "
            f"received {len(mean_c)} and {len(std_c)}"
        )
    scale = (1.0 / (255.0 * std_c)).astype(np.float32).reshape(1, -1, 1, 1)
    shift = (mean_c / std_c).astype(np.float32).reshape(1, -1, 1, 1)
    out = images.astype(np.float32)
    out *= scale
    out -= shift
    return out


def crop_problem(padding: int, height: int, width: int) -> str | None:
    """Why ``random_crop`` by ``padding`` makes no sense for ``height`` x ``width`` images
    (some crops would hold no image at all), or None when it does."""
    side = min(height, width)
    if padding < side:
        return None
    return (
        f"'crop' {padding:,} shifts the {height}×{width} images by up to that many pixels, so "
        f"some crops would hold no image — use at most {side - 1} (1 to 4 is usual)"
    )


def random_crop(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Pad each image with ``padding`` zeros on every side and crop back at a random offset.

    images: (N, C, H, W) uint8. Returns a new (N, C, H, W) array, one offset per image.
    """
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ConfigError(f"padding must be a non-negative integer, received {padding!r}")
    if padding == 0:
        return images.copy()
    n, _, height, width = images.shape
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    padded = np.pad(images, pad)
    # windows[i, c, dy, dx] is the H x W crop of image i, channel c, starting at (dy, dx)
    windows = sliding_window_view(padded, (height, width), axis=(2, 3))
    dy = rng.integers(0, 2 * padding + 1, size=n)
    dx = rng.integers(0, 2 * padding + 1, size=n)
    return windows[np.arange(n), :, dy, dx]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2.

    images: (N, C, H, W). Returns a new array of the same shape and dtype.
    """
    flip = rng.random(len(images)) < 0.5
    return np.where(flip[:, None, None, None], images[..., ::-1], images)


def compute_channel_stats(images: np.ndarray, chunk: int = 4096) -> Stats:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the 0..1 scale.

    Works through ``chunk`` images at a time, so memory stays small. The std is at least
    1/255, so a constant channel does not divide by zero in ``to_float``.
    """
    if len(images) == 0:
        raise ValueError("cannot compute channel statistics of an empty set of images")
    n, channels, height, width = images.shape
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, n, chunk):
        block = images[start : start + chunk].astype(np.float64)
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
    count = n * height * width
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.maximum(std, 1.0)
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def channel_stats(dataset: Dataset) -> Stats:
    """(mean, std) for ``dataset``: the values its declaration gives (from the training
    images), else computed from its images, so pass the training split."""
    info = DATASETS.get(dataset.name)
    known = None if info is None else info.channel_stats
    return known if known is not None else compute_channel_stats(dataset.images)
