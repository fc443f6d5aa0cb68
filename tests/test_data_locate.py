"""load_dataset for the IDX datasets: where files are looked for, and what the errors say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datafiles import (
    IDX_STEMS,
    expect_idx_set,
    redeclare,
    tiny_idx_set,
    write,
    write_idx_set,
)

from cnnbuild.data import DataError, Dataset, catalog, load_dataset, locate
from cnnbuild.errors import CnnbuildError

pytestmark = pytest.mark.usefixtures("isolated")


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    given, env, package, system = (tmp_path / name for name in ("given", "env", "pkg", "sys"))
    for folder in (given, env):
        folder.mkdir()
    monkeypatch.setenv(locate.ENV_VAR, str(env))
    system_folders = (locate.Place(system, "system"),)
    places = locate.search_places("mnist", given, package, system_folders)
    folders = [place.folder for place in places]
    assert folders == [
        given,
        given / "mnist",
        env,
        env / "mnist",
        package,
        isolated / "mnist",
        system,
    ]


def test_cache_honours_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert locate.cache_root() == tmp_path / "cnnbuild"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the spec says: ignore it
    assert locate.cache_root() == Path.home() / ".cache" / "cnnbuild"


def test_tiny_set_loads_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contents = tiny_idx_set()
    expect_idx_set(monkeypatch, "fashion-mnist", contents)
    write_idx_set(tmp_path / "fashion-mnist", contents)
    train = load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    test = load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=False)
    assert isinstance(train, Dataset) and train.name == "fashion-mnist"
    assert train.images.shape == (6, 1, 5, 4) and train.images.dtype == np.uint8
    assert train.labels.shape == (6,) and train.labels.dtype == np.int64
    assert len(test) == 4 and train.image_shape == (1, 5, 4) and train.num_classes == 10
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"


def test_data_dir_beats_environment_beats_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_idx_set()
    expect_idx_set(monkeypatch, "mnist", contents)
    given, env, package = tmp_path / "given", tmp_path / "env", tmp_path / "package"
    write_idx_set(given, contents)
    write_idx_set(package, contents)
    for stem in IDX_STEMS:  # damaged copies: reading them is an error that names them
        write(env / f"{stem}.gz", b"damaged")
    monkeypatch.setenv(locate.ENV_VAR, str(env))
    redeclare(monkeypatch, "mnist", package_folder=package)

    assert len(load_dataset("mnist", data_dir=given, download=False)) == 6
    with pytest.raises(DataError, match=str(env / "train-images-idx3-ubyte.gz")):
        load_dataset("mnist", download=False)
    monkeypatch.delenv(locate.ENV_VAR)
    assert len(load_dataset("mnist", download=False)) == 6


def test_raw_files_are_found_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contents = tiny_idx_set()
    expect_idx_set(monkeypatch, "mnist", contents)
    write_idx_set(tmp_path, contents, gz=False)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path, download=False)) == 4


def test_missing_files_say_what_to_put_where(tmp_path: Path, isolated: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "downloading is turned off" in message
    for stem in IDX_STEMS:
        assert f"{stem}.gz" in message
    for folder in (tmp_path, tmp_path / "mnist", isolated / "mnist"):
        assert f"  {folder}  " in message
    assert isinstance(caught.value, CnnbuildError)


def test_images_and_labels_that_do_not_belong_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_idx_set()
    contents["train-labels-idx1-ubyte"] = tiny_idx_set(n_train=5)["train-labels-idx1-ubyte"]
    expect_idx_set(monkeypatch, "mnist", contents)
    write_idx_set(tmp_path, contents)
    with pytest.raises(DataError, match="6 images but 5 labels"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_data_dir_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere", download=False)


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(DataError, match="cifar10, fashion-mnist, folder, mnist"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="no split 'valid'; choose one of: train, test"):
        load_dataset("mnist", "valid")


def test_image_shape_must_match_a_built_in_dataset() -> None:
    with pytest.raises(DataError, match=r"mnist images are \(1, 28, 28\)"):
        load_dataset("mnist", image_shape=(3, 32, 32))
    with pytest.raises(DataError, match="image_shape must be"):
        load_dataset("mnist", image_shape=(28, 28))
    with pytest.raises(DataError, match="image_shape must be"):
        load_dataset("mnist", image_shape=28)


def test_packaged_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = Path(catalog.__file__).with_name("mnist")
    redeclare(monkeypatch, "mnist", package_folder=shipped)
    train = load_dataset("mnist", download=False)
    test = load_dataset("mnist", "test", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.class_names == tuple("0123456789")
    assert np.bincount(test.labels).tolist()[:3] == [980, 1135, 1032]
    assert (shipped / "LICENSE.txt").is_file()
