"""``--set PATH=VALUE``: change one value of a spec before it is checked.

PATH is dotted: ``training.optimizer.lr``, ``input``, ``input.0``; layers by name,
``layers.conv1.filters`` or just ``conv1.filters`` (names as written in the file, or the
default ``<type><n>`` of an unnamed layer outside repeat blocks); a repeat block by its name,
``stage1.conv.filters`` (every repetition) or ``stage1.repeat``; one layer of a repeat block
or a use by the name ``summary`` shows, ``stage1_2_conv.filters`` (written to the block's
``changes``). VALUE is YAML, read as plain
data (``[1, 28, 28]``, ``{type: sgd}``, ``true``, ``1e-3``); an empty VALUE is null.

Missing mappings on the way are created (``training.augment.flip=true`` works in a file
without ``augment``); whether a key is allowed there is the schema's to say, and its message
then names ``--set PATH`` instead of a line of the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cnnbuild.errors import SpecError
from cnnbuild.options import did_you_mean
from cnnbuild.specfile import PLAIN_TAGS, Spec, data_at
from cnnbuild.specfile import read_spec as read_plain_spec

if TYPE_CHECKING:
    from cnnbuild.builder import Planned

TOP_LEVEL = ("name", "input", "classes", "layers", "training", "blocks", "constraints", "sweep")
BLOCK_KEYS = ("repeat", "name", "layers")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def read_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """``specfile.read_spec`` with ``overrides`` (``PATH=VALUE`` texts) applied before the
    checks, so that every message still says where: ``--set PATH`` or FILE:LINE:COL."""
    if not overrides:
        return read_plain_spec(path)
    return read_plain_spec(path, lambda spec: apply_overrides(spec, overrides))


def apply_overrides(spec: Spec, overrides: Sequence[str]) -> None:
    """Apply each ``PATH=VALUE`` to ``spec.data`` in order (in place), recording in
    ``spec.overridden`` the paths each one wrote or created, so messages name it."""
    for text in overrides:
        path_text, value = parse_override(text)
        flag = f"--set {path_text}"
        path, created = _resolve(spec.data, path_text, flag)
        _assign(spec.data, path, value)
        for written in (*created, path):
            spec.overridden[written] = flag
        spec.overrides.append(text)


def value_at(data: dict[str, Any], path_text: str) -> Any:
    """The value PATH names in ``data``; None where it does not exist. A layer of a repeat
    block or use that its block's ``changes`` leave alone has its layer's value."""
    try:
        path, _ = _resolve(data, path_text, f"--set {path_text}")
    except SpecError:
        return None
    value = data_at(data, path)
    name, *keys = path_text.split(".")
    layer = _block_layers(data).get(name) if value is None and len(keys) == 1 else None
    return layer.config.get(keys[0]) if layer else value


def parse_override(text: str) -> tuple[str, Any]:
    """``PATH=VALUE`` -> (PATH, the value read as plain YAML)."""
    path, sep, raw = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError([f"--set {text}: write PATH=VALUE, e.g. --set training.optimizer.lr=0.003"])
    segments = path.split(".")
    if any(not segment for segment in segments):
        raise SpecError([f"--set {path}: empty part in the path — write keys joined by '.'"])
    return path, parse_value(raw, f"--set {path}")


def parse_value(raw: str, flag: str) -> Any:
    """``raw`` read as YAML holding plain data only (no tags); a number YAML 1.1 reads as
    text (``1e-3``) is a number."""
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError([f"{flag}: the value {raw!r} is not valid YAML: {problem}"]) from None
    if node is None:
        return None
    stack = [node]
    while stack:
        current = stack.pop()
        if current.tag not in PLAIN_TAGS:
            raise SpecError(
                [
                    f"{flag}: the tag {current.tag!r} is not allowed — values hold plain data "
                    "only: remove the tag"
                ]
            )
        if isinstance(current, yaml.MappingNode):
            stack.extend(part for pair in current.value for part in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    value = yaml.safe_load(raw)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    return value


def _resolve(data: dict[str, Any], path_text: str, flag: str) -> tuple[tuple, list[tuple]]:
    """The data path PATH names, and the paths of the mappings to create on the way."""
    segments: list[str] = path_text.split(".")
    names = _layer_names(data)
    path: tuple = ()
    node: Any = data
    created: list[tuple] = []
    named = segments[1:] if segments[0] == "layers" and len(segments) > 1 else segments
    layer = _block_layer(data, named[0], names)
    if layer is not None:  # one layer of a repetition or use: its block's `changes` entry
        segments = named
        path = (*_top_block(layer), "changes")
        node = data_at(data, path)
        if node is None:
            node = _MISSING
            created.append(path)
    elif segments[0] not in (*TOP_LEVEL, *data) and isinstance(data.get("layers"), list):
        path, node = ("layers",), data["layers"]  # a layer name: `conv1.filters`
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if node is _MISSING:  # inside a mapping that the override creates
            path = (*path, segment)
            if not last:
                created.append(path)
            continue
        if isinstance(node, list):
            if position == 0:
                known = _names_here(node, path, names)
                if segment not in known:
                    raise SpecError([_no_top_level(segment, list(known), flag, data)])
            index = _list_index(node, segment, path, names, flag, data)
            path, node = (*path, index), node[index]
            continue
        if isinstance(node, dict):
            if segment not in node and _is_block(node) and segment not in BLOCK_KEYS:
                inner = node["layers"]
                index = _list_index(inner, segment, (*path, "layers"), names, flag, data)
                path, node = (*path, "layers", index), inner[index]
                continue
            if segment not in node and "use" in node and not last:
                raise SpecError([_inside_use(node, segment, flag)])
            if segment not in node and not path and segment not in TOP_LEVEL:
                layers = data.get("layers") if isinstance(data.get("layers"), list) else []
                known = _names_here(layers, ("layers",), _layer_names(data))
                raise SpecError([_no_top_level(segment, list(known), flag, data)])
            path = (*path, segment)
            if segment in node:
                node = node[segment]
            else:
                node = _MISSING
                if not last:
                    created.append(path)
            continue
        where = ".".join(segments[:position]) or "the spec"
        raise SpecError(
            [
                f"{flag}: {where} is {_kind(node)} {node!r}, which holds no {segment!r} — "
                f"set {where} itself, e.g. --set {where}=VALUE"
            ]
        )
    return path, created


_MISSING = object()


def _assign(data: dict[str, Any], path: tuple, value: Any) -> None:
    node: Any = data
    for step in path[:-1]:
        if isinstance(node, dict) and node.get(step) is None:
            node[step] = {}
        node = node[step]
    node[path[-1]] = value


def _is_block(node: dict[str, Any]) -> bool:
    return "repeat" in node and isinstance(node.get("layers"), list)


def _list_index(
    items: list[Any], segment: str, path: tuple, names: dict[tuple, str], flag: str, data: Any
) -> int:
    """The index ``segment`` names in a list: a number, or in a layers list a layer's or a
    block's name."""
    if segment.isdigit():
        index = int(segment)
        if index < len(items):
            return index
        where = ".".join(map(str, path))
        raise SpecError(
            [f"{flag}: {where} has {len(items)} items (0 to {len(items) - 1}), no item {index}"]
        )
    if not path or path[-1] != "layers":
        where = ".".join(map(str, path))
        raise SpecError([f"{flag}: {where} is a list — give an index (0, 1, ...), not {segment!r}"])
    here = _names_here(items, path, names)
    if segment in here:
        return here[segment]
    where = "the layers" if len(path) == 1 else f"the block {_block_name(data, path)!r}"
    known = ", ".join(here) or "none"
    raise SpecError(
        [
            f"{flag}: no layer named {segment!r} in {where}{did_you_mean(segment, list(here))}; "
            f"layers there: {known}"
        ]
    )


