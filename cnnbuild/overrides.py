"""``--set PATH=VALUE``: change one value of a spec before it is checked.

PATH is dotted: ``training.optimizer.lr``, ``input``, ``input.0``; layers by name,
``layers.conv1.filters`` or just ``conv1.filters`` (names as written in the file, or the
default ``<type><n>`` of an unnamed layer outside repeat blocks); a repeat block by its name,
``stage1.conv.filters`` (every repetition) or ``stage1.repeat``. VALUE is YAML, read as plain
data (``[1, 28, 28]``, ``{type: sgd}``, ``true``, ``1e-3``); an empty VALUE is null.

Missing mappings on the way are created (``training.augment.flip=true`` works in a file
without ``augment``); whether a key is allowed there is the schema's to say, and its message
then names ``--set PATH`` instead of a line of the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cnnbuild.errors import SpecError
from cnnbuild.options import did_you_mean
from cnnbuild.specfile import PLAIN_TAGS, Spec, uses
from cnnbuild.specfile import read_spec as read_plain_spec

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
    """The value PATH names in ``data``; None where it does not exist."""
    try:
        path, _ = _resolve(data, path_text, f"--set {path_text}")
    except SpecError:
        return None
    node: Any = data
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


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
    first = segments[0]
    if first not in TOP_LEVEL and first not in data and isinstance(data.get("layers"), list):
        path, node = ("layers",), data["layers"]  # a layer name: `conv1.filters`
    created: list[tuple] = []
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if node is _MISSING:  # inside a mapping that the override creates
            path = (*path, segment)
            if not last:
                created.append(path)
            continue
        if isinstance(node, list):
            if position == 0 and not (_repetition_of(segment, data) or _use_of(segment, data)):
                known = _names_here(node, path, names)
                if segment not in known:
                    raise SpecError([_no_top_level(segment, list(known), flag)])
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
                raise SpecError([_no_top_level(segment, list(known), flag)])
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
        if isinstance(node, dict) and step not in node:
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
    used = _use_of(segment, data)
    if used:
        use, block, inner = used
        raise SpecError(
            [
                f"{flag}: {segment!r} is the layer {inner!r} of {use!r}, a use of the block "
                f"{block!r}; set a parameter of the use ({use}.PARAM=VALUE) or the block's "
                f"definition, in every use (blocks.{block}.layers.{inner}.KEY=VALUE)"
            ]
        )
    expanded = _repetition_of(segment, data)
    if expanded:
        block, number, inner = expanded
        raise SpecError(
            [
                f"{flag}: {segment!r} is the layer {inner!r} of repetition {number} of the block "
                f"{block!r}; --set changes a block's layer in every repetition "
                f"({block}.{inner}.KEY=VALUE) — to change one repetition, write the block out "
                "in the file"
            ]
        )
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


def _no_top_level(segment: str, layers: list[str], flag: str) -> str:
    hint = did_you_mean(segment, [*TOP_LEVEL, *layers])
    shown = ", ".join(layers) or "none"
    return (
        f"{flag}: no key or layer named {segment!r}{hint}; top-level keys: "
        f"{', '.join(TOP_LEVEL)}; layers: {shown}"
    )


def _layer_names(data: dict[str, Any]) -> dict[tuple, str]:
    """The default names (``dense1``) of unnamed layers outside repeat blocks, by data path;
    empty when the layers cannot be expanded (the checks after the overrides say why)."""
    from cnnbuild.blocks import resolve
    from cnnbuild.builder import _assign_default_names, _expand
    from cnnbuild.graph import INPUT

    try:
        items = resolve(Spec(data=data))
        planned = _expand(items, ("layers",), block_input=INPUT, counters={})
        _assign_default_names(planned)
    except Exception:  # an invalid file: validation reports it after the overrides
        return {}
    return {layer.path: layer.name for layer in planned if len(layer.path) == 2}


def _repetition_of(segment: str, data: dict[str, Any]) -> tuple[str, int, str] | None:
    """(block, repetition, inner name) when ``segment`` is the expanded name of a layer in a
    repeat block, such as ``stage1_2_conv``."""
    stack = [data.get("layers")]
    while stack:
        items = stack.pop()
        for item in items if isinstance(items, list) else ():
            if not (isinstance(item, dict) and _is_block(item)):
                continue
            block = str(item.get("name", ""))
            match = re.fullmatch(rf"{re.escape(block)}_(\d+)_(.+)", segment) if block else None
            if match:
                return block, int(match.group(1)), match.group(2)
            stack.append(item["layers"])
    return None


def _use_of(segment: str, data: dict[str, Any]) -> tuple[str, str, str] | None:
    """(use, block, inner name) when ``segment`` is the expanded name of a layer of a named
    use of a block, such as ``s1_dw`` or ``s2_1_dw``."""
    for item, _ in _uses(data):
        name = item.get("name")
        named = isinstance(name, str)
        match = re.fullmatch(rf"{re.escape(name)}_(\d+_)?(.+)", segment) if named else None
        if match:
            return name, str(item["use"]), match.group(2)
    return None


def _uses(data: dict[str, Any]) -> list[tuple[dict[str, Any], tuple]]:
    try:
        return list(uses(data))
    except (KeyError, TypeError, AttributeError):  # invalid: the checks after say why
        return []


def _inside_use(node: dict[str, Any], segment: str, flag: str) -> str:
    block = node["use"]
    return (
        f"{flag}: {node.get('name', block)!r} uses the block {block!r}, whose layers are set in "
        f"its definition (blocks.{block}.layers.{segment}.KEY=VALUE, in every use); here set "
        "its parameters, e.g. --set NAME.PARAM=VALUE"
    )


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "the text"}
    return names.get(type(value), "the value")
