"""The IDX reader: good files raw and gzip, and every way a file can be damaged."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from datafiles import idx_bytes, sha256, write

from cnnbuild.data import DataError
from cnnbuild.data.idx import read_idx, read_images, read_labels

IMAGES = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
LABELS = np.array([0, 9, 4], dtype=np.uint8)


def test_images_and_labels_read_with_their_shapes_and_dtypes(tmp_path: Path) -> None:
    images = read_images(write(tmp_path / "images", idx_bytes(IMAGES)))
    labels = read_labels(write(tmp_path / "labels", idx_bytes(LABELS)), num_classes=10)
    assert images.shape == (3, 1, 5, 4) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0], IMAGES)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, LABELS)
    assert images.flags.writeable


def test_gzip_and_raw_give_identical_arrays_and_checksums(tmp_path: Path) -> None:
    data = idx_bytes(IMAGES)
    raw = read_idx(write(tmp_path / "raw", data), 3, sha256=sha256(data))
    packed = read_idx(write(tmp_path / "packed.gz", data, gz=True), 3, sha256=sha256(data))
    np.testing.assert_array_equal(raw, packed)
    assert raw.dtype == packed.dtype == np.uint8


def test_a_differently_compressed_gzip_of_the_same_bytes_is_accepted(tmp_path: Path) -> None:
    data = idx_bytes(IMAGES)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(data, compresslevel=1, mtime=12345))
    np.testing.assert_array_equal(read_idx(path, 3, sha256=sha256(data)), IMAGES)


def test_wrong_checksum_names_the_file_and_both_digests(tmp_path: Path) -> None:
    path = write(tmp_path / "images.gz", idx_bytes(IMAGES), gz=True)
    with pytest.raises(DataError, match="SHA-256") as caught:
        read_idx(path, 3, sha256="0" * 64)
    assert str(path) in str(caught.value) and "0" * 64 in str(caught.value)


def test_labels_file_read_as_images_is_a_bad_magic_number(tmp_path: Path) -> None:
    path = write(tmp_path / "labels", idx_bytes(LABELS))
    with pytest.raises(DataError, match=r"not an IDX images file \(magic number 0x00000801"):
        read_images(path)


def test_garbage_is_a_bad_magic_number(tmp_path: Path) -> None:
    path = write(tmp_path / "page.gz", b"<html>Not Found</html>", gz=True)
    with pytest.raises(DataError, match="magic number") as caught:
        read_images(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x08", idx_bytes(IMAGES)[:10]])
def test_cut_off_header(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(DataError, match=r"cut off|empty"):
        read_images(write(tmp_path / "images", data))


@pytest.mark.parametrize("gz", [False, True])
def test_payload_shorter_than_the_header_says(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / "images", idx_bytes(IMAGES)[:-7], gz=gz)
    with pytest.raises(DataError, match="shorter than the header says"):
        read_images(path)


@pytest.mark.parametrize("gz", [False, True])
def test_payload_longer_than_the_header_says(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / "images", idx_bytes(IMAGES) + b"\x00" * 20, gz=gz)
    with pytest.raises(DataError, match="20 bytes follow"):
        read_images(path)


def test_dimensions_that_do_not_match_the_payload(tmp_path: Path) -> None:
    data = bytearray(idx_bytes(IMAGES))
    data[4:8] = (4).to_bytes(4, "big")  # claims 4 images, holds 3
    with pytest.raises(DataError, match="shorter than the header says"):
        read_images(write(tmp_path / "images", bytes(data)))


def test_a_header_claiming_more_than_the_file_can_hold(tmp_path: Path) -> None:
    data = bytearray(idx_bytes(IMAGES))
    data[4:16] = b"\xff" * 12
    for gz in (False, True):
        with pytest.raises(DataError, match="the file has room for at most"):
            read_images(write(tmp_path / f"images{gz}", bytes(data), gz=gz))


def test_cut_off_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 8, 8))))
    path = tmp_path / "images.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="gzip data is damaged or cut off") as caught:
        read_images(path)
    assert str(path) in str(caught.value)


def test_gzip_with_a_bad_crc(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(idx_bytes(IMAGES)))
    packed[-8] ^= 0xFF  # the CRC-32 of the uncompressed data
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError, match="gzip"):
        read_images(path)


def test_label_values_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.gz", idx_bytes(np.array([1, 2, 10, 3])), gz=True)
    with pytest.raises(DataError, match="label 10 at position 2 is out of range"):
        read_labels(path, num_classes=10)


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_images(tmp_path)
