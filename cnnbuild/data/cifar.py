"""Reading CIFAR-10 in its python-pickle layout, from the folder or straight from the archive.

The batches are pickles, so they are read with an unpickler that can build nothing but
numeric numpy arrays and plain containers: a pickle that names any other callable is
refused before anything runs. The archive is never extracted, so no member can write
anywhere; members that are links or point outside the archive's folder are refused.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from cnnbuild.data.dataset import DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
SPLITS = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32
FIX = "replace it with an intact copy"

CifarData = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


def read_cifar_folder(folder: Path, split: str) -> CifarData:
    """Read a split from ``cifar-10-batches-py/``: images (N, 3, 32, 32) uint8, labels, names.

    ``batches.meta`` is optional; without it the standard class names are used.
    """
    missing = [name for name in SPLITS[split] if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: missing {', '.join(missing)}; a CIFAR-10 folder holds "
            f"{', '.join(SPLITS['train'] + SPLITS['test'])} and {META}"
        )
    batches = []
    for name in SPLITS[split]:
        path = folder / name
        with _open(path) as f:
            batches.append(_check_batch(_unpickle(f, path), path))
    meta = folder / META
    if meta.is_file():
        with _open(meta) as f:
            class_names = _check_meta(_unpickle(f, meta), meta)
    else:
        class_names = CLASS_NAMES
    return (*_concatenate(batches), class_names)


def read_cifar_archive(path: Path, split: str, md5: str | None = None) -> CifarData:
    """Read a split from ``cifar-10-python.tar.gz`` without extracting it.

    The archive's MD5 is checked first when given (it is what the publisher lists).
    """
    if md5 is not None:
        _check_md5(path, md5)
    meta_name = f"{FOLDER}/{META}"
    wanted = {f"{FOLDER}/{name}" for name in SPLITS[split]} | {meta_name}
    found: dict[str, Any] = {}
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                _check_member(member, path)
                if member.name in wanted and member.isfile():
                    label = f"{path}:{member.name}"
                    content = _unpickle(archive.extractfile(member), label)
                    check = _check_meta if member.name == meta_name else _check_batch
                    found[member.name] = check(content, label)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable tar.gz archive ({err}); {FIX}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the archive: {err.strerror or err}") from None
    missing = sorted(wanted - found.keys() - {meta_name})
    if missing:
        raise DataError(f"{path}: the archive lacks {', '.join(missing)}; {FIX}")
    class_names = found.pop(meta_name, CLASS_NAMES)
    batches = [found.pop(f"{FOLDER}/{name}") for name in SPLITS[split]]
    return (*_concatenate(batches), class_names)


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds numeric numpy arrays, bytes, strings, numbers, lists and dicts; nothing else."""

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"the pickle asks for {module}.{name}, refused")
        return allowed


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"the pickle asks for a {dtype} array, refused")
    return dtype


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
}


def _unpickle(f: IO[bytes], label: str | Path) -> Any:
    try:
        return _PlainDataUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a damaged or hostile pickle can fail in many ways
        reason = str(err) or type(err).__name__
        raise DataError(f"{label}: not a readable CIFAR-10 pickle ({reason}); {FIX}") from None


def _check_batch(batch: Any, label: str | Path) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{label}: not a CIFAR-10 batch (a dict with b'data' and b'labels'); {FIX}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == PIXELS
    ):
        found = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(f"{label}: b'data' should be a uint8 (N, {PIXELS}) array, found {found}")
    labels = _label_array(labels)
    if labels is None or labels.shape != (len(data),):
        raise DataError(f"{label}: b'labels' should be {len(data)} integers, one per image")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataError(
            f"{label}: labels range from {labels.min()} to {labels.max()}, "
            f"outside 0 to {len(CLASS_NAMES) - 1}; {FIX}"
        )
    return data, labels


def _label_array(labels: Any) -> np.ndarray | None:
    if isinstance(labels, list) and all(type(value) is int for value in labels):
        return np.array(labels, dtype=np.int64)
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1:
        return labels.astype(np.int64)
    return None


def _check_meta(meta: Any, label: str | Path) -> tuple[str, ...]:
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if (
        not isinstance(names, list)
        or len(names) != len(CLASS_NAMES)
        or not all(isinstance(name, bytes) for name in names)
    ):
        raise DataError(
            f"{label}: b'label_names' should list {len(CLASS_NAMES)} class names; {FIX} "
            f"or delete it to use the standard names"
        )
    return tuple(name.decode("utf-8", errors="replace") for name in names)


def _concatenate(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    total = sum(len(labels) for _, labels in batches)
    images = np.empty((total, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    start = 0
    while batches:  # release each batch once copied, so memory peaks near one copy
        data, batch_labels = batches.pop(0)
        stop = start + len(batch_labels)
        images[start:stop] = data.reshape(-1, *IMAGE_SHAPE)
        labels[start:stop] = batch_labels
        start = stop
    return images, labels


def _check_member(member: tarfile.TarInfo, path: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise DataError(
            f"{path}: the archive holds {member.name!r}, a path outside its own folder; "
            f"refusing to read it, {FIX}"
        )
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"{path}: the archive member {member.name!r} is a link or special file; "
            f"refusing to read it, {FIX}"
        )


def _check_md5(path: Path, md5: str) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"{path}: cannot read the archive: {err.strerror or err}") from None
    if digest.hexdigest() != md5:
        raise DataError(
            f"{path}: the archive differs from the published one (MD5 {digest.hexdigest()}, "
            f"expected {md5}); it is damaged or incomplete, {FIX}"
        )


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err.strerror or err}") from None
