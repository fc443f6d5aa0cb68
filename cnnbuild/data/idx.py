"""Reading IDX files (the MNIST format), raw or gzip-compressed, checking every byte.

An IDX file is a 4-byte magic number ``00 00 08 nd`` (unsigned bytes, ``nd`` dimensions),
``nd`` big-endian uint32 sizes, then the payload in C order. The checksum is taken over
the uncompressed bytes, so any gzip of the same file is accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnbuild.data.dataset import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
CHUNK = 1 << 20
# deflate cannot compress better than about 1032:1, which bounds what a .gz can hold
MAX_GZIP_RATIO = 1100
FIX = "replace it with an intact copy"


def read_images(path: Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX image file: (N, 1, H, W) uint8."""
    images = read_idx(path, 3, sha256)
    return images.reshape(images.shape[0], 1, *images.shape[1:])


def read_labels(path: Path, num_classes: int, sha256: str | None = None) -> np.ndarray:
    """Read an IDX label file: (N,) int64, each in [0, num_classes)."""
    labels = read_idx(path, 1, sha256)
    if labels.size and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path}: label {labels[bad]} at position {bad} is out of range "
            f"(there are {num_classes} classes, 0 to {num_classes - 1}); {FIX}"
        )
    return labels.astype(np.int64)


def read_idx(path: Path, ndim: int, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions, raw or gzip.

    Raises DataError naming the file if the header, the payload size, the gzip stream
    or (when given) the SHA-256 of the uncompressed content is wrong.
    """
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            size = path.stat().st_size
            limit = size * MAX_GZIP_RATIO if gzipped else size - 4 - 4 * ndim
            stream = gzip.GzipFile(fileobj=raw) if gzipped else nullcontext(raw)
            with stream as f:
                return _parse(f, path, ndim, limit, sha256)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: the gzip data is damaged or cut off ({err}); {FIX}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err.strerror or err}") from None


def _parse(f: BinaryIO, path: Path, ndim: int, limit: int, sha256: str | None) -> np.ndarray:
    """The payload as an array; ``limit`` bounds the payload size the file can hold."""
    digest = hashlib.sha256()
    header = _read_header(f, path, ndim)
    digest.update(header)
    shape = tuple(int(size) for size in np.frombuffer(header[4:], dtype=">u4"))
    expected = math.prod(shape)
    if expected > limit:
        raise DataError(
            f"{path}: the payload is shorter than the header says (shape {shape} needs "
            f"{expected} bytes, the file has room for at most {limit}); the file is cut off "
            f"or damaged, {FIX}"
        )
    data = np.empty(shape, dtype=np.uint8)
    view = memoryview(data).cast("B")
    filled = 0
    while filled < expected:
        got = f.readinto(view[filled : filled + CHUNK])
        if not got:
            raise DataError(
                f"{path}: the payload is shorter than the header says ({filled} of {expected} "
                f"bytes for shape {shape}); the file is cut off, {FIX}"
            )
        filled += got
    digest.update(view)
    extra = _count_rest(f)
    if extra:
        raise DataError(
            f"{path}: {extra} bytes follow the {expected}-byte payload of shape {shape}; "
            f"the header does not match the data, {FIX}"
        )
    if sha256 is not None and digest.hexdigest() != sha256:
        raise DataError(
            f"{path}: the contents differ from the published file (SHA-256 of the "
            f"uncompressed data {digest.hexdigest()}, expected {sha256}); {FIX}"
        )
    return data


def _read_header(f: BinaryIO, path: Path, ndim: int) -> bytes:
    wanted = 0x800 | ndim
    magic = f.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: the file is empty or cut off inside the IDX header; {FIX}")
    found = int.from_bytes(magic, "big")
    if found != wanted:
        kind = "images" if ndim == 3 else "labels"
        raise DataError(
            f"{path}: not an IDX {kind} file (magic number 0x{found:08x}, expected "
            f"0x{wanted:08x}); check that it is the right file, or {FIX}"
        )
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{path}: the file is cut off inside the IDX header; {FIX}")
    return magic + sizes


def _count_rest(f: BinaryIO) -> int:
    """Read to the end (which also makes gzip check its CRC) and count the bytes."""
    count = 0
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return count
        count += len(chunk)
