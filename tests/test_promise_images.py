"""Promises 13, 15 and 16 for image files: read as they are, within memory, in clear words.

15: a generated corpus of images in every Pillow mode, bit depth and kind of transparency is
written with Pillow (or, for 16-bit colour PNGs, which Pillow cannot write, by hand) and read
back with ``load_image_file``; each result must equal, within 1, what numpy computes from the
original pixel values by the documented rules (cnnbuild/data/folder.py): scale by the real
bit depth; composite transparent pixels over white when the visible pixels are dark on average
(alpha-weighted ITU-R 601 luminance below 128), else over black. Non-finite and out-of-range
float images are refused with a DataError naming the file. 8-bit L and RGB images read
byte for byte as before (Pillow's convert and bilinear resize).
13: a folder whose uint8 array would not fit in memory is refused before decoding; so is a
file over Pillow's decompression-bomb limit.
16: an empty class folder gives a DataWarning naming it and what it means.
"""

from __future__ import annotations

import struct
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from promises import count, record

from cnnbuild.cli import main
from cnnbuild.data import DataError, DataWarning, load_dataset, load_image_file
from cnnbuild.limits import ResourceError

Image = pytest.importorskip("PIL.Image")

LUMA = np.array([0.299, 0.587, 0.114])
INT32_MAX = 2**31 - 1


# --- the expectation, computed in numpy from the original values ---------------------------


def rounded(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.int64)


def composited(values: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, C) values in 0..255 and alpha (H, W) in 0..1, over the contrasting background."""
    values, alpha = values.astype(np.float64), alpha.astype(np.float64)
    luminance = values[..., 0] if values.shape[-1] == 1 else values @ LUMA
    weight = alpha.sum()
    dark = weight > 0 and (luminance * alpha).sum() / weight < 128
    background = 255.0 if dark else 0.0
    return rounded(values * alpha[..., None] + background * (1 - alpha[..., None]))


def sixteen(values: np.ndarray) -> np.ndarray:
    """16-bit values on the 0..255 scale."""
    return values.astype(np.float64) * 255 / 65535


def int32_top(values: np.ndarray) -> int:
    high = int(values.max())
    return 255 if high <= 255 else 65535 if high <= 65535 else INT32_MAX


# --- writing what Pillow cannot: 16-bit colour PNGs -------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png16(values: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG of (H, W, samples) uint16 values: colour type 2 RGB, 4 LA, 6 RGBA."""
    height, width = values.shape[:2]
    rows = values.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


# --- the corpus --------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str
    path: Path
    expected: np.ndarray  # (H, W, C) int64, C = 1 or 3
    channels: int


def drawing(rng: np.random.Generator, shape: tuple[int, ...], dark: bool) -> np.ndarray:
    """Random uint8 values, all dark (0..110) or all light (145..255): a drawing whose visible
    pixels are clearly on one side of the compositing threshold."""
    low, high = (0, 111) if dark else (145, 256)
    return rng.integers(low, high, shape, dtype=np.uint8)


def alpha_mask(rng: np.random.Generator, shape: tuple[int, int], scale: int = 255) -> np.ndarray:
    """Mostly transparent, some opaque and some partly transparent pixels, at least one seen."""
    choice = rng.integers(0, 3, shape)
    alpha = np.where(choice == 0, 0, np.where(choice == 1, scale, rng.integers(1, scale, shape)))
    alpha.flat[rng.integers(alpha.size)] = scale
    return alpha


Maker = Callable[[np.random.Generator, Path, int, int], tuple[np.ndarray, int, str]]


def make_l(rng, path, h, w):
    values = rng.integers(0, 256, (h, w), dtype=np.uint8)
    Image.fromarray(values).save(path.with_suffix(".png"))
    return values[..., None], 1, ".png"


def make_rgb(rng, path, h, w):
    values = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(values).save(path.with_suffix(".png"))
    return values, 3, ".png"


