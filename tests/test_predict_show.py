"""`predict --index N --show` from the plain install: the prediction first, then the image as
a PNG written without Pillow, enlarged so that a person can see it."""

import sys
import zlib

import numpy as np
import pytest
from test_report import decoded_png, run, small_mnist, train_tiny

from cnnbuild.data import load_dataset
from cnnbuild.png import encode_png, enlarge


@pytest.fixture
def without_pillow(monkeypatch):
    for name in ("PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, name, None)  # import PIL now fails, as in a plain install
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def pixels(png: bytes) -> np.ndarray:
    """The grey pixels (H, W) of a PNG written by encode_png (filter 0 on every row)."""
    width, height, channels = decoded_png(png)
    start = png.index(b"IDAT") + 4
    rows = np.frombuffer(zlib.decompress(png[start:]), np.uint8)
    return rows.reshape(height, 1 + width * channels)[:, 1:]


def test_predict_show_works_without_pillow(tmp_path, monkeypatch, without_pillow):
    small_mnist(monkeypatch)
    out = train_tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    result, output = run("predict", out / "best.npz", "--index", 7, "--show")
    assert result.exit_code == 0, output
    lines = output.splitlines()
    assert lines[0].startswith("test[7]: predicted ") and ", true 9 (" in lines[0]
    guess = lines[0].split()[2].rstrip(",")
    assert lines[-1] == f"  image written to test_7.png (predicted {guess}, true 9)"
    png = (tmp_path / "test_7.png").read_bytes()
    assert decoded_png(png) == (252, 252, 1)  # 28 pixels, 9 times: within 256
    digit = load_dataset("mnist", "test").images[7]
    assert np.array_equal(pixels(png), enlarge(digit, 256)[0])
    run("predict", out / "best.npz", "--index", 7, "--show")
    assert (tmp_path / "test_7-2.png").exists()  # never overwrites


def test_encode_png_matches_pillow():
    image = pytest.importorskip("PIL.Image")
    import io

    rng = np.random.default_rng(0)
    for shape in ((1, 5, 7), (3, 4, 2)):
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        with image.open(io.BytesIO(encode_png(array))) as decoded:
            got = np.asarray(decoded)
        want = array[0] if shape[0] == 1 else array.transpose(1, 2, 0)
        assert np.array_equal(got, want)


def test_encode_png_refuses_what_png_cannot_hold():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        encode_png(np.zeros((2, 4, 4), np.uint8))
