"""Writing files so that a crash never leaves one half-written, and telling whether the
process that left a file behind still runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A crash or an error leaves the previous file at ``path`` whole; the temp file
    ``.<name>.tmp-<pid>`` is removed on errors, and by the next write once its process is
    gone. Raises what ``write`` or the file system raises.
    """
    temp = _temp_path(path, os.getpid())
    try:
        _remove_stale_temps(path)
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        _fsync_directory(path.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def alive(pid: int) -> bool:
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


def _temp_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.tmp-{pid}")


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files left beside ``path`` by writes whose process has died."""
    prefix = _temp_path(path, 0).name[:-1]
    for temp in path.parent.iterdir():
        pid = temp.name.removeprefix(prefix)
        if pid != temp.name and pid.isdigit() and not alive(int(pid)):
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
