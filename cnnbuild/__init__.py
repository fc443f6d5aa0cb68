"""cnnbuild: define, inspect and train convolutional networks from YAML files, in numpy.

>>> import cnnbuild
>>> net = cnnbuild.load("archs/mnist.yaml")
>>> probabilities = net.forward(images)          # images: (N, 1, 28, 28) float32

``plan`` gives the network's layers and shapes without weights (for summaries and sizes).
"""

from __future__ import annotations

import os
from typing import Any

# OpenBLAS's idle threads spin for about 0.1 s before they sleep, taking a core from whatever
# runs next: the fast engine's compiled passes, or the other training workers. A short
# timeout (2^1 cycles, the least) lets them sleep at once; OpenBLAS reads it when numpy
# loads it, so it is set here, before cnnbuild imports numpy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

__version__ = "0.1.0"
__all__ = ["load", "loads", "plan"]


def __getattr__(name: str) -> Any:
    # numpy and the layers load on first use, so the command line starts fast
    if name in __all__:
        from cnnbuild import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'cnnbuild' has no attribute {name!r}")