def _names_here(items: list[Any], path: tuple, names: dict[tuple, str]) -> dict[str, int]:
    """Layer and block names in a layers list -> their index (written or default names)."""
    here = {}
    for index, item in enumerate(items):
        name = names.get((*path, index))
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            name = item["name"]
        if name:
            here[name] = index
    return here


def _block_name(data: Any, path: tuple) -> str:
    node = data
    for step in path[:-1]:
        node = node[step]
    return str(node.get("name", "block")) if isinstance(node, dict) else "block"


def _no_top_level(segment: str, layers: list[str], flag: str, data: dict[str, Any]) -> str:
    hint = did_you_mean(segment, [*TOP_LEVEL, *layers, *_block_layers(data)])
    shown = ", ".join(layers) or "none"
    return (
        f"{flag}: no key or layer named {segment!r}{hint}; top-level keys: "
        f"{', '.join(TOP_LEVEL)}; layers: {shown}"
    )


def _layer_names(data: dict[str, Any]) -> dict[tuple, str]:
    """The default names (``dense1``) of unnamed layers outside repeat blocks, by data path."""
    from cnnbuild.builder import _assign_default_names

    planned = _expanded(data)
    _assign_default_names(planned)
    return {layer.path: layer.name for layer in planned if len(layer.path) == 2}


def _block_layers(data: dict[str, Any]) -> dict[str, Planned]:
    """The layers of repeat blocks and uses by the name ``summary`` shows (``stage1_2_conv``,
    ``res_a_1_conv1``)."""
    return {layer.name: layer for layer in _expanded(data) if layer.name and layer.blocks}


def _expanded(data: dict[str, Any]) -> list[Planned]:
    """The spec's layers with its repeat blocks and uses expanded, as the builder plans them;
    empty when they cannot be (the checks after the overrides say why)."""
    from cnnbuild.blocks import resolve
    from cnnbuild.builder import _expand
    from cnnbuild.graph import INPUT

    try:
        return _expand(resolve(Spec(data=data)), ("layers",), INPUT, counters={})
    except Exception:  # an invalid file: validation reports it after the overrides
        return []


def _block_layer(data: dict[str, Any], name: str, names: dict[tuple, str]) -> Planned | None:
    """The layer of a repeat block or use that ``summary`` shows as ``name``; None when
    ``name`` is no such layer, or also names a top-level layer or block."""
    layer = _block_layers(data).get(name)
    if layer is None or name in _names_here(data["layers"], ("layers",), names):
        return None
    return layer


def _top_block(layer: Planned) -> tuple:
    """The data path of the top-level repeat block or use that holds ``layer``."""
    return (layer.sites[0] if layer.sites else layer.path)[:2]


def _inside_use(node: dict[str, Any], segment: str, flag: str) -> str:
    block = node["use"]
    return (
        f"{flag}: {node.get('name', block)!r} uses the block {block!r}, whose layers are set in "
        f"its definition (blocks.{block}.layers.{segment}.KEY=VALUE, in every use); here set "
        "its parameters (--set NAME.PARAM=VALUE), or one of its layers by the name `summary` "
        "shows (--set LAYER.KEY=VALUE)"
    )


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "the text"}
    return names.get(type(value), "the value")
