"""Run folders: where `cnnbuild train` writes a run, claimed so that no two runs share one.

A new run gets ``runs/<name>``, or ``runs/<name>-2``, ... if taken: the folder is made with
one ``mkdir``, which only one process can win. ``--out`` names a folder that must be new
or empty. A resumed run continues in its checkpoint's folder (or a new or empty ``--out``).
While a run trains, its folder holds ``.lock`` with the process id, created exclusively;
a lock whose process has died is stale and taken over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cnnbuild.errors import CnnbuildError
from cnnbuild.files import alive

RUNS = Path("runs")
LOCK = ".lock"


class RunFolderError(CnnbuildError):
    """A run folder cannot be made or claimed; the message says which and why."""


@contextlib.contextmanager
def claimed(name: str, out: str | None = None, resume: str | None = None) -> Iterator[Path]:
    """The run folder for this run, locked while the block runs.

    name: the network's name (a plain name: the schema allows no path separators).
    out: ``--out``; resume: the checkpoint a resumed run continues from.
    """
    folder = _choose(name, out, resume)
    _lock(folder)
    try:
        yield folder
    finally:
        _unlock(folder)


def _choose(name: str, out: str | None, resume: str | None) -> Path:
    own = Path(resume).parent if resume else None
    if out is not None:
        folder = _path(out)
        if own is not None and _same(folder, own):
            return folder
        _make(folder, exist_ok=True)
        if any(entry.name != LOCK for entry in folder.iterdir()):
            hint = (
                f"leave --out out to continue in {own}, or give a new or empty folder"
                if own is not None
                else f"continue that run with --resume {folder / 'last.npz'}, or give another --out"
                if (folder / "last.npz").exists()
                else "give a new or empty folder"
            )
            raise RunFolderError(f"--out {folder} already holds files of another run — {hint}")
        return folder
    if own is not None:
        return own
    if RUNS.exists() and not RUNS.is_dir():
        raise RunFolderError(
            f"{RUNS.resolve()} is a file, but run folders go in {RUNS}/ — move the file, or "
            "choose a folder with --out"
        )
    _make(RUNS, exist_ok=True)
    for number in range(1, 10_000):
        folder = RUNS / (name if number == 1 else f"{name}-{number}")
        if _make(folder, exist_ok=False):
            return folder
    raise RunFolderError(f"{RUNS}/{name} to {name}-9999 are all taken — choose one with --out")


def _path(text: str) -> Path:
    if "\0" in text:
        raise RunFolderError(f"--out {text!r} holds a NUL byte, which no folder name can")
    return Path(text)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _make(folder: Path, exist_ok: bool) -> bool:
    """Make ``folder`` (and its parents); False if it existed and ``exist_ok`` is False."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if folder.is_dir():
            return False
        raise RunFolderError(f"cannot make the run folder {folder}: a file has that name") from None
    except OSError as error:
        raise RunFolderError(
            f"cannot make the run folder {folder}: {error.strerror} — choose another with --out"
        ) from None
    return True


def _lock(folder: Path) -> None:
    """Create ``folder/.lock`` exclusively, taking over a lock whose process has died."""
    path = folder / LOCK
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _owner(path)
            if pid is not None and alive(pid):
                raise RunFolderError(
                    f"{folder} is in use by another `cnnbuild train` (process {pid}) — wait "
                    "for it, or choose another folder with --out"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except OSError as error:
            raise RunFolderError(
                f"cannot write in the run folder {folder}: {error.strerror} — choose a folder "
                "you can write to with --out"
            ) from None
        with os.fdopen(descriptor, "w") as file:
            file.write(str(os.getpid()))
        return
    raise RunFolderError(f"{folder} was claimed by another `cnnbuild train` just now")


def _unlock(folder: Path) -> None:
    path = folder / LOCK
    if _owner(path) == os.getpid():
        path.unlink(missing_ok=True)


def _owner(path: Path) -> int | None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.strip().isdigit() else None
