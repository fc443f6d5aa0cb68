"""Which engine computes a network's passes: ``numpy`` (the reference) or ``fast`` (compiled
kernels, the ``cnnbuild[fast]`` extra). ``auto`` picks fast when numba is installed.

Only putting a network on the fast engine imports numba, so commands that never compute
(summary, validate, schema) start as quickly as without it.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from cnnbuild.errors import CnnbuildError

if TYPE_CHECKING:
    from cnnbuild.graph import Network
    from cnnbuild.optim import Optimizer

ENGINES = ("auto", "numpy", "fast")
INSTALL = "pip install 'cnnbuild[fast]'"


def resolve(requested: str = "auto") -> str:
    """The engine to use, ``numpy`` or ``fast``; CnnbuildError for ``fast`` without numba,
    saying what to install."""
    if requested not in ENGINES:
        raise CnnbuildError(f"unknown engine {requested!r}: choose one of {', '.join(ENGINES)}")
    have_numba = importlib.util.find_spec("numba") is not None
    if requested == "fast" and not have_numba:
        raise CnnbuildError(
            f"the fast engine needs numba, which is not installed: {INSTALL} "
            "(or choose the numpy engine: --engine numpy)"
        )
    if requested == "auto":
        return "fast" if have_numba else "numpy"
    return requested


def use(net: Network, requested: str = "auto", optimizer: Optimizer | None = None) -> str:
    """Put ``net``, and the ``optimizer`` training it, on the engine ``requested`` resolves
    to (in place); returns the engine's name."""
    engine = resolve(requested)
    if engine == "fast":
        from cnnbuild.fast import accelerate

        accelerate(net, optimizer)
    return engine


def compile_note() -> str | None:
    """What compiling the fast engine's kernels cost in this process, if it compiled any
    (a first run; later runs load them from numba's cache)."""
    fast = sys.modules.get("cnnbuild.fast")
    seconds = fast.compile_seconds() if fast else 0.0
    if not seconds:
        return None
    return (
        f"the fast engine compiled its kernels in {seconds:.1f} s; "
        "they are cached, so later runs start at once"
    )
