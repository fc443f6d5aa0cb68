"""Every layer type, registered under its YAML ``type`` name on import."""

from cnnbuild.layers import (
    activation,
    conv,
    dense,
    dropout,
    merge,
    norm,
    output,
    pool,
    reshape,
)
from cnnbuild.layers.base import REGISTRY, Layer, layer_class, register

__all__ = [
    "REGISTRY",
    "Layer",
    "activation",
    "conv",
    "dense",
    "dropout",
    "layer_class",
    "merge",
    "norm",
    "output",
    "pool",
    "register",
    "reshape",
]
