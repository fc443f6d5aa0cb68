"""``cnnbuild diff A B``: how two networks (spec files or checkpoints) differ: the layers
added, removed and changed (options, inputs, output shape, parameters, multiply-adds),
matched by name, then the totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnbuild.builder import plan
from cnnbuild.graph import Network
from cnnbuild.limits import format_bytes
from cnnbuild.summary import Row, Summary, summarize


@dataclass
class Side:
    """One of the networks compared: what ``summarize`` says, and each layer's options."""

    net: Network
    summary: Summary
    rows: dict[str, Row]
    options: dict[str, dict[str, Any]]


def read_network(source: str, overrides: tuple[str, ...] = ()) -> Network:
    """The network (planned, no weights) of a spec file, or of a checkpoint (``.npz``)."""
    from cnnbuild.inference import checked_run
    from cnnbuild.overrides import read_spec

    spec = checked_run(source)[1] if source.endswith(".npz") else read_spec(source, overrides)
    return plan(spec)


def diff(a: str, b: str, batch_size: int = 128) -> tuple[str, bool]:
    """The report of how the networks of ``a`` and ``b`` differ, and whether they do."""
    old, new = (_side(read_network(source), batch_size) for source in (a, b))
    lines = [
        *_top_level(old.net, new.net),
        *(f"- {_layer(old, name)}" for name in old.rows if name not in new.rows),
        *(f"+ {_layer(new, name)}" for name in new.rows if name not in old.rows),
    ]
    lines += [
        f"~ {name} ({old.rows[name].type}): {'; '.join(changes)}"
        for name in old.rows
        if name in new.rows and (changes := _changes(old, new, name))
    ]
    if not lines:
        return f"{a} and {b} are the same network ({len(old.rows)} layers)", False
    lines += ["", *_totals(old.summary, new.summary)]
    return "\n".join([f"--- {a}", f"+++ {b}", *lines]), True


def _side(net: Network, batch_size: int) -> Side:
    summary = summarize(net, batch_size)
    options = {node.name: node.layer.config for node in net.nodes}
    return Side(net, summary, {row.name: row for row in summary.rows}, options)


def _top_level(old: Network, new: Network) -> list[str]:
    pairs = [
        ("input", old.input_shape, new.input_shape),
        ("classes", old.classes, new.classes),
    ]
    return [f"~ {key}: {_shown(a)} -> {_shown(b)}" for key, a, b in pairs if a != b]


def _layer(side: Side, name: str) -> str:
    row = side.rows[name]
    return (
        f"{name} ({row.type}): output {_shown(row.output_shape)}, "
        f"{row.params + row.buffers:,} params, {row.macs:,} mult-adds"
    )


def _changes(old: Side, new: Side, name: str) -> list[str]:
    a, b = old.rows[name], new.rows[name]
    changes = [f"type {a.type} -> {b.type}"] if a.type != b.type else []
    before, after = old.options[name], new.options[name]
    changes += [
        f"{key} {_shown(before.get(key, '-'))} -> {_shown(after.get(key, '-'))}"
        for key in dict.fromkeys([*before, *after])
        if before.get(key) != after.get(key)
    ]
    if a.inputs != b.inputs:  # as the summary shows them: none for the layer before
        changes.append(f"inputs {_inputs(a)} -> {_inputs(b)}")
    if a.output_shape != b.output_shape:
        changes.append(f"output {_shown(a.output_shape)} -> {_shown(b.output_shape)}")
    for what, x, y in (
        ("params", a.params + a.buffers, b.params + b.buffers),
        ("mult-adds", a.macs, b.macs),
    ):
        if x != y:
            changes.append(f"{what} {x:,} -> {y:,}")
    return changes


def _inputs(row: Row) -> str:
    return ", ".join(row.inputs) or "the layer before"


def _totals(old: Summary, new: Summary) -> list[str]:
    rows = [
        ("Trainable parameters", old.trainable, new.trainable, _count),
        ("Non-trainable parameters", old.non_trainable, new.non_trainable, _count),
        ("Parameter memory", old.param_bytes, new.param_bytes, format_bytes),
        ("Mult-adds per image", old.macs, new.macs, _count),
        (
            f"Activation memory (training, batch {old.batch_size})",
            old.activation_bytes,
            new.activation_bytes,
            format_bytes,
        ),
    ]
    width = max(len(label) for label, *_ in rows) + 1
    return [
        f"{label + ':':<{width}}  {shown(a)} -> {shown(b)} ({_delta(a, b, shown)})"
        for label, a, b, shown in rows
    ]


def _delta(a: int, b: int, shown) -> str:
    if a == b:
        return "same"
    sign = "+" if b > a else "-"
    percent = f", {sign}{abs(b - a) / a:.1%}" if a else ""
    return f"{sign}{shown(abs(b - a))}{percent}"


def _count(value: int) -> str:
    return f"{value:,}"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