def make_bilevel(rng, path, h, w):
    values = rng.integers(0, 2, (h, w)).astype(bool)
    Image.fromarray(values).save(path.with_suffix(".png"))
    return values[..., None] * 255, 1, ".png"


def make_palette(rng, path, h, w):
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (h, w), dtype=np.uint8)
    image = Image.frombytes("P", (w, h), index.tobytes())
    image.putpalette(palette.tobytes())
    image.save(path.with_suffix(".png"))
    return palette[index], 3, ".png"


def make_cmyk(rng, path, h, w):
    values = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    Image.frombytes("CMYK", (w, h), values.tobytes()).save(path.with_suffix(".tif"))
    cmy, k = values[..., :3].astype(np.float64), values[..., 3:].astype(np.float64)
    return rounded((255 - cmy) * (255 - k) / 255), 3, ".tif"


def make_ycbcr(rng, path, h, w):
    values = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.frombytes("YCbCr", (w, h), values.tobytes()).save(path.with_suffix(".tif"))
    y, cb, cr = (values[..., i].astype(np.float64) for i in range(3))
    red = y + 1.402 * (cr - 128)  # JFIF's full-range conversion
    green = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    rgb = np.stack([red, green, y + 1.772 * (cb - 128)], axis=-1)
    return rounded(rgb), 3, ".tif"


def make_gray16(suffix: str, byte_order: str) -> Maker:
    def make(rng, path, h, w):
        values = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        mode = "I;16B" if byte_order == ">" else "I;16"
        image = Image.frombytes(mode, (w, h), values.astype(f"{byte_order}u2").tobytes())
        image.save(path.with_suffix(suffix))
        return rounded(sixteen(values[..., None])), 1, suffix

    return make


def make_int32(top: int) -> Maker:
    """An int32 TIFF whose largest value is about ``top`` (an 8-, 16- or 32-bit range)."""

    def make(rng, path, h, w):
        values = rng.integers(0, top + 1, (h, w), dtype=np.int64)
        values.flat[rng.integers(values.size)] = top  # the range is the one intended
        Image.fromarray(values.astype(np.int32)).save(path.with_suffix(".tif"))
        return rounded(values[..., None] * 255 / int32_top(values)), 1, ".tif"

    return make


def make_float(top: float) -> Maker:
    def make(rng, path, h, w):
        values = (rng.random((h, w)) * top).astype(np.float32)
        values.flat[rng.integers(values.size)] = top
        Image.fromarray(values).save(path.with_suffix(".tif"))
        scale = 255 if values.max() <= 1 else 1
        return rounded(values[..., None].astype(np.float64) * scale), 1, ".tif"

    return make


def make_la(rng, path, h, w):
    values, alpha = drawing(rng, (h, w, 1), rng.random() < 0.5), alpha_mask(rng, (h, w))
    Image.fromarray(np.dstack([values, alpha]).astype(np.uint8)).save(path.with_suffix(".png"))
    return composited(values, alpha / 255), 1, ".png"


def make_rgba(rng, path, h, w):
    values, alpha = drawing(rng, (h, w, 3), rng.random() < 0.5), alpha_mask(rng, (h, w))
    Image.fromarray(np.dstack([values, alpha]).astype(np.uint8)).save(path.with_suffix(".png"))
    return composited(values, alpha / 255), 3, ".png"


def make_palette_alpha(rng, path, h, w):
    palette = drawing(rng, (16, 3), rng.random() < 0.5)
    palette_alpha = alpha_mask(rng, (16,)).astype(np.uint8)
    index = rng.integers(0, 16, (h, w), dtype=np.uint8)
    index.flat[rng.integers(index.size)] = int(np.argmax(palette_alpha))  # one pixel seen
    image = Image.frombytes("P", (w, h), index.tobytes())
    image.putpalette(palette.tobytes())
    image.save(path.with_suffix(".png"), transparency=palette_alpha.tobytes())
    return composited(palette[index], palette_alpha[index] / 255), 3, ".png"


