"""The figures that the promise tests (tests/test_promise_*.py) report, and how big they run.

Each test records what it measured with ``record``; tests/conftest.py prints the table at the
end of the run. ``CNNBUILD_FULL_PROMISES=1`` runs the larger corpora and trial counts.
"""

from __future__ import annotations

import os

FULL = os.environ.get("CNNBUILD_FULL_PROMISES") == "1"
FIGURES: dict[tuple[int, str], str] = {}
TITLES = {
    1: "malformed specs",
    2: "YAML tags, duplicate keys, alias bombs",
    3: "hostile and damaged checkpoints",
    4: "hostile and damaged datasets",
    5: "downloads that fail",
    6: "crashes during saves and training",
    7: "exact resume",
    8: "non-finite values",
    9: "numerical truth against PyTorch",
    10: "shape inference",
    11: "run folders",
    12: "signals",
    13: "resource limits",
    14: "file-system faults",
    15: "images read as they are",
    16: "words that point at the real cause",
}


def count(default: int, full: int) -> int:
    """How many cases to run: ``default`` in CI, ``full`` with CNNBUILD_FULL_PROMISES=1."""
    return full if FULL else default


def record(promise: int, what: str, figure: object) -> None:
    """Report ``figure`` under promise number ``promise`` (a key of TITLES)."""
    FIGURES[(promise, what)] = str(figure)


def table() -> list[str]:
    """The recorded figures as aligned lines, in promise order."""
    if not FIGURES:
        return []
    width = max(len(what) for _, what in FIGURES)
    lines, last = [], None
    for (promise, what), figure in sorted(FIGURES.items(), key=lambda item: item[0][0]):
        if promise != last:
            lines.append(f"{promise}. {TITLES[promise]}")
            last = promise
        lines.append(f"     {what:<{width}}  {figure}")
    mode = (
        "full (CNNBUILD_FULL_PROMISES=1)" if FULL else "default; CNNBUILD_FULL_PROMISES=1 for more"
    )
    return [*lines, f"corpus sizes: {mode}"]
