"""The layer table: output shapes, parameter counts and multiply-adds, with totals."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from cnnbuild.limits import format_bytes
from cnnbuild.shapes import Pair, dilated, pair
from cnnbuild.tables import aligned

if TYPE_CHECKING:
    from cnnbuild.graph import Network, Node


@dataclass
class Row:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int  # trainable
    buffers: int  # non-trainable (batch-norm running statistics)
    macs: int  # multiply-adds per image
    inputs: list[str]  # shown where they are not just the layer before
    receptive_field: tuple[int, int] = (1, 1)  # input pixels (height, width) one output sees


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
    fields = receptive_fields(net)
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
                receptive_field=fields[node.name],
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


def render(summary: Summary, fmt: str = "table", receptive_field: bool = False) -> str:
    """``table`` (plain text), ``markdown`` or ``json``; with ``receptive_field``, the table
    has a column of each layer's receptive field."""
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
    if receptive_field:
        header.insert(3, "receptive field")
        for line, row in zip(body, summary.rows, strict=True):
            line.insert(3, "x".join(map(str, row.receptive_field)))
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


# --- receptive fields, collapsed blocks, dropped edges ----------------------------------------


def receptive_fields(net: Network) -> dict[str, tuple[int, int]]:
    """Each layer's receptive field: the (height, width) of the input pixels one of its
    output values depends on (padding included). A merge takes the largest of its inputs';
    a layer that turns a map into features (global pooling, flatten, dense) sees all of it."""
    fields: dict[str, tuple[Pair, Pair]] = {"input": ((1, 1), (1, 1))}  # (field, jump)
    for node in net.nodes:
        sources = [fields[name] for name in node.inputs]
        field = tuple(max(source[0][axis] for source in sources) for axis in (0, 1))
        jump = tuple(max(source[1][axis] for source in sources) for axis in (0, 1))
        window = _window(node.layer)
        spatial_in = len(node.input_shapes[0]) == 3
        if window is not None and spatial_in:
            kernel, stride, dilation, _ = window
            field = tuple(
                field[axis] + (dilated(kernel[axis], dilation[axis]) - 1) * jump[axis]
                for axis in (0, 1)
            )
            jump = tuple(jump[axis] * stride[axis] for axis in (0, 1))
        elif spatial_in and len(node.output_shape) != 3:
            size = node.input_shapes[0][1:]
            field = tuple(field[axis] + (size[axis] - 1) * jump[axis] for axis in (0, 1))
        fields[node.name] = (field, jump)
    return {name: field for name, (field, _) in fields.items() if name != "input"}


def collapse(summary: Summary, net: Network, depth: int) -> Summary:
    """``summary`` with the layers of each block nested deeper than ``depth`` shown as one
    row (depth 0: one row per top-level block or repetition), named as the block's layers
    are prefixed; the totals stay as they are."""
    groups: list[tuple[tuple[str, ...], list[tuple[Row, Node]]]] = []
    for row, node in zip(summary.rows, net.nodes, strict=True):
        key = node.blocks[: depth + 1] if len(node.blocks) > depth else ()
        if key and groups and groups[-1][0] == key:
            groups[-1][1].append((row, node))
        else:
            groups.append((key, [(row, node)]))
    rows, shown, previous = [], {"input": "input"}, "input"
    for key, members in groups:
        name = "_".join(key) if key else members[0][0].name
        inside = {node.name for _, node in members}
        sources = [
            shown[source] for _, node in members for source in node.inputs if source not in inside
        ]
        sources = list(dict.fromkeys(sources))
        last = members[-1][0]
        rows.append(
            Row(
                name=name,
                type=f"{len(members)} layers" if key else last.type,
                output_shape=last.output_shape,
                params=sum(row.params for row, _ in members),
                buffers=sum(row.buffers for row, _ in members),
                macs=sum(row.macs for row, _ in members),
                inputs=sources if sources != [previous] else [],
                receptive_field=last.receptive_field,
            )
        )
        shown |= dict.fromkeys(inside, name)
        previous = name
    return replace(summary, rows=rows)


def dropped_edges(net: Network) -> list[str]:
    """A warning for each layer whose windows (kernel or pool size, at its stride) do not
    reach the last rows or columns of its input, which it then ignores (output sizes round
    down); strided windows narrower than their stride skip pixels by design and are not
    warned about."""
    warnings = []
    for node in net.nodes:
        window = _window(node.layer)
        if window is None or len(node.input_shapes[0]) != 3:
            continue
        kernel, stride, dilation, padding = window
        dropped = []
        for axis, what in ((0, "rows"), (1, "columns")):
            span = dilated(kernel[axis], dilation[axis])
            size = node.input_shapes[0][1 + axis]
            left = (size + 2 * padding[axis] - span) % stride[axis] - padding[axis]
            if left > 0 and span >= stride[axis]:
                dropped.append(f"the last {left} of its {size} {what}")
        if dropped:
            warnings.append(
                f"{node.name} ({node.layer.type_name}): windows of {_pair(kernel)} at stride "
                f"{_pair(stride)} never reach {' and '.join(dropped)}, which are ignored — "
                "pad the input, or change the size or stride"
            )
    return warnings


def _window(layer: object) -> tuple[Pair, Pair, Pair, Pair] | None:
    """(kernel, stride, dilation, padding) as (height, width) pairs for a layer that slides
    a window (conv, pooling), else None."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return None
    padding = getattr(layer, "padding", 0)
    return (
        pair(kernel),
        pair(getattr(layer, "stride", 1)),
        pair(getattr(layer, "dilation", 1)),
        pair(padding if not isinstance(padding, str) else 0),
    )


def _pair(values: Pair) -> str:
    return str(values[0]) if values[0] == values[1] else "x".join(map(str, values))
