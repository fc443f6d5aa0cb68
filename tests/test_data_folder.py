"""The folder dataset and load_image_file, on tiny PNGs (skipped without Pillow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cnnbuild.data import DataError, load_dataset, load_image_file


@pytest.fixture
def image_module():
    return pytest.importorskip("PIL.Image")


def save(image_module, path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image_module.fromarray(array).save(path)
    return path


def rgb(value: int, height: int = 4, width: int = 6) -> np.ndarray:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = value, value + 1, value + 2
    array[0, 0] = (255, 0, 0)  # a marker pixel, to check orientation
    return array


@pytest.fixture
def images_root(tmp_path: Path, image_module) -> Path:
    """train/{cat,dog}/ with 2 and 1 images, test/{cat,dog}/ with 1 each; RGB 4 x 6."""
    root = tmp_path / "pets"
    save(image_module, root / "train" / "cat" / "a.png", rgb(10))
    save(image_module, root / "train" / "cat" / "b.png", rgb(20))
    save(image_module, root / "train" / "dog" / "c.png", rgb(30))
    save(image_module, root / "test" / "cat" / "d.png", rgb(40))
    save(image_module, root / "test" / "dog" / "e.png", rgb(50))
    (root / "train" / "dog" / "notes.txt").write_text("not an image, ignored")
    return root


def test_folder_dataset(images_root: Path) -> None:
    train = load_dataset("folder", data_dir=images_root)
    assert train.name == "folder" and train.class_names == ("cat", "dog")
    assert train.images.shape == (3, 3, 4, 6) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, [0, 0, 1])
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images[1].transpose(1, 2, 0), rgb(20))
    test = load_dataset("folder", "test", data_dir=images_root)
    np.testing.assert_array_equal(test.labels, [0, 1])


def test_image_shape_converts_to_gray_and_resizes(images_root: Path) -> None:
    train = load_dataset("folder", data_dir=images_root, image_shape=(1, 8, 12))
    assert train.images.shape == (3, 1, 8, 12)
    assert abs(int(train.images[2, 0, 5, 5]) - 31) <= 1  # L = 0.299 R + 0.587 G + 0.114 B


def test_grayscale_images_give_one_channel(tmp_path: Path, image_module) -> None:
    save(image_module, tmp_path / "train" / "x" / "a.png", np.full((3, 3), 7, np.uint8))
    dataset = load_dataset("folder", data_dir=tmp_path)
    assert dataset.images.shape == (1, 1, 3, 3) and dataset.images[0, 0, 0, 0] == 7


def test_different_sizes_need_image_shape(images_root: Path, image_module) -> None:
    odd = save(image_module, images_root / "train" / "dog" / "d.png", rgb(0, height=5))
    with pytest.raises(DataError, match="give image_shape") as caught:
        load_dataset("folder", data_dir=images_root)
    assert str(odd) in str(caught.value)
    assert load_dataset("folder", data_dir=images_root, image_shape=(3, 4, 6)).images.shape[0] == 4


def test_file_that_is_not_an_image(images_root: Path) -> None:
    bad = images_root / "train" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    with pytest.raises(DataError, match="not a readable image") as caught:
        load_dataset("folder", data_dir=images_root)
    assert str(bad) in str(caught.value)


def test_split_classes_must_be_those_of_train(images_root: Path, image_module) -> None:
    save(image_module, images_root / "test" / "bird" / "f.png", rgb(1))
    with pytest.raises(DataError, match="'bird' is not one of the classes"):
        load_dataset("folder", "test", data_dir=images_root)


def test_folder_layout_errors(tmp_path: Path, images_root: Path) -> None:
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("folder")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("folder", "valid", data_dir=images_root)
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset("folder", data_dir=tmp_path / "empty")
    with pytest.raises(DataError, match="must be the name of a sub-folder"):
        load_dataset("folder", "../pets", data_dir=images_root)


def test_load_image_file(tmp_path: Path, image_module) -> None:
    path = save(image_module, tmp_path / "a.png", rgb(100))
    image = load_image_file(path, (3, 4, 6))
    assert image.shape == (3, 4, 6) and image.dtype == np.uint8
    np.testing.assert_array_equal(image.transpose(1, 2, 0), rgb(100))
    assert load_image_file(str(path), (1, 28, 28)).shape == (1, 28, 28)
    with pytest.raises(DataError, match="no such file"):
        load_image_file(tmp_path / "missing.png", (1, 28, 28))
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(DataError, match=r"text\.jpg: not a readable image"):
        load_image_file(tmp_path / "text.jpg", (1, 28, 28))


def test_without_pillow_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes "import PIL" fail
    with pytest.raises(DataError, match=r"pip install 'cnnbuild\[images\]'"):
        load_image_file(tmp_path / "a.png", (1, 28, 28))
