"""Architecture diagrams: one box per layer (name, type, key options, output shape,
parameters), edges along ``inputs``, repeat blocks as clusters, merges drawn as joins.

DOT and Mermaid are text written here, with no dependency; SVG and PNG are DOT rendered by
Graphviz (the ``graphviz`` package of the ``diagram`` extra, and its ``dot`` program).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cnnbuild.errors import CnnbuildError
from cnnbuild.graph import INPUT
from cnnbuild.options import REQUIRED
from cnnbuild.summary import summarize

if TYPE_CHECKING:
    from cnnbuild.graph import Network, Node

FORMATS = ("dot", "mermaid", "svg", "png")
MERGES = ("add", "concat")  # drawn as joins


@dataclass
class _Block:
    """A repetition of a repeat block and what it holds: its layers and inner blocks."""

    name: str
    nodes: list[str] = field(default_factory=list)
    inner: dict[str, _Block] = field(default_factory=dict)


def diagram(net: Network, fmt: str = "dot") -> str | bytes:
    """``net`` (built or only planned) drawn in ``fmt``: text for dot and mermaid, bytes
    for svg and png."""
    if fmt == "mermaid":
        return to_mermaid(net)
    if fmt == "dot":
        return to_dot(net)
    return render(to_dot(net), fmt)


def to_dot(net: Network) -> str:
    """The Graphviz DOT text of ``net``."""
    input_label = _quote("\n".join(["input", _shape(net.input_shape)]))
    lines = [
        f"digraph {_quote(net.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
        f"  {INPUT} [label={input_label}, shape=oval];",
    ]
    labels = {name: _quote("\n".join(lines)) for name, lines in _labels(net).items()}

    def emit(block: _Block, indent: str) -> None:
        for name in block.nodes:
            lines.append(f"{indent}{name} [label={labels[name]}{_join_style(net, name)}];")
        for inner in block.inner.values():
            lines.append(f"{indent}subgraph {_quote('cluster_' + inner.name)} {{")
            lines.append(f'{indent}  label={_quote(inner.name)}; style="dashed";')
            emit(inner, indent + "  ")
            lines.append(f"{indent}}}")

    emit(_blocks(net), "  ")
    lines += [f"  {source} -> {node.name};" for node in net.nodes for source in node.inputs]
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(net: Network) -> str:
    """The Mermaid flowchart of ``net`` (renders on GitHub and in most Markdown viewers)."""
    lines = ["flowchart TB", f'  n_{INPUT}(["input<br/>{_shape(net.input_shape)}"])']
    labels = _labels(net)

    def emit(block: _Block, indent: str) -> None:
        for name in block.nodes:  # ids get a prefix: a layer may be called "end"
            text = "<br/>".join(_mermaid_escape(line) for line in labels[name])
            joins = net.layers[name].type_name in MERGES
            box = f'(("{text}"))' if joins else f'["{text}"]'
            lines.append(f"{indent}n_{name}{box}")
        for inner in block.inner.values():
            lines.append(f"{indent}subgraph b_{inner.name} [{inner.name}]")
            emit(inner, indent + "  ")
            lines.append(f"{indent}end")

    emit(_blocks(net), "  ")
    lines += [f"  n_{source} --> n_{node.name}" for node in net.nodes for source in node.inputs]
    return "\n".join(lines) + "\n"


def render(dot: str, fmt: str) -> bytes:
    """DOT rendered by Graphviz as ``fmt`` (svg or png); CnnbuildError saying what to install
    when Graphviz is missing."""
    try:
        import graphviz
    except ImportError:
        raise CnnbuildError(
            f"--format {fmt} needs Graphviz: pip install 'cnnbuild[diagram]', and the dot "
            "program (apt-get install graphviz, brew install graphviz, or graphviz.org); "
            "--format dot and mermaid need nothing"
        ) from None
    if shutil.which("dot") is None:
        raise CnnbuildError(
            f"--format {fmt} needs Graphviz's dot program: apt-get install graphviz (or brew "
            "install graphviz, or graphviz.org); --format dot and mermaid need nothing"
        )
    return graphviz.Source(dot).pipe(format=fmt)


def _labels(net: Network) -> dict[str, list[str]]:
    """Each layer's lines: name and type, its key options, output shape and parameters."""
    rows = {row.name: row for row in summarize(net).rows}
    labels = {}
    for node in net.nodes:
        row = rows[node.name]
        lines = [f"{node.name}: {node.layer.type_name}"]
        options = _key_options(node)
        if options:
            lines.append(options)
        count = row.params + row.buffers
        lines.append(_shape(node.output_shape) + (f" · {count:,} params" if count else ""))
        labels[node.name] = lines
    return labels


def _key_options(node: Node) -> str:
    """The options given a value other than their default (required ones included)."""
    layer = node.layer
    shown = [
        f"{key} {str(value).lower() if isinstance(value, bool) else value}"
        for key, value in layer.config.items()
        if layer.options[key].default is REQUIRED or value != layer.options[key].default
    ]
    return ", ".join(shown)


def _blocks(net: Network) -> _Block:
    """The layers arranged in their repeat blocks (the top level holds the others)."""
    top = _Block("")
    for node in net.nodes:
        block = top
        for name in node.blocks:
            block = block.inner.setdefault(name, _Block(name))
        block.nodes.append(node.name)
    return top


def _join_style(net: Network, name: str) -> str:
    if net.layers[name].type_name in MERGES:
        return ', shape=ellipse, style="filled", fillcolor="#eeeeee"'
    return ""


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _quote(text: str) -> str:
    """A DOT string: double quotes, with quotes and backslashes escaped (\\n kept)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _mermaid_escape(text: str) -> str:
    return text.replace('"', "#quot;")
