"""Parametrised blocks: the ``blocks:`` a spec defines and the ``use:`` items of its layers.

A definition declares its parameters (``params``; a null default: required) and its layers,
in which a string ``$NAME`` stands for a parameter's whole value. ``definition_problems``
checks the definitions and every use once the schema has passed; ``resolve`` turns each use
into a repeat block of substituted layers, which the builder expands like any other, naming
them ``<use>_<layer>`` (``<use>_<i>_<layer>`` with ``repeat``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cnnbuild.errors import SpecError
from cnnbuild.specfile import (
    PARAM,
    Path_,
    Spec,
    block_params,
    data_at,
    describe_path,
    item_problems,
)


@dataclass(frozen=True)
class UseSite:
    """What a resolved use remembers: its block, where the use stands, and whether its
    names are numbered by repetition (the use gave ``repeat``)."""

    block: str
    path: Path_
    numbered: bool


def resolve(spec: Spec) -> list[dict[str, Any]]:
    """The spec's layers with every use replaced by ``{"repeat", "name", "layers", "use":
    UseSite}``, its block's layers with the parameters substituted. Raises SpecError when a
    substituted value is invalid, located at the use and naming the definition's line."""
    blocks = spec.data.get("blocks") or {}
    problems: list[str] = []
    resolved: dict[str, list[dict[str, Any]]] = {}  # by block and arguments: shared lists
    counters: dict[str, int] = {}

    def walk(items: list[dict[str, Any]], path: Path_) -> list[dict[str, Any]]:
        out = []
        for index, item in enumerate(items):
            item_path = (*path, index)
            if "use" in item:
                out.append(use(item, item_path))
            elif "repeat" in item:
                out.append({**item, "layers": walk(item["layers"], (*item_path, "layers"))})
            else:
                out.append(item)
        return out

    def use(item: dict[str, Any], site: Path_) -> dict[str, Any]:
        name = item["use"]
        args = {key: item.get(key, default) for key, default in block_params(blocks[name]).items()}
        key = json.dumps([name, args], sort_keys=True, default=str)
        if key not in resolved:
            layers = substitute(blocks[name]["layers"], args)
            problems.extend(_value_problems(spec, name, layers, site, args))
            resolved[key] = walk(layers, ("blocks", name, "layers"))
        counters[name] = counters.get(name, 0) + 1
        return {
            "repeat": item.get("repeat", 1),
            "name": item.get("name", f"{name}{counters[name]}"),
            "layers": resolved[key],
            "use": UseSite(name, site, "repeat" in item),
            "changes": item.get("changes"),
        }

    layers = walk(spec.data["layers"], ("layers",))
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    return layers


def substitute(value: Any, args: dict[str, Any]) -> Any:
    """``value`` with every ``$NAME`` string replaced by ``args[NAME]``."""
    if isinstance(value, str):
        match = PARAM.fullmatch(value)
        return args[match[1]] if match else value
    if isinstance(value, dict):
        return {key: substitute(item, args) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, args) for item in value]
    return value


def problem_in_use(
    spec: Spec, sites: tuple[Path_, ...], path: Path_, message: str, at_key: bool = False
) -> str:
    """A problem at ``path`` inside a block's definition, reached through the uses at
    ``sites`` (outermost first): located at the outermost use, naming each inner use and
    the definition's line."""
    steps = [*sites[1:], path]
    chain = " -> ".join(_described(spec, step, at_key and step is path) for step in steps)
    return spec.problem(sites[0], f"{chain}: {message}")


def _value_problems(
    spec: Spec, block: str, layers: list[dict[str, Any]], site: Path_, args: dict[str, Any]
) -> list[str]:
    """Problems of a block's layers with the use's arguments substituted."""
    problems = []
    for index, item in enumerate(layers):
        for path, message, at_key in item_problems(item, ("blocks", block, "layers", index)):
            written = data_at(spec.data, path)
            match = PARAM.fullmatch(written) if isinstance(written, str) else None
            origin = f" (from {match[1]}: {json.dumps(args[match[1]])})" if match else ""
            problems.append(problem_in_use(spec, (site,), path, message + origin, at_key))
    return problems


def _described(spec: Spec, path: Path_, at_key: bool) -> str:
    label = describe_path(spec.data, path)
    return f"{label} (line {spec.mark(path, at_key).line})" if spec.marks else label
