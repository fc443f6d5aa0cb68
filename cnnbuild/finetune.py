"""Fine-tuning: start a network from another run's checkpoint (``training.init_from``,
``--init-from``), loading every layer whose name and parameter shapes match, and freeze
layers (``training.freeze``, ``--freeze``) so that training leaves them as they are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnbuild.checkpoint import read_run
from cnnbuild.errors import CnnbuildError
from cnnbuild.options import did_you_mean

if TYPE_CHECKING:
    from cnnbuild.graph import Network


class FreezeError(CnnbuildError):
    """``freeze`` names a layer the network does not have, or one with nothing to freeze."""


@dataclass
class Transfer:
    """What ``init_from`` did: the layers loaded, and those skipped with the reason."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (layer, why)

    def __str__(self) -> str:
        lines = [f"init from {self.source}: loaded {len(self.loaded)} layers: "]
        lines[0] += ", ".join(self.loaded) or "none"
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def check_freeze(net: Network, names: list[str]) -> None:
    """Refuse names that are not layers of ``net``, or layers without parameters (before any
    weight is allocated: the shapes come from the plan)."""
    layers = list(net.layers)
    for name in names:
        if name not in net.layers:
            raise FreezeError(
                f"--freeze {name}: no layer named {name!r} in {net.name}"
                f"{did_you_mean(name, layers)}; its layers: {', '.join(layers)}"
            )
        node = next(node for node in net.nodes if node.name == name)
        if not node.layer.parameter_shapes(node.input_shapes):
            raise FreezeError(
                f"--freeze {name}: the {node.layer.type_name} layer {name!r} has no parameters "
                "to freeze"
            )


def freeze(net: Network, names: list[str]) -> None:
    """Freeze the layers ``names`` of an allocated network: the optimizer leaves their
    parameters as they are, and a batch norm keeps its running statistics."""
    check_freeze(net, names)
    for name in names:
        layer = net.layers[name]
        layer.freeze()
        if "trainable" in layer.config:  # a frozen batch norm normalises with its statistics
            layer.config["trainable"] = False


def init_from(net: Network, path: str | Path) -> Transfer:
    """Copy into an allocated ``net`` the weights and buffers of every layer of the
    checkpoint at ``path`` whose name and parameter shapes match; report the others."""
    run = read_run(path)
    saved = run.params | run.buffers
    transfer = Transfer(str(path))
    for node in net.nodes:
        arrays = node.layer.params | node.layer.buffers
        if not arrays:
            continue
        keys = {key: f"{node.name}.{key}" for key in arrays}
        missing = [full for full in keys.values() if full not in saved]
        mismatched = [
            f"{full} {_shape(arrays[key].shape)} here, {_shape(saved[full].shape)} there"
            for key, full in keys.items()
            if full in saved and saved[full].shape != arrays[key].shape
        ]
        broken = [full for full in keys.values() if full in saved and not _finite(saved[full])]
        if len(missing) == len(keys):
            transfer.skipped.append((node.name, "missing from the checkpoint"))
        elif broken:
            transfer.skipped.append((node.name, f"{broken[0]} holds NaN or infinite values"))
        elif missing or mismatched:
            why = mismatched or [f"{full} missing" for full in missing]
            transfer.skipped.append((node.name, f"shape mismatch: {'; '.join(why)}"))
        else:
            for key, full in keys.items():
                arrays[key][...] = saved[full]
            transfer.loaded.append(node.name)
    return transfer


def _finite(array: np.ndarray) -> bool:
    return array.dtype.kind != "f" or bool(np.isfinite(array).all())


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"
