"""The layer table: output shapes, parameter counts and multiply-adds, with totals."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cnnbuild.limits import format_bytes
from cnnbuild.tables import aligned

if TYPE_CHECKING:
    from cnnbuild.graph import Network


@dataclass
class Row:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int  # trainable
    buffers: int  # non-trainable (batch-norm running statistics)
    macs: int  # multiply-adds per image
    inputs: list[str]  # shown where they are not just the layer before


@dataclass
class Summary:
    name: str
    input_shape: tuple[int, ...]
    classes: int
    batch_size: int
    rows: list[Row]
    trainable: int
    non_trainable: int
    param_bytes: int
    macs: int
    activation_bytes: int  # every layer's output at the batch size, kept for backward

    def __str__(self) -> str:
        return render(self)


def summarize(net: Network, batch_size: int = 128) -> Summary:
    """Exact counts for ``net``, built or only planned (counts come from the shapes the
    layers declare); activation memory assumes training at ``batch_size``."""
    rows = []
    previous = "input"
    for node in net.nodes:
        layer = node.layer
        shown_inputs = node.inputs if node.inputs != [previous] else []
        rows.append(
            Row(
                name=node.name,
                type=layer.type_name,
                output_shape=node.output_shape,
                params=_values(layer.parameter_shapes(node.input_shapes)),
                buffers=_values(layer.buffer_shapes(node.input_shapes)),
                macs=int(layer.macs(node.input_shapes, node.output_shape)),
                inputs=list(shown_inputs),
            )
        )
        previous = node.name
    itemsize = max((p.itemsize for p in net.params.values()), default=4)
    trainable = sum(row.params for row in rows)
    non_trainable = sum(row.buffers for row in rows)
    values = math.prod(net.input_shape) + sum(math.prod(r.output_shape) for r in rows)
    return Summary(
        name=net.name,
        input_shape=net.input_shape,
        classes=net.classes,
        batch_size=batch_size,
        rows=rows,
        trainable=trainable,
        non_trainable=non_trainable,
        param_bytes=(trainable + non_trainable) * itemsize,
        macs=sum(row.macs for row in rows),
        activation_bytes=values * batch_size * itemsize,
    )


def render(summary: Summary, fmt: str = "table") -> str:
    """``table`` (plain text), ``markdown`` or ``json``."""
    if fmt == "json":
        return json.dumps(asdict(summary), indent=2)
    header = ["layer", "type", "output shape", "params", "mult-adds", "inputs"]
    body = [
        [
            row.name,
            row.type,
            _shape(row.output_shape),
            f"{row.params + row.buffers:,}",
            f"{row.macs:,}",
            ", ".join(row.inputs),
        ]
        for row in summary.rows
    ]
    if not any(row.inputs for row in summary.rows):
        header, body = header[:-1], [line[:-1] for line in body]
    totals = [
        ("Trainable parameters", f"{summary.trainable:,}"),
        ("Non-trainable parameters", f"{summary.non_trainable:,}"),
        ("Parameter memory", format_bytes(summary.param_bytes)),
        ("Mult-adds per image", f"{summary.macs:,}"),
        (
            f"Activation memory (training, batch {summary.batch_size})",
            format_bytes(summary.activation_bytes),
        ),
    ]
    title = f"{summary.name}: input {_shape(summary.input_shape)}, {summary.classes} classes"
    if fmt == "markdown":
        return _markdown(title, header, body, totals)
    return _table(title, header, body, totals)


def _table(title: str, header: list[str], body: list[list[str]], totals) -> str:
    numeric = {i for i, name in enumerate(header) if name in ("params", "mult-adds")}
    label_width = max(len(label) for label, _ in totals)
    lines = [title, "", *aligned(header, body, numeric)]
    lines += [f"{label + ':':<{label_width + 1}}  {value}" for label, value in totals]
    return "\n".join(lines)


def _markdown(title: str, header: list[str], body: list[list[str]], totals) -> str:
    align = ["---:" if name in ("params", "mult-adds") else "---" for name in header]
    rows = [header, align, *body]
    lines = [f"**{title}**", "", *("| " + " | ".join(cells) + " |" for cells in rows), ""]
    lines += [f"- {label}: {value}" for label, value in totals]
    return "\n".join(lines)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _values(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())
