"""``constraints:`` in a spec: limits the network must stay within (parameters,
multiply-adds, activation memory), checked by ``validate``, ``summary``, ``train`` (before
anything is allocated) and sweeps (which skip a variant that breaks one).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cnnbuild.errors import SpecError
from cnnbuild.limits import format_bytes
from cnnbuild.summary import summarize

if TYPE_CHECKING:
    from cnnbuild.graph import Network
    from cnnbuild.specfile import Spec

DEFAULT_BATCH_SIZE = 128  # what `training.batch_size` defaults to
UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}
UNITS |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


class ConstraintError(SpecError):
    """The network breaks one or more of its spec's ``constraints``."""


def check_constraints(spec: Spec, net: Network, batch_size: int | None = None) -> None:
    """Raise ConstraintError, naming each constraint ``net`` breaks, its value and the limit,
    located at the constraint in the file. Activation memory is measured at ``batch_size``,
    by default the spec's ``training.batch_size`` (128 when it has none)."""
    limits = spec.data.get("constraints") or {}
    if not limits:
        return
    if batch_size is None:
        batch_size = (spec.data.get("training") or {}).get("batch_size", DEFAULT_BATCH_SIZE)
    summary = summarize(net, batch_size)
    measured = {
        "max_params": (summary.trainable, "trainable parameters", _count),
        "max_mult_adds": (summary.macs, "multiply-adds per image", _count),
        "max_activation_memory": (
            summary.activation_bytes,
            f"of activations in training at batch {batch_size:,}",
            format_bytes,
        ),
    }
    problems = []
    for key, limit in limits.items():
        value, what, shown = measured[key]
        limit = parse_size(limit)
        if value > limit:
            problems.append(
                spec.problem(
                    ("constraints", key),
                    f"{key}: the network has {shown(value)} {what}, over the limit of "
                    f"{shown(limit)} — make it smaller (fewer filters, units or layers) or "
                    "raise the limit",
                )
            )
    if problems:
        raise ConstraintError(problems)


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a size such as ``256 MiB`` or ``1.5 GB`` (the schema has
    checked its form)."""
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"([\d.]+) ?([A-Za-z]+)", value).groups()
    return int(float(number) * UNITS[unit])


def _count(value: int) -> str:
    return f"{value:,}"
