"""Promises 4 and 5: hostile or damaged dataset files are refused, naming the file (also under
``python -O``); nothing is written outside the data folder; failed downloads leave nothing at
the final path. The servers run on 127.0.0.1 only (tests/datafiles.py)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from datafiles import (
    expect_idx_set,
    idx_bytes,
    isolate,
    python2_dumps,
    serving,
    tiny_idx_set,
    write_cifar_folder,
    write_tar,
)
from promises import record

from cnnbuild.data import DataError, load_dataset
from cnnbuild.data.cifar import FOLDER, read_cifar_archive, read_cifar_folder

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
GOOD = idx_bytes(IMAGES)


def idx_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """Damaged IDX files, each with a fragment its error must contain."""
    labels = idx_bytes(np.array([1, 2], np.uint8))
    claims_more = bytearray(GOOD)
    claims_more[4:8] = (3).to_bytes(4, "big")
    cases = {
        "bad magic": (b"\x00\x00\x09\x03" + GOOD[4:], "magic number"),
        "labels read as images": (labels, "magic number"),
        "wrong dimensions": (claims_more, "shorter than the header says"),
        "payload too short": (GOOD[:-5], "shorter than the header says"),
        "payload too long": (GOOD + b"\x00" * 7, "7 bytes follow"),
        "cut-off header": (GOOD[:9], "cut off"),
        "empty": (b"", "empty"),
    }
    files = {}
    for i, (name, (data, fragment)) in enumerate(cases.items()):
        for gz in (False, True):
            path = folder / f"case{i}{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
            files[f"{name}{' (gzip)' if gz else ''}"] = (path, fragment)
    packed = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, (40, 9, 9))))
    (folder / "cut.gz").write_bytes(packed[: len(packed) // 2])
    files["cut-off gzip"] = (folder / "cut.gz", "gzip data is damaged or cut off")
    return files


READER = """\
import json, sys
from pathlib import Path
from cnnbuild.data import DataError
from cnnbuild.data.idx import read_images
out = {}
for path in sys.argv[1:]:
    try:
        read_images(Path(path))
        out[path] = "accepted"
    except DataError as error:
        out[path] = str(error)
