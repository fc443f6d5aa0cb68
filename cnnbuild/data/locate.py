"""Where dataset files are looked for, and getting one that verifies (found or downloaded).

Search order: the ``data_dir`` argument, ``$CNNBUILD_DATA``, the dataset's copy inside the
package (MNIST's), the user cache (``$XDG_CACHE_HOME/cnnbuild`` or ``~/.cache/cnnbuild``),
then its system folders (Debian's for Fashion-MNIST). Each root is searched as is and in its
``<dataset>/`` sub-folder. Downloads go to the cache.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from cnnbuild.data.dataset import DataError, DataWarning
from cnnbuild.data.download import Progress, fetch

T = TypeVar("T")
ENV_VAR = "CNNBUILD_DATA"
CACHE = "download cache"


class Place(NamedTuple):
    """A folder to search, and why it is searched (for messages)."""

    folder: Path
    origin: str


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/cnnbuild``, or ``~/.cache/cnnbuild``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cnnbuild"


def search_places(
    name: str,
    data_dir: Path | None,
    package_folder: Path | None = None,
    system_folders: Sequence[Place] = (),
) -> list[Place]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    places = []
    for root, origin in ((data_dir, "data_dir"), (_env_root(), f"${ENV_VAR}")):
        if root is None:
            continue
        if not root.is_dir():
            raise DataError(f"{origin} {root} is not a folder; create it or point it elsewhere")
        places += [Place(root, origin), Place(root / name, origin)]
    if package_folder is not None:
        places.append(Place(package_folder, "shipped with cnnbuild"))
    places.append(Place(cache_root() / name, CACHE))
    places += system_folders
    return places


def obtain(
    names: Sequence[str],
    places: Sequence[Place],
    read: Callable[[Path], T],
    *,
    urls: Sequence[str],
    save_as: str,
    download: bool,
    progress: Progress | None,
    help_text: str,
) -> T:
    """Read the first file (or folder) called one of ``names`` in ``places``, else download.

    ``read(path)`` loads and verifies it. Downloads from ``urls`` are saved in the cache
    as ``save_as``. A damaged file in the cache is reported with a DataWarning and
    downloaded again (when ``download``); anywhere else it is an error. ``help_text``
    tells the user what to put where when neither finding nor downloading works.
    """
    cache = _cache_folder(places)
    path = _find(names, places)
    if path is not None:
        try:
            return read(path)
        except DataError as err:
            if not (download and path.parent == cache and path.is_file()):
                raise
            warnings.warn(f"{err}\nDownloading it again.", DataWarning, stacklevel=2)
            path.unlink(missing_ok=True)
    elif not download:
        raise DataError(f"{save_as} was not found and downloading is turned off.\n{help_text}")
    try:
        return fetch(urls, cache / save_as, read, progress)
    except DataError as err:
        raise DataError(f"{err}\n{help_text}") from None


def describe(needs: str, urls: Sequence[str], places: Sequence[Place]) -> str:
    """What to put where, for an error message; ``needs`` names the files."""
    folders = "\n".join(f"  {place.folder}  ({place.origin})" for place in places)
    return (
        f"{needs}\nFolders searched, in order:\n{folders}\n"
        f"Download from {' or '.join(urls)} into {_cache_folder(places)}, or put the files "
        f"into a folder given as data_dir or by ${ENV_VAR}."
    )


def _cache_folder(places: Sequence[Place]) -> Path:
    return next(place.folder for place in places if place.origin == CACHE)


def _env_root() -> Path | None:
    value = os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else None


def _find(names: Sequence[str], places: Sequence[Place]) -> Path | None:
    for place in places:
        for name in names:
            path = place.folder / name
            if path.exists():
                return path
    return None
