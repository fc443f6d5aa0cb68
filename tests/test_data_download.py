"""Downloading through a local HTTP server: good, wrong, cut off, stale in the cache."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from datafiles import (
    IDX_STEMS,
    UNREACHABLE,
    Server,
    expect_idx_set,
    tiny_idx_set,
    write,
    write_idx_set,
)

from cnnbuild.data import DataError, DataWarning, load_dataset

pytestmark = pytest.mark.usefixtures("isolated")


def serve_idx_set(server: Server, contents: dict[str, bytes], prefix: str = "/mnist/") -> None:
    for stem, data in contents.items():
        server.routes[f"{prefix}{stem}.gz"] = (gzip.compress(data), None)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.part"))


def test_download_into_the_cache(
    http_server: Server, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    contents = tiny_idx_set()
    serve_idx_set(http_server, contents)
    expect_idx_set(monkeypatch, "mnist", contents, mirrors=[f"{http_server.url}/mnist/"])
    calls: list[tuple[int, int | None]] = []
    train = load_dataset("mnist", progress=lambda done, total: calls.append((done, total)))
    assert len(train) == 6 and train.images.dtype == np.uint8
    cache = isolated / "mnist"
    assert sorted(path.name for path in cache.iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    size = len(gzip.compress(contents["train-images-idx3-ubyte"]))
    assert calls[0] == (0, size) and (size, size) in calls
    # a second load finds the cached files and downloads nothing
    http_server.requests.clear()
    assert len(load_dataset("mnist")) == 6 and http_server.requests == []


def test_falls_back_to_the_next_mirror(
    http_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_idx_set()
    serve_idx_set(http_server, contents, prefix="/second/")
    mirrors = [UNREACHABLE, f"{http_server.url}/first/", f"{http_server.url}/second/"]
    expect_idx_set(monkeypatch, "mnist", contents, mirrors=mirrors)
    assert len(load_dataset("mnist", "test")) == 4


def test_checksum_mismatch_leaves_nothing(
    http_server: Server, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    contents = tiny_idx_set()
    serve_idx_set(http_server, tiny_idx_set(seed=1))  # same layout, other bytes
    expect_idx_set(monkeypatch, "mnist", contents, mirrors=[f"{http_server.url}/mnist/"])
    with pytest.raises(DataError, match="SHA-256") as caught:
        load_dataset("mnist")
    message = str(caught.value)
    assert f"{http_server.url}/mnist/train-images-idx3-ubyte.gz" in message
    assert "Folders searched" in message
    cache = isolated / "mnist"
    assert not (cache / "train-images-idx3-ubyte.gz").exists() and leftovers(cache) == []


def test_cut_off_transfer_leaves_nothing(
    http_server: Server, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    contents = tiny_idx_set()
    serve_idx_set(http_server, contents)
    body, _ = http_server.routes["/mnist/train-images-idx3-ubyte.gz"]
    http_server.routes["/mnist/train-images-idx3-ubyte.gz"] = (body, len(body) + 1000)
    expect_idx_set(monkeypatch, "mnist", contents, mirrors=[f"{http_server.url}/mnist/"])
    with pytest.raises(DataError, match=f"cut off after {len(body)} of {len(body) + 1000} bytes"):
        load_dataset("mnist")
    cache = isolated / "mnist"
    assert not (cache / "train-images-idx3-ubyte.gz").exists() and leftovers(cache) == []


def test_offline_error_lists_files_and_folders(isolated: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset("fashion-mnist")
    message = str(caught.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert f"{UNREACHABLE}train-images-idx3-ubyte.gz: cannot connect" in message
    assert all(f"{stem}.gz" in message for stem in IDX_STEMS)
    assert str(isolated / "fashion-mnist") in message


def test_stale_cache_file_is_reported_and_fetched_again(
    http_server: Server, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    contents = tiny_idx_set()
    serve_idx_set(http_server, contents)
    expect_idx_set(monkeypatch, "mnist", contents, mirrors=[f"{http_server.url}/mnist/"])
    stale = tiny_idx_set(seed=1)
    write_idx_set(isolated / "mnist", stale)
    with pytest.warns(DataWarning, match="SHA-256.*\nDownloading it again"):
        train = load_dataset("mnist")
    assert len(train) == 6
    cached = isolated / "mnist" / "train-images-idx3-ubyte.gz"
    assert gzip.decompress(cached.read_bytes()) == contents["train-images-idx3-ubyte"]


def test_stale_cache_file_without_downloading_is_an_error(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    contents = tiny_idx_set()
    expect_idx_set(monkeypatch, "mnist", contents)
    path = write(isolated / "mnist" / "train-images-idx3-ubyte.gz", b"\x00\x00\x08\x03", gz=True)
    with pytest.raises(DataError, match="cut off") as caught:
        load_dataset("mnist", download=False)
    assert str(path) in str(caught.value) and path.exists()


def test_damaged_file_outside_the_cache_is_not_replaced(
    http_server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    contents = tiny_idx_set()
    serve_idx_set(http_server, contents)
    expect_idx_set(monkeypatch, "mnist", contents, mirrors=[f"{http_server.url}/mnist/"])
    path = write(tmp_path / "mine" / "train-images-idx3-ubyte.gz", b"not gzip")
    with pytest.raises(DataError, match="magic number"):
        load_dataset("mnist", data_dir=tmp_path / "mine")
    assert path.read_bytes() == b"not gzip" and http_server.requests == []
