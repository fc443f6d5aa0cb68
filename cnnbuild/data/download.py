"""Downloading a dataset file: into a temporary file beside the target, verified, then renamed.

A download that fails, is cut off or does not verify leaves nothing at the target path.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

from cnnbuild.data.dataset import DataError

T = TypeVar("T")
# progress(done_bytes, total_bytes); total_bytes is None when the server does not say
Progress = Callable[[int, int | None], None]

CHUNK = 1 << 16
TIMEOUT_S = 60
USER_AGENT = "cnnbuild (python urllib)"


def fetch(
    urls: Sequence[str],
    target: Path,
    verify: Callable[[Path], T],
    progress: Progress | None = None,
) -> T:
    """Download ``target`` from the first URL whose file passes ``verify``; return its result.

    ``verify(path)`` reads the downloaded file and raises DataError if it is not right.
    Each attempt reports progress from zero. Raises DataError listing every URL's failure.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the folder {target.parent}: {err.strerror}") from None
    failures = []
    for url in urls:
        try:
            return _fetch_one(url, target, verify, progress)
        except DataError as err:
            failures.append(f"  {url}: {err}")
    raise DataError(f"could not download {target.name}:\n" + "\n".join(failures))


def _fetch_one(url: str, target: Path, verify: Callable[[Path], T], progress: Progress | None) -> T:
    partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.part")
    try:
        with open(partial, "xb") as out:
            _download(url, out, progress)
        result = verify(partial)
        os.replace(partial, target)
        return result
    except OSError as err:
        raise DataError(f"cannot write {err.filename or partial}: {err.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def _download(url: str, out: BinaryIO, progress: Progress | None) -> None:
    import http.client  # here, not at the top: they cost every command 40 ms of start-up
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress is not None:
                progress(done, total)
            chunk = response.read(CHUNK)
            while chunk:
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
                chunk = response.read(CHUNK)
    except urllib.error.HTTPError as err:
        raise DataError(f"HTTP error {err.code} ({err.reason})") from None
    except urllib.error.URLError as err:
        raise DataError(f"cannot connect ({err.reason})") from None
    except (http.client.HTTPException, OSError) as err:
        raise DataError(f"the transfer failed ({err})") from None
    if total is not None and done != total:
        raise DataError(f"the transfer was cut off after {done} of {total} bytes")
