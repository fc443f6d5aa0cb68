"""CIFAR-10 from a folder or a tar.gz of tiny batches; hostile pickles and archives."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from datafiles import (
    CIFAR_BATCHES,
    Server,
    md5,
    python3_dumps,
    redeclare,
    write_cifar_folder,
    write_tar,
)

from cnnbuild.data import DataError, load_dataset
from cnnbuild.data.cifar import ARCHIVE, CLASS_NAMES, FOLDER, read_cifar_archive, read_cifar_folder

pytestmark = pytest.mark.usefixtures("isolated")


class RunsCommand:
    """Unpickling this would run a shell command (if the unpickler allowed it)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def expected(batches: dict[str, dict], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([batches[name][b"data"] for name in names])
    labels = np.concatenate([batches[name][b"labels"] for name in names])
    return data.reshape(-1, 3, 32, 32), labels


def test_folder(tmp_path: Path) -> None:
    batches = write_cifar_folder(tmp_path / FOLDER)
    images, labels, class_names = read_cifar_folder(tmp_path / FOLDER, "train")
    want_images, want_labels = expected(batches, CIFAR_BATCHES[:5])
    assert images.shape == (10, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert class_names == tuple(f"class{i}" for i in range(10))
    # the row layout is 1024 red, 1024 green, 1024 blue values, each row-major 32 x 32
    row = batches["data_batch_1"][b"data"][0]
    assert images[0, 1, 2, 3] == row[1024 + 2 * 32 + 3]


def test_batches_pickled_by_python_3(tmp_path: Path) -> None:
    batches = write_cifar_folder(tmp_path / FOLDER, dumps=python3_dumps)
    images, labels, class_names = read_cifar_folder(tmp_path / FOLDER, "test")
    want_images, want_labels = expected(batches, ["test_batch"])
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert class_names[0] == "class0"


def test_folder_without_meta_uses_the_standard_names(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / FOLDER, meta=False)
    images, _, class_names = read_cifar_folder(tmp_path / FOLDER, "test")
    assert len(images) == 2 and class_names == CLASS_NAMES and class_names[0] == "airplane"


def test_folder_missing_a_batch(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    (tmp_path / FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        read_cifar_folder(tmp_path / FOLDER, "train")
    assert len(read_cifar_folder(tmp_path / FOLDER, "test")[0]) == 2


def test_archive_gives_the_same_arrays_as_the_folder(tmp_path: Path) -> None:
    batches = write_cifar_folder(tmp_path / FOLDER)
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / FOLDER)
    for split, names in (("train", CIFAR_BATCHES[:5]), ("test", CIFAR_BATCHES[5:])):
        images, labels, class_names = read_cifar_archive(archive, split, md5(archive))
        want_images, want_labels = expected(batches, names)
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
        assert class_names[3] == "class3"


def test_load_dataset_from_folder_and_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar_folder(tmp_path / "unpacked" / FOLDER)
    archive = write_tar(
        tmp_path / "packed" / "cifar-10-python.tar.gz", tmp_path / "unpacked" / FOLDER
    )
    from_folder = load_dataset("cifar10", data_dir=tmp_path / "unpacked", download=False)
    assert from_folder.images.shape == (10, 3, 32, 32) and from_folder.name == "cifar10"
    # pointing data_dir at the batches folder itself works too
    direct = load_dataset("cifar10", "test", data_dir=tmp_path / "unpacked" / FOLDER)
    assert len(direct) == 2
    with pytest.raises(DataError, match="differs from the published one"):
        load_dataset("cifar10", data_dir=tmp_path / "packed", download=False)
    redeclare(monkeypatch, "cifar10", checksums={ARCHIVE: md5(archive)})
    from_archive = load_dataset("cifar10", data_dir=tmp_path / "packed", download=False)
    np.testing.assert_array_equal(from_archive.images, from_folder.images)


def test_archive_is_downloaded_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server: Server, isolated: Path
) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / FOLDER)
    http_server.routes[f"/cifar/{ARCHIVE}"] = (archive.read_bytes(), None)
    redeclare(
        monkeypatch,
        "cifar10",
        checksums={ARCHIVE: md5(archive)},
        mirrors=(f"{http_server.url}/cifar/",),
    )
    assert len(load_dataset("cifar10", "test")) == 2
    assert (isolated / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


@pytest.mark.parametrize(
    "payload",
    [
        {b"data": np.array([None] * 3072, dtype=object).reshape(1, 3072), b"labels": [0]},
        {b"data": np.zeros((1, 3072), dtype=[("x", "u1")]), b"labels": [0]},
        {b"data": {1, 2}, b"labels": [0]},
    ],
    ids=["object-array", "structured-array", "set"],
)
def test_pickles_of_anything_but_plain_data_are_refused(tmp_path: Path, payload: dict) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    (tmp_path / FOLDER / "test_batch").write_bytes(python3_dumps(payload))
    with pytest.raises(DataError, match="test_batch"):
        read_cifar_folder(tmp_path / FOLDER, "test")


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([1, 2, 3], "a dict with b'data' and b'labels'"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"uint8 \(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"uint8 \(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 integers"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "outside 0 to 9"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, "1"]}, "2 integers"),
    ],
)
def test_batches_with_the_wrong_structure(tmp_path: Path, batch: object, message: str) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    (tmp_path / FOLDER / "test_batch").write_bytes(python3_dumps(batch))
    with pytest.raises(DataError, match=message):
        read_cifar_folder(tmp_path / FOLDER, "test")


def test_damaged_pickle(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    path = tmp_path / FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(
        DataError, match=r"test_batch: not a readable CIFAR-10 pickle \(pickle data was truncated\)"
    ):
        read_cifar_folder(tmp_path / FOLDER, "test")


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


def test_archive_whose_batch_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / FOLDER).mkdir()
    archive = write_tar(
        tmp_path / "a.tar.gz",
        tmp_path / FOLDER,
        [member(f"{FOLDER}/test_batch", tarfile.SYMTYPE, "x")],
    )
    with pytest.raises(DataError, match="link or special file"):
        read_cifar_archive(archive, "test")


def test_cut_off_archive(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / FOLDER)
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(DataError, match=str(archive)):
        read_cifar_archive(archive, "test")
    with pytest.raises(DataError, match="MD5"):
        read_cifar_archive(archive, "test", md5="0" * 32)


def test_archive_lacking_a_batch(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / FOLDER)
    (tmp_path / FOLDER / "test_batch").unlink()
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / FOLDER)
    with pytest.raises(DataError, match=f"lacks {FOLDER}/test_batch"):
        read_cifar_archive(archive, "test")