def make_keyed(channels: int) -> Maker:
    """8-bit L or RGB with a PNG tRNS key colour: pixels of exactly that colour are see-through."""

    def make(rng, path, h, w):
        dark = rng.random() < 0.5
        values = drawing(rng, (h, w, channels), dark)
        key = drawing(rng, (channels,), not dark)  # never one of the drawing's colours
        hidden = rng.random((h, w)) < 0.5
        values[hidden] = key
        values.flat[: channels * int(hidden.all())] = 0 if dark else 255  # one pixel seen
        transparency = int(key[0]) if channels == 1 else tuple(int(v) for v in key)
        picture = values[..., 0] if channels == 1 else values
        Image.fromarray(picture).save(path.with_suffix(".png"), transparency=transparency)
        alpha = (values != key).any(axis=-1).astype(np.float64)
        return composited(values, alpha), channels, ".png"

    return make


def make_keyed16(rng, path, h, w):
    values = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    key = int(values.flat[rng.integers(values.size)])
    values.flat[rng.integers(values.size)] = key ^ 1  # at least one pixel is seen
    Image.fromarray(values).save(path.with_suffix(".png"), transparency=key)
    alpha = (values != key).astype(np.float64)
    return composited(sixteen(values[..., None]), alpha), 1, ".png"


def make_png16(colour_type: int) -> Maker:
    """16-bit RGB, LA or RGBA PNGs. Pillow reduces these to 8 bits as it decodes (by dropping
    the low byte), so the alpha is kept to multiples of 257, which 8 bits hold exactly; the
    colour values use all 16 bits."""

    def make(rng, path, h, w):
        samples = {2: 3, 4: 1, 6: 3}[colour_type]
        values = rng.integers(0, 65536, (h, w, samples), dtype=np.uint16)
        if colour_type == 2:
            stored, alpha = values, np.ones((h, w))
        else:
            low, high = (0, 111 * 257) if rng.random() < 0.5 else (145 * 257, 65536)
            values = rng.integers(low, high, (h, w, samples), dtype=np.uint16)  # a drawing
            alpha = alpha_mask(rng, (h, w)) * 257
            stored = np.dstack([values, alpha])
            alpha = alpha / 65535
        path.with_suffix(".png").write_bytes(png16(stored, colour_type))
        return composited(sixteen(values), alpha), samples, ".png"

    return make


KINDS: dict[str, Maker] = {
    "1 (bilevel) PNG": make_bilevel,
    "L 8-bit PNG": make_l,
    "RGB 8-bit PNG": make_rgb,
    "P palette PNG": make_palette,
    "CMYK TIFF": make_cmyk,
    "YCbCr TIFF": make_ycbcr,
    "I;16 PNG": make_gray16(".png", "<"),
    "I;16 TIFF": make_gray16(".tif", "<"),
    "I;16B TIFF": make_gray16(".tif", ">"),
    "I int32 TIFF, 8-bit range": make_int32(255),
    "I int32 TIFF, 16-bit range": make_int32(65535),
    "I int32 TIFF, 32-bit range": make_int32(INT32_MAX),
    "F float32 TIFF, 0..1": make_float(1.0),
    "F float32 TIFF, 0..255": make_float(255.0),
    "LA PNG": make_la,
    "RGBA PNG": make_rgba,
    "P PNG with alpha per palette entry": make_palette_alpha,
    "L PNG with a transparent key": make_keyed(1),
    "RGB PNG with a transparent key": make_keyed(3),
    "I;16 PNG with a transparent key": make_keyed16,
    "RGB 16-bit PNG": make_png16(2),
    "LA 16-bit PNG": make_png16(4),
    "RGBA 16-bit PNG": make_png16(6),
}


def corpus(folder: Path, per_kind: int, seed: int = 15) -> list[Case]:
    cases = []
    for k, (kind, make) in enumerate(KINDS.items()):
        rng = np.random.default_rng([seed, k])
        for i in range(per_kind):
            height, width = (int(size) for size in rng.integers(1, 13, 2))
            stem = folder / f"{k:02d}_{i:03d}"
            expected, channels, suffix = make(rng, stem, height, width)
            cases.append(Case(kind, stem.with_suffix(suffix), np.asarray(expected), channels))
    return cases