print(json.dumps(out))
"""


def test_damaged_idx_files_are_named_in_a_clear_error_under_python_dash_o(tmp_path):
    """Under plain python, each case is a test in test_data_idx.py."""
    files = idx_cases(tmp_path)
    result = subprocess.run(
        [sys.executable, "-O", "-c", READER, *(str(p) for p, _ in files.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    messages = json.loads(result.stdout)
    clear = [
        n for n, (p, f) in files.items() if str(p) in messages[str(p)] and f in messages[str(p)]
    ]
    record(
        4,
        "damaged IDX files (python -O)",
        f"{len(clear)} of {len(files)} refused naming file and fault",
    )
    assert len(clear) == len(files), {n: messages[str(p)] for n, (p, _) in files.items()}


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_cifar_pickles_run_nothing(tmp_path):
    marker = tmp_path / "marker"
    payloads = {
        "data": {b"data": RunsCode(marker), b"labels": [0]},
        "labels": {b"data": np.zeros((1, 3072), np.uint8), b"labels": RunsCode(marker)},
        "whole batch": RunsCode(marker),
        "meta": {b"label_names": RunsCode(marker)},
    }
    refused = 0
    for name, payload in payloads.items():
        folder = tmp_path / name / FOLDER
        write_cifar_folder(folder)
        target = "batches.meta" if name == "meta" else "test_batch"
        (folder / target).write_bytes(python2_dumps(payload))
        archive = write_tar(folder.parent / "c.tar.gz", folder)
        refusal = rf"{target}: not a readable CIFAR-10 pickle \(.*open, refused\)"
        with pytest.raises(DataError, match=refusal):
            read_cifar_folder(folder, "test")
        with pytest.raises(DataError, match=refusal):
            read_cifar_archive(archive, "test")
        refused += 2
    record(
        4,
        "malicious CIFAR pickles",
        f"{refused} of {refused} refused (folder and tar.gz), nothing ran",
    )
    assert not marker.exists()


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


def test_tarballs_with_escaping_paths_or_links_write_nothing(tmp_path, monkeypatch):
    cache = isolate(tmp_path, monkeypatch)
    outside = tmp_path / "outside"
    members = [
        member("../outside/escaped"),
        member(f"{FOLDER}/../../outside/escaped"),
        member(str(outside / "absolute")),
        member(f"{FOLDER}/link", tarfile.SYMTYPE, str(outside)),
        member(f"{FOLDER}/hard", tarfile.LNKTYPE, "/etc/passwd"),
        member(f"{FOLDER}/hard-inside", tarfile.LNKTYPE, f"{FOLDER}/test_batch"),
        member(f"{FOLDER}/fifo", tarfile.FIFOTYPE),
        member(f"{FOLDER}/device", tarfile.CHRTYPE),
    ]
    refused = 0
    for i, extra in enumerate(members):
        work = tmp_path / f"work{i}"
        write_cifar_folder(work / FOLDER)
        archive = write_tar(
            tmp_path / f"data{i}" / "cifar-10-python.tar.gz", work / FOLDER, [extra]
        )
        before = sorted(tmp_path.rglob("*"))
        with pytest.raises(DataError, match="refusing to read it"):
            read_cifar_archive(archive, "test")
        refused += sorted(tmp_path.rglob("*")) == before
    record(
        4,
        "tarballs with ../, absolute paths, links, devices",
        f"{refused} of {len(members)} refused, nothing written",
    )
    assert refused == len(members) and not outside.exists() and not cache.exists()


def final_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


@pytest.mark.slow
def test_failed_downloads_leave_no_unverified_file(tmp_path, monkeypatch):
    cache = isolate(tmp_path, monkeypatch) / "mnist"
    contents = tiny_idx_set()
    failures = {}
    with serving() as server:
        mirror = f"{server.url}/m/"
        expect_idx_set(monkeypatch, "mnist", contents, mirrors=[mirror])
        body = gzip.compress(contents["train-images-idx3-ubyte"])
        route = "/m/train-images-idx3-ubyte.gz"
        scenarios = {
            "cut-off body": (body[:-40], len(body)),
            "wrong bytes": (gzip.compress(tiny_idx_set(seed=9)["train-images-idx3-ubyte"]), None),
            "truncated gzip": (body[: len(body) // 2], None),
            "not found": None,
        }
        for name, answer in scenarios.items():
            server.routes.pop(route, None)
            if answer is not None:
                server.routes[route] = answer
            with pytest.raises(DataError) as caught:
                load_dataset("mnist")
            failures[name] = (str(caught.value), final_files(cache))
        server.routes[route] = (body, None)

        def interrupt(done, total):
            if done:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            load_dataset("mnist", progress=interrupt)
        failures["Ctrl-C mid-download"] = ("interrupted", final_files(cache))
    dropping = socket.socket()
    dropping.bind(("127.0.0.1", 0))
    dropping.listen()
    stop = threading.Event()

    def drop() -> None:  # accept, read the request, close without answering
        while not stop.is_set():
            try:
                connection, _ = dropping.accept()
            except OSError:
                return
            connection.recv(4096)
            connection.close()

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    try:
        expect_idx_set(
            monkeypatch,
            "mnist",
            contents,
            mirrors=[f"http://127.0.0.1:{dropping.getsockname()[1]}/"],
        )
        with pytest.raises(DataError) as caught:
            load_dataset("mnist")
        failures["dropped connection"] = (str(caught.value), final_files(cache))
    finally:
        stop.set()
        dropping.close()
        thread.join(timeout=10)
    left = sum(len(files) for _, files in failures.values())
    record(
        5,
        "failed downloads (127.0.0.1)",
        f"{len(failures)} kinds ({', '.join(failures)}): unverified files left at final "
        f"paths or as .part files {left}",
    )
    assert left == 0, failures
    assert not os.path.exists(cache / "train-images-idx3-ubyte.gz")
