"""Checkpoints: numeric arrays plus JSON metadata in one .npz, without pickle.

Layout: every array under its own key ("conv1.W", "adam/m/conv1.W"), plus two reserved
entries: ``__format_version__`` (0-d int64) and ``__meta__`` (0-d unicode string holding
the metadata as JSON; Python ints of any size, such as a PCG64 state, round-trip exactly).

Saving is atomic: the archive is written to ``.<name>.tmp-<pid>`` beside the target,
fsynced, then renamed over it, so a crash leaves the previous checkpoint whole. Loading
never unpickles and turns every kind of damage into a CheckpointError naming the file.
"""

from __future__ import annotations

import json
import os
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.errors import CnnbuildError

FORMAT_VERSION = 1
META_KEY = "__meta__"
VERSION_KEY = "__format_version__"
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
LISTED_PROBLEMS = 10
# What numpy and zipfile raise on damaged archives: bad headers and sizes (ValueError,
# EOFError, BadZipFile), a flipped "encrypted" flag (RuntimeError), a flipped compression
# method (NotImplementedError, zlib.error), I/O (OSError), an array header claiming more
# memory than there is (MemoryError) or one its parser cannot read (tokenize.TokenError).
READ_ERRORS = (
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    OSError,
    MemoryError,
    tokenize.TokenError,
)
# The format's own entries, and np.savez's argument names, which cannot be array keys.
RESERVED_KEYS = (META_KEY, VERSION_KEY, "file", "allow_pickle")


class CheckpointError(CnnbuildError):
    """A checkpoint cannot be written, read or does not match what it is loaded into."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _entries(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Everything save_checkpoint writes, checked before any file is touched."""
    entries = {}
    for key, value in arrays.items():
        if key in RESERVED_KEYS:
            raise CheckpointError(f"array key {key!r} is reserved by the checkpoint format")
        value = np.asarray(value)
        if value.dtype.kind not in NUMERIC_KINDS:
            raise CheckpointError(
                f"array {key!r} has dtype {value.dtype}; checkpoints hold numeric arrays only"
            )
        entries[key] = value
    try:
        text = json.dumps(meta, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    entries[META_KEY] = np.array(text)
    entries[VERSION_KEY] = np.array(FORMAT_VERSION, dtype=np.int64)
    return entries


def _temp_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.tmp-{pid}")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (on systems without signals, assume not)."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files left beside ``path`` by saves whose process has died."""
    prefix = _temp_path(path, 0).name[:-1]
    for temp in path.parent.iterdir():
        pid = temp.name.removeprefix(prefix)
        if pid != temp.name and pid.isdigit() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; elsewhere directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write ``arrays`` (numeric) and ``meta`` (JSON-serialisable) to ``path`` atomically.

    Raises CheckpointError if an array is not numeric, ``meta`` is not serialisable or the
    file cannot be written; the previous file at ``path``, if any, is then left as it was.
    """
    path = Path(path)
    entries = _entries(arrays, meta)
    temp = _temp_path(path, os.getpid())
    try:
        _remove_stale_temps(path)
        with open(temp, "wb") as file:
            np.savez(file, allow_pickle=False, **entries)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _read_entries(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the archive at ``path``, read with pickling disabled."""
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    if magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: is a single .npy array, not a checkpoint (.npz)")
    if not magic.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path}: is not a checkpoint: not an .npz (zip) archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise CheckpointError(
            f"{path}: damaged or truncated archive ({exc}); save the checkpoint again"
        ) from None
    entries = {}
    with archive:
        for info in archive.zip.infolist():
            # save_checkpoint stores entries uncompressed; a compressed one could inflate to
            # any size (a zip bomb), so it is refused before it is read.
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{path}: entry {info.filename!r} is compressed; cnnbuild writes "
                    "checkpoints uncompressed, so this file was not written by it"
                )
        for key in archive.files:
            try:
                value = archive[key]
            except READ_ERRORS as exc:
                raise CheckpointError(f"{path}: entry {key!r} cannot be read: {exc}") from None
            if not isinstance(value, np.ndarray):
                raise CheckpointError(f"{path}: entry {key!r} is not a numpy array")
            entries[key] = value
    return entries


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint: ``(arrays, meta)``.

    Never unpickles. Raises CheckpointError naming the file and the problem for anything
    else: not an archive, damaged or truncated, object or other non-numeric arrays,
    missing or invalid metadata, an unknown format version.
    """
    path = Path(path)
    entries = _read_entries(path)

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}")

    version = entries.pop(VERSION_KEY, None)
    if version is None:
        raise fail(f"has no {VERSION_KEY!r} entry; it was not written by cnnbuild")
    if version.shape != () or version.dtype.kind not in "iu":
        raise fail(f"{VERSION_KEY!r} should be a single integer, found {version!r}")
    version = int(version)
    if version > FORMAT_VERSION:
        raise fail(
            f"format version {version} is newer than this cnnbuild reads "
            f"({FORMAT_VERSION}); upgrade cnnbuild"
        )
    if version != FORMAT_VERSION:
        raise fail(f"unknown format version {version}; this cnnbuild reads {FORMAT_VERSION}")
    meta = entries.pop(META_KEY, None)
    if meta is None:
        raise fail(f"has no {META_KEY!r} entry (the metadata)")
    if meta.shape != () or meta.dtype.kind != "U":
        raise fail(f"{META_KEY!r} should be a single string, found dtype {meta.dtype}")
    try:
        meta = json.loads(meta.item())
    except (ValueError, RecursionError) as exc:
        raise fail(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise fail(f"metadata should be a JSON object, found {type(meta).__name__}")
    for key, value in entries.items():
        if value.dtype.kind not in NUMERIC_KINDS:
            raise fail(f"entry {key!r} has dtype {value.dtype}; checkpoints hold numeric arrays")
    return entries, meta


def _listed(problems: list[str]) -> str:
    shown = problems[:LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    lines = [f"  {problem}" for problem in shown]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def load_into(
    target: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], what: str
) -> None:
    """Copy ``arrays`` into the existing arrays of ``target`` in place, strictly.

    Keys must match exactly and shapes must agree. A dtype differing from the target's
    is cast only between real float types, and float values must be finite. ``what`` names
    the target in messages ("the network"). On any mismatch, raises CheckpointError listing
    each key (with both shapes) and copies nothing.
    """
    problems = [f"{key}: missing from the checkpoint" for key in target if key not in arrays]
    problems += [f"{key}: in the checkpoint only" for key in arrays if key not in target]
    for key in target.keys() & arrays.keys():
        have, given = target[key], np.asarray(arrays[key])
        if given.shape != have.shape:
            problems.append(f"{key}: checkpoint has {given.shape}, {what} has {have.shape}")
        elif given.dtype != have.dtype and not (given.dtype.kind == "f" and have.dtype.kind == "f"):
            problems.append(f"{key}: checkpoint has dtype {given.dtype}, {what} has {have.dtype}")
        elif given.dtype.kind == "f" and not np.isfinite(given).all():
            problems.append(f"{key}: checkpoint holds NaN or infinite values")
    if problems:
        raise CheckpointError(f"checkpoint and {what} differ:\n{_listed(sorted(problems))}")
    for key, have in target.items():
        have[...] = arrays[key]