def test_every_mode_depth_and_transparency_reads_as_numpy_computes(tmp_path: Path) -> None:
    per_kind = count(10, 100)
    start = time.perf_counter()
    cases = corpus(tmp_path, per_kind)
    worst, failures, values, off, inexact = 0, [], 0, 0, set()
    for case in cases:
        height, width = case.expected.shape[:2]
        got = load_image_file(case.path, (case.channels, height, width)).transpose(1, 2, 0)
        differences = np.abs(got.astype(np.int64) - case.expected)
        difference = int(differences.max())
        values, off = values + differences.size, off + int(np.count_nonzero(differences))
        if difference:
            inexact.add(case.kind)
        worst = max(worst, difference)
        if difference > 1:
            failures.append(f"{case.kind}: {case.path.name} differs by {difference}")
    seconds = time.perf_counter() - start
    assert not failures, "\n".join(failures[:10])
    record(
        15,
        "modes, depths and transparency read back",
        f"{len(cases):,} images of {len(KINDS)} kinds ({per_kind} each) equal numpy's "
        f"expectation within {worst} ({off:,} of {values:,} values off by 1, in "
        f"{', '.join(sorted(inexact)) or 'none'}; {seconds:.1f} s)",
    )


def test_other_channel_counts_and_sizes_follow_from_the_native_reading(tmp_path: Path) -> None:
    """Gray <-> RGB and resizing are Pillow's, applied to the image as read natively."""
    cases = corpus(tmp_path, count(2, 20), seed=16)
    for case in cases:
        height, width = case.expected.shape[:2]
        native = load_image_file(case.path, (case.channels, height, width))
        picture = native[0] if case.channels == 1 else native.transpose(1, 2, 0)
        other = 3 if case.channels == 1 else 1
        converted = load_image_file(case.path, (other, height, width))
        expected = np.asarray(Image.fromarray(picture).convert("L" if other == 1 else "RGB"))
        np.testing.assert_array_equal(
            converted, expected.reshape(height, width, -1).transpose(2, 0, 1)
        )
        resized = load_image_file(case.path, (case.channels, 7, 5))
        expected = np.asarray(Image.fromarray(picture).resize((5, 7), Image.BILINEAR))
        np.testing.assert_array_equal(resized, expected.reshape(7, 5, -1).transpose(2, 0, 1))
    record(15, "other channel counts and sizes", f"{len(cases)} images: Pillow's convert, resize")


def old_reader(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The reader before issue 10, for ordinary 8-bit images."""
    from PIL import ImageOps

    channels, height, width = shape
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[np.newaxis] if channels == 1 else array.transpose(2, 0, 1)


def test_ordinary_8bit_images_read_byte_for_byte_as_before(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    checked = 0
    for i in range(count(12, 120)):
        height, width = (int(size) for size in rng.integers(1, 30, 2))
        gray = i % 2 == 0
        values = rng.integers(0, 256, (height, width) if gray else (height, width, 3), np.uint8)
        path = tmp_path / f"{i}{'.jpg' if i % 3 == 0 else '.png'}"
        Image.fromarray(values).save(path)
        for shape in [(1, height, width), (3, height, width), (1, 28, 28), (3, 9, 13)]:
            np.testing.assert_array_equal(load_image_file(path, shape), old_reader(path, shape))
            checked += 1
    record(15, "8-bit L and RGB as before", f"{checked} readings byte-identical (PNG and JPEG)")


def test_a_black_digit_on_a_transparent_background_stays_visible(tmp_path: Path) -> None:
    """The issue's case: a black 7 on a transparent background read as all zeros."""
    alpha = np.zeros((28, 28), np.uint8)
    alpha[5:8, 6:22] = 255  # the bar of the 7
    for row in range(8, 24):  # its stem, with a soft (partly transparent) edge
        column = 21 - (row - 8) // 2
        alpha[row, column - 1 : column + 2] = 255
        alpha[row, column + 2] = 96
    for ink, expected_background in ((0, 255), (255, 0)):
        rgba = np.dstack([np.full((28, 28, 3), ink, np.uint8), alpha])
        for mode, array in (("RGBA", rgba), ("LA", rgba[..., [0, 3]])):
            path = tmp_path / f"seven_{ink}_{mode}.png"
            Image.fromarray(array).save(path)
            for channels in (1, 3):
                got = load_image_file(path, (channels, 28, 28))
                assert np.unique(got).size > 1, f"{path.name} read as one colour"
                np.testing.assert_array_equal(got[:, alpha == 255], ink)
                np.testing.assert_array_equal(got[:, alpha == 0], expected_background)
    transparent = tmp_path / "transparent.png"
    Image.fromarray(np.zeros((5, 5, 4), np.uint8)).save(transparent)
    np.testing.assert_array_equal(load_image_file(transparent, (3, 5, 5)), 0)  # documented
    record(15, "a black 7 on a transparent background", "black on white (a white 7: on black)")


def float_tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.float32)).save(path)
    return path


