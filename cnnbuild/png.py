"""PNG files written with zlib and struct alone (no Pillow): dataset images for reports,
TensorBoard and ``predict --show``."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type: greyscale, RGB


def encode_png(image: np.ndarray) -> bytes:
    """The PNG bytes of a uint8 image: (C, H, W) with 1 or 3 channels, or (H, W) grey."""
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[None]
    channels, height, width = pixels.shape
    if pixels.dtype != np.uint8 or channels not in _COLOR_TYPES or not height or not width:
        raise ValueError(
            f"encode_png takes uint8 (1 or 3, H, W) images, got {pixels.dtype} {pixels.shape}"
        )
    rows = np.ascontiguousarray(pixels.transpose(1, 2, 0)).reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows])  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        [
            SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)),
            _chunk(b"IEND", b""),
        ]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def enlarge(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (C, H, W) scaled up, nearest neighbour, by the largest whole factor that
    keeps its longer side within ``size`` pixels (never scaled down)."""
    scale = max(1, size // max(image.shape[-2:]))
    return image.repeat(scale, axis=-2).repeat(scale, axis=-1)


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,...`` URI, for inline HTML images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
