"""Batch order, augmentation and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbuild.data import Dataset
from cnnbuild.data.batches import (
    channel_stats,
    compute_channel_stats,
    iterate_batches,
    random_crop,
    random_flip,
    to_float,
)
from cnnbuild.data.catalog import DATASETS
from cnnbuild.errors import ConfigError


def uint8_images(n: int = 6, channels: int = 3, size: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (n, channels, size, size), dtype=np.uint8)


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (9, 3), (1, 5), (0, 4), (7, 1)])
def test_every_index_once_per_epoch(n: int, batch_size: int) -> None:
    batches = list(iterate_batches(n, batch_size, np.random.default_rng(0)))
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    assert sorted(np.concatenate([*batches, np.array([], dtype=np.int64)]).tolist()) == list(
        range(n)
    )
    assert len(batches) == -(-n // batch_size)


def test_shuffling_is_deterministic_given_the_seed() -> None:
    def epoch(seed: int) -> list[list[int]]:
        return [b.tolist() for b in iterate_batches(20, 6, np.random.default_rng(seed))]

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    assert epoch(1) != [list(range(i, min(i + 6, 20))) for i in range(0, 20, 6)]


def test_in_order_and_drop_last() -> None:
    batches = [b.tolist() for b in iterate_batches(7, 3, shuffle=False)]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    kept = list(iterate_batches(7, 3, np.random.default_rng(0), drop_last=True))
    assert [len(b) for b in kept] == [3, 3]
    assert len(set(np.concatenate(kept).tolist())) == 6


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(batch_size: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        iterate_batches(10, batch_size)


def test_random_crop_shape_dtype_and_content() -> None:
    images = uint8_images()
    before = images.copy()
    cropped = random_crop(images, 2, np.random.default_rng(0))
    assert cropped.shape == images.shape and cropped.dtype == np.uint8
    np.testing.assert_array_equal(images, before)  # the input is untouched
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(len(images)):  # each output is some 5 x 5 window of its padded image
        windows = [padded[i, :, y : y + 5, x : x + 5] for y in range(5) for x in range(5)]
        assert any(np.array_equal(cropped[i], window) for window in windows)


def test_random_crop_is_deterministic_and_varies_per_image() -> None:
    images = np.ones((50, 1, 4, 4), dtype=np.uint8)
    first = random_crop(images, 1, np.random.default_rng(3))
    np.testing.assert_array_equal(first, random_crop(images, 1, np.random.default_rng(3)))
    assert len({first[i].tobytes() for i in range(50)}) > 1  # offsets differ across images
    np.testing.assert_array_equal(random_crop(images, 0, np.random.default_rng(0)), images)
    with pytest.raises(ConfigError, match="padding"):
        random_crop(images, -1, np.random.default_rng(0))


def test_random_flip() -> None:
    images = uint8_images(n=200)
    flipped = random_flip(images, np.random.default_rng(0))
    assert flipped.shape == images.shape and flipped.dtype == np.uint8
    mirrored = [np.array_equal(f, i[..., ::-1]) for f, i in zip(flipped, images, strict=True)]
    kept = [np.array_equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 60 < sum(mirrored) < 140
    np.testing.assert_array_equal(flipped, random_flip(images, np.random.default_rng(0)))


def test_to_float() -> None:
    images = uint8_images(n=2, channels=3)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    out = to_float(images, mean, std)
    assert out.dtype == np.float32 and out.shape == images.shape
    expected = (images / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert to_float(images, (0.5,), (0.5,)).dtype == np.float32
    with pytest.raises(ValueError, match="mean and std"):
        to_float(images, (0.5, 0.5), (0.5, 0.5))


def test_channel_stats() -> None:
    images = uint8_images(n=9, channels=3)
    mean, std = compute_channel_stats(images, chunk=4)
    np.testing.assert_allclose(mean, images.mean(axis=(0, 2, 3)) / 255)
    np.testing.assert_allclose(std, images.std(axis=(0, 2, 3)) / 255)
    constant = np.full((2, 1, 3, 3), 9, dtype=np.uint8)
    assert compute_channel_stats(constant)[1] == (1 / 255,)
    known = Dataset("mnist", images[:, :1], np.zeros(9, np.int64), tuple("0123456789"))
    assert channel_stats(known) == DATASETS["mnist"].channel_stats
    mine = Dataset("folder", images, np.zeros(9, np.int64), ("a",))
    assert channel_stats(mine) == compute_channel_stats(images)
