"""The dataset declarations: consistent in themselves and with what the loaders read."""

from __future__ import annotations

from pathlib import Path

import pytest
from datafiles import IDX_STEMS

from cnnbuild.data import catalog, dataset_names, locate
from cnnbuild.data.catalog import DatasetInfo
from cnnbuild.data.cifar import ARCHIVE
from cnnbuild.data.loaders import load_cifar10, load_idx

BUILT_IN = [info for info in catalog.DATASETS.values() if info.image_shape is not None]
FILES_READ = {load_idx: set(IDX_STEMS), load_cifar10: {ARCHIVE}}


def test_names_in_declaration_order() -> None:
    assert dataset_names() == ["mnist", "fashion-mnist", "cifar10", "folder"]
    assert all(name == info.name for name, info in catalog.DATASETS.items())


@pytest.mark.parametrize("info", BUILT_IN, ids=lambda info: info.name)
def test_built_in_declarations_are_consistent(info: DatasetInfo) -> None:
    mean, std = info.channel_stats
    assert len(mean) == len(std) == info.image_shape[0]
    assert all(0 < value < 1 for value in (*mean, *std))
    assert len(set(info.class_names)) == len(info.class_names) == 10
    assert set(info.checksums) == FILES_READ[info.load]
    assert info.mirrors and all(mirror.endswith("/") for mirror in info.mirrors)


def test_folder_leaves_everything_to_the_images() -> None:
    info = catalog.DATASETS["folder"]
    assert (info.image_shape, info.channel_stats, info.class_names) == (None, None, ())
    assert not info.checksums and not info.mirrors


def test_declared_places_are_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def folders(name: str) -> list[Path]:
        info = catalog.DATASETS[name]
        places = locate.search_places(name, None, info.package_folder, info.system_folders)
        return [place.folder for place in places]

    shipped = Path(catalog.__file__).with_name("mnist")
    assert folders("mnist") == [shipped, tmp_path / "cnnbuild" / "mnist"]
    assert {f"{stem}.gz" for stem in IDX_STEMS} <= {path.name for path in shipped.iterdir()}
    assert folders("fashion-mnist") == [
        tmp_path / "cnnbuild" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    assert folders("cifar10") == [tmp_path / "cnnbuild" / "cifar10"]