def test_non_finite_and_out_of_range_images_are_refused_naming_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(99)
    refused = {"not finite": 0, "out of range": 0, "negative integers": 0}
    trials = count(12, 120)
    for i in range(trials):
        height, width = (int(size) for size in rng.integers(1, 10, 2))
        values = rng.random((height, width)) * rng.choice([1.0, 255.0])
        kind = list(refused)[i % 3]
        if kind == "not finite":
            values.flat[rng.integers(values.size)] = rng.choice([np.nan, np.inf, -np.inf])
            path, fragment = float_tiff(tmp_path / f"{i}.tif", values), "not finite"
        elif kind == "out of range":
            values.flat[rng.integers(values.size)] = rng.choice([-0.5, -300.0, 256.0, 1e9])
            path, fragment = float_tiff(tmp_path / f"{i}.tif", values), "values from"
        else:
            ints = rng.integers(-(2**31), 70000, (height, width)).astype(np.int32)
            ints.flat[rng.integers(ints.size)] = -1
            path, fragment = tmp_path / f"{i}.tif", "negative"
            Image.fromarray(ints).save(path)
        with pytest.raises(DataError) as caught:
            load_image_file(path, (1, height, width))
        assert str(path) in str(caught.value) and fragment in str(caught.value)
        refused[kind] += 1
    # and in a folder, the file is named too
    root = tmp_path / "folder"
    (root / "train" / "a").mkdir(parents=True)
    bad = float_tiff(root / "train" / "a" / "nan.tif", np.array([[0.5, np.nan]]))
    with pytest.raises(DataError, match="not finite") as caught:
        load_dataset("folder", data_dir=root, image_shape=(1, 1, 2))
    assert str(bad) in str(caught.value)
    record(
        15,
        "non-finite, out-of-range, negative pixels",
        f"{trials} of {trials} refused naming the file ("
        + ", ".join(f"{n} {kind}" for kind, n in refused.items())
        + ")",
    )


# --- 13: resource limits -------------------------------------------------------------------------


def tiny_folder(root: Path, images: int = 2) -> Path:
    for split in ("train", "test"):
        for i in range(images):
            folder = root / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), 9 * i, np.uint8)).save(folder / f"{i}.png")
    return root


ABSURD = [3, 1_000_000, 1_000_000]  # 3 TB an image


def test_an_absurd_input_shape_is_refused_before_decoding(tmp_path: Path) -> None:
    root = tiny_folder(tmp_path / "images")
    start = time.perf_counter()
    refused = r"would need .*, but .* of memory is available"
    with pytest.raises(ResourceError, match=refused) as caught:
        load_dataset("folder", data_dir=root, image_shape=tuple(ABSURD))
    assert str(root / "train") in str(caught.value) and "TiB" in str(caught.value)
    with pytest.raises(ResourceError, match="would need"):
        load_image_file(root / "train" / "class0" / "0.png", ABSURD)
    seconds = time.perf_counter() - start
    assert seconds < 10
    record(
        13,
        "absurd input: for an image folder",
        f"{ABSURD} refused in {seconds:.2f} s (load_dataset, load_image_file), no MemoryError",
    )


