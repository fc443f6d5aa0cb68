"""Tiny dataset files for the data tests (never the real data), an isolated search path
and a local HTTP server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cnnbuild.data import catalog, locate
from cnnbuild.data.loaders import IDX_FILES

IDX_STEMS = [stem for stems in IDX_FILES.values() for stem in stems]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connections are refused at once


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding ``array``."""
    header = (0x800 | array.ndim).to_bytes(4, "big")
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_idx_set(seed: int = 0, n_train: int = 6, n_test: int = 4) -> dict[str, bytes]:
    """Uncompressed contents of the four IDX files of a tiny 10-class set of 5x4 images."""
    rng = np.random.default_rng(seed)
    contents = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images_stem, labels_stem = IDX_FILES[split]
        contents[images_stem] = idx_bytes(rng.integers(0, 256, (n, 5, 4), dtype=np.uint8))
        contents[labels_stem] = idx_bytes(rng.integers(0, 10, n, dtype=np.uint8))
    return contents


def write_idx_set(folder: Path, contents: dict[str, bytes], gz: bool = True) -> None:
    for stem, data in contents.items():
        write(folder / (f"{stem}.gz" if gz else stem), data, gz=gz)


def redeclare(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> None:
    """Change fields of dataset ``name``'s declaration for the rest of the test."""
    changed = dataclasses.replace(catalog.DATASETS[name], **changes)
    monkeypatch.setitem(catalog.DATASETS, name, changed)


def expect_idx_set(
    monkeypatch: pytest.MonkeyPatch, name: str, contents: dict[str, bytes], mirrors=None
) -> None:
    """Make ``name`` expect these contents (and download from ``mirrors`` if given)."""
    redeclare(
        monkeypatch,
        name,
        checksums={stem: sha256(data) for stem, data in contents.items()},
        mirrors=catalog.DATASETS[name].mirrors if mirrors is None else tuple(mirrors),
    )


def cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"tiny batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


CIFAR_META = {
    b"num_cases_per_batch": 2,
    b"label_names": [f"class{i}".encode() for i in range(10)],
    b"num_vis": 3072,
}


class Python2Pickler(pickle._Pickler):
    """Pickles bytes the way Python 2 pickled ``str``, as the real CIFAR-10 batches do
    (Python 3 would call ``_codecs.encode`` at protocol 2)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def python2_dumps(obj: object) -> bytes:
    out = io.BytesIO()
    Python2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def python3_dumps(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=4)  # as cifar10_from_jpeg.py writes them


def write_cifar_folder(
    folder: Path, n: int = 2, meta: bool = True, dumps: Callable[[object], bytes] = python2_dumps
) -> dict[str, dict]:
    """A ``cifar-10-batches-py`` folder of tiny batches; returns the batches by name."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {name: cifar_batch(n, seed) for seed, name in enumerate(CIFAR_BATCHES)}
    for name, batch in batches.items():
        (folder / name).write_bytes(dumps(batch))
    if meta:
        (folder / "batches.meta").write_bytes(dumps(CIFAR_META))
    return batches


def write_tar(path: Path, folder: Path, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """tar.gz ``folder`` under its own name, then append ``extra`` members (empty bodies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
        for member in extra or []:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $CNNBUILD_DATA, a cache under tmp_path, no packaged or system copies, and
    download URLs that fail at once unless a test sets its own. Returns the cache root."""
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name, info in catalog.DATASETS.items():
        mirrors = (UNREACHABLE,) if info.mirrors else ()
        redeclare(monkeypatch, name, package_folder=None, system_folders=(), mirrors=mirrors)
    return tmp_path / "xdg-cache" / "cnnbuild"


class Server:
    """A local HTTP server: ``routes[path] = (body, content_length or None)``."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, int | None]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                body, length = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"


@contextmanager
def serving() -> Iterator[Server]:
    """A Server answering on 127.0.0.1 from a thread, for the duration of the block."""
    server = Server()
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join()