def test_cnnbuild_train_refuses_a_folder_that_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the command line, with the memory made small (an absurd input: is refused
    earlier, by the spec's own limits)."""
    root = tiny_folder(tmp_path / "images")
    monkeypatch.setattr("cnnbuild.limits.available_memory", lambda: 2**20)
    spec = tmp_path / "wide.yaml"
    spec.write_text(
        "name: wide\ninput: [3, 1000, 1000]\nclasses: 2\nlayers:\n"
        "  - {type: conv, filters: 2, kernel: 1}\n  - {type: global_avgpool}\n"
        "  - {type: dense, units: 2}\n  - {type: softmax}\n"
        "training: {dataset: folder, epochs: 1, batch_size: 1}\n"
    )
    args = ["train", str(spec), "--data-dir", str(root), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "would need" in result.output and "but 1.0 MiB of memory is available" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, MemoryError)
    record(13, "cnnbuild train, folder over memory", "exit 2 with the sizes, no traceback")


def test_the_memory_check_refuses_exactly_what_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_folder(tmp_path / "images", images=4)  # 4 train images
    need = 4 * 3 * 8 * 8
    monkeypatch.setattr("cnnbuild.limits.available_memory", lambda: need)
    assert load_dataset("folder", data_dir=root, image_shape=(3, 8, 8)).images.nbytes == need
    monkeypatch.setattr("cnnbuild.limits.available_memory", lambda: need - 1)
    with pytest.raises(ResourceError, match=r"4 images of shape \(3, 8, 8\).* need 768 B\b"):
        load_dataset("folder", data_dir=root, image_shape=(3, 8, 8))
    record(13, "folder memory check", "refuses at need > available, to the byte")


@pytest.mark.parametrize("limit_factor", [0.3, 0.9], ids=["over 2x the limit", "over the limit"])
def test_a_decompression_bomb_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit_factor: float
) -> None:
    """Pillow raises DecompressionBombError over twice MAX_IMAGE_PIXELS and warns over it;
    both are refused, and no warning escapes."""
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(40 * 50 * limit_factor))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="decompression bomb") as caught:
            load_image_file(path, (1, 28, 28))
    assert str(path) in str(caught.value) and "MAX_IMAGE_PIXELS" in str(caught.value)
    record(13, "decompression bombs (Pillow's limit)", "error and warning levels both refused")


# --- 16: words that point at the real cause ---------------------------------------------------


def test_an_empty_class_folder_warns_naming_it(tmp_path: Path) -> None:
    root = tiny_folder(tmp_path / "images")
    (root / "train" / "class2").mkdir()  # nothing at all
    (root / "train" / "class3").mkdir()
    (root / "train" / "class3" / "photo.heic").write_bytes(b"not read")  # nothing readable
    (root / "test" / "class2").mkdir()
    with pytest.warns(DataWarning) as caught:
        train = load_dataset("folder", data_dir=root)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 2 and train.class_names == ("class0", "class1", "class2", "class3")
    assert str(root / "train" / "class2") in messages[0]
    assert "'class2' has no training images and will never be predicted correctly" in messages[0]
    assert "1 other entry ignored" in messages[1] and ".png" in messages[1]
    with pytest.warns(DataWarning, match="the test accuracy says nothing about it"):
        load_dataset("folder", "test", data_dir=root)
    for folder in (root / "train").iterdir():
        for file in folder.iterdir():
            file.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all empty: an error, not four warnings
        with pytest.raises(DataError, match=r"holds no images.*are empty"):
            load_dataset("folder", data_dir=root)
    record(16, "an empty class folder", "a DataWarning naming it; all empty: a DataError")
