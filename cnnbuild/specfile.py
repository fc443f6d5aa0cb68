"""Reading architecture files: safe YAML with line numbers, checked against the JSON Schema
that ``schema.py`` builds from the registered layers, optimizers and schedules.

Every problem is reported at once, each as
``FILE:LINE:COL: layers[3] 'conv2' (conv): what is wrong — how to fix it``.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbuild.errors import SpecError
from cnnbuild.limits import MAX_LAYERS, MAX_SPEC_BYTES
from cnnbuild.options import closest, did_you_mean

MAX_NODES = 100_000  # more than any real spec; stops alias bombs ("billion laughs")
PLAIN_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
}

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Spec:
    """A parsed architecture file: its data and where each value stands in the file."""

    data: dict[str, Any]
    source: str = "<spec>"
    marks: dict[Path_, Mark] = field(default_factory=dict)
    key_marks: dict[Path_, Mark] = field(default_factory=dict)
    # values set or created by `--set PATH=VALUE`: data path -> "--set PATH"
    overridden: dict[Path_, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # the PATH=VALUE texts, in order

    def override_at(self, path: Path_) -> str | None:
        """``--set PATH`` when ``path`` or a mapping holding it was set by an override."""
        while True:
            if path in self.overridden:
                return self.overridden[path]
            if not path:
                return None
            path = path[:-1]

    def mark(self, path: Path_, at_key: bool = False) -> Mark:
        """The position of ``path`` (or of its key), falling back to the nearest parent."""
        table = self.key_marks if at_key else self.marks
        while path:
            if path in table:
                return table[path]
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), Mark(1, 1))

    def where(self, path: Path_, at_key: bool = False) -> str:
        """``FILE:LINE:COL: layers[3] 'conv2' (conv)``: the prefix of every message."""
        mark = self.mark(path, at_key)
        context = describe_path(self.data, path)
        prefix = self.override_at(path)
        prefix = f"{prefix}:" if prefix else f"{self.source}:{mark.line}:{mark.column}:"
        return f"{prefix} {context}" if context else prefix

    def problem(self, path: Path_, message: str, at_key: bool = False) -> str:
        where = self.where(path, at_key)
        return f"{where} {message}" if where.endswith(":") else f"{where}: {message}"


def describe_path(data: Any, path: Path_) -> str:
    """Where ``path`` points, for messages: ``layers[3] 'conv2' (conv)`` inside a layer,
    else the mapping that holds the value (``training.optimizer``)."""
    node, trail, layer, parent = data, "", "", ""
    for index, step in enumerate(path):
        parent = trail
        owner, node = node, _child(node, step)
        trail = f"{trail}[{step}]" if isinstance(step, int) else f"{trail}.{step}".lstrip(".")
        if isinstance(step, int) and isinstance(node, dict):
            layer = f"{trail} {_layer_label(node)}".rstrip()
        elif step == "changes" and layer and index + 1 < len(path) and isinstance(owner, dict):
            layer += f", its change to {path[index + 1]!r}"
    if layer:
        return layer
    return parent if path and isinstance(path[-1], str) else trail


def _layer_label(layer: dict[str, Any]) -> str:
    label = []
    if isinstance(layer.get("name"), str):
        label.append(repr(layer["name"]))
    if isinstance(layer.get("type"), str):
        label.append(f"({layer['type']})")
    elif isinstance(layer.get("use"), str):
        label.append(f"(use: {layer['use']})")
    elif "repeat" in layer:
        label.append("(repeat block)")
    return " ".join(label)


def data_at(data: Any, path: Path_) -> Any:
    """The value at ``path`` in ``data``; None where there is none."""
    for step in path:
        data = _child(data, step)
    return data


def _child(node: Any, step: str | int) -> Any:
    try:
        return node[step]
    except (KeyError, IndexError, TypeError):
        return None


# --- reading YAML --------------------------------------------------------------------------


def read_spec(path: str | Path, edit: Callable[[Spec], None] | None = None) -> Spec:
    """Read and check ``path``, calling ``edit`` on the parsed spec before the checks
    (``cnnbuild.overrides.read_spec`` applies ``--set`` with it); raises SpecError listing
    every problem found.

    Reads at most MAX_SPEC_BYTES + 1 bytes, and only from a regular file: a FIFO, a device
    (``/dev/zero``) or a directory is refused before a byte is read.
    """
    path = Path(path)
    try:
        raw = _read_bounded(path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise SpecError([f"{path}: cannot read the file: {reason}"]) from None
    return parse_spec(raw, str(path), edit)


def _read_bounded(path: Path) -> bytes:
    # O_NONBLOCK: opening a FIFO does not wait for a writer; fstat then refuses it.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise SpecError(
            [
                f"{path}: not a regular file ({_file_kind(mode)}) — give the path of an "
                "architecture file, such as archs/mnist.yaml"
            ]
        )
    with os.fdopen(descriptor, "rb") as file:
        raw = file.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([_too_large(str(path))])
    return raw


def _written_layers(data: Any) -> int:
    """How many layers and blocks the file writes out (blocks not expanded), counted before
    the schema check, which would take long over a huge list."""
    count, seen = 0, set()
    stack = [data.get("layers")] if isinstance(data, dict) else []
    blocks = data.get("blocks") if isinstance(data, dict) else None
    if isinstance(blocks, dict):
        stack += [block.get("layers") for block in blocks.values() if isinstance(block, dict)]
    while stack:
        items = stack.pop()
        if not isinstance(items, list) or id(items) in seen:
            continue
        seen.add(id(items))
        count += len(items)
        stack.extend(item.get("layers") for item in items if isinstance(item, dict))
    return count


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _too_large(source: str) -> str:
    return (
        f"{source}: larger than {MAX_SPEC_BYTES / 2**20:g} MiB; an architecture file is a few "
        "KB — is this the right file?"
    )


def parse_spec(
    raw: bytes | str, source: str = "<spec>", edit: Callable[[Spec], None] | None = None
) -> Spec:
    """Parse YAML text (safe: no tags run), record positions, call ``edit`` on the spec
    (such as ``--set`` overrides), validate against the schema."""
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([_too_large(source)])
    spec = _load_yaml(_decode(raw, source), source)
    if edit is not None:
        edit(spec)
    return _checked(spec)


def spec_from_data(data: dict[str, Any], source: str) -> Spec:
    """Check already-parsed data (e.g. the architecture saved in a checkpoint)."""
    return _checked(Spec(data=data, source=source))


def _checked(spec: Spec) -> Spec:
    written = _written_layers(spec.data)
    if written > MAX_LAYERS:
        raise SpecError(
            [
                spec.problem(
                    ("layers",),
                    f"the file lists {written:,} layers, more than the {MAX_LAYERS:,} cnnbuild "
                    "builds — is this the right file? (write repeated layers once, in a "
                    "`repeat:` block)",
                )
            ]
        )
    try:
        problems = schema_problems(spec)
    except RecursionError:
        raise SpecError(
            [f"{spec.source}:1:1: lists or mappings are nested too deeply to read — flatten them"]
        ) from None
    if problems:
        raise SpecError(problems)
    return spec


def _decode(raw: bytes | str, source: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise SpecError(
            [
                f"{source}:{line}:{column}: byte 0x{raw[error.start]:02x} is not UTF-8 text "
                "— save the file as UTF-8"
            ]
        ) from None


def _load_yaml(text: str, source: str) -> Spec:
    loader = _CountingLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except _TooManyNodes:
            raise SpecError([_too_many_values(source)]) from None
        if node is None:
            raise SpecError(
                [f"{source}:1:1: the file is empty — see archs/mnist.yaml for a complete example"]
            )
        size = _expanded_size(node)
        if size is None:
            raise SpecError(
                [
                    f"{source}:1:1: an alias refers to a mapping or list that contains it, so "
                    "the document never ends — write the layers out or use `repeat:`"
                ]
            )
        if size > MAX_NODES:
            raise SpecError(
                [
                    f"{source}:1:1: the document expands to more than {MAX_NODES:,} values "
                    "(an alias bomb?) — write the layers out or use `repeat:`"
                ]
            )
        spec = Spec(data={}, source=source)
        problems = _check_nodes(node, spec)
        if problems:
            raise SpecError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        raise SpecError([_yaml_problem(error, source)]) from None
    except yaml.YAMLError as error:
        raise SpecError([f"{source}:1:1: not valid YAML: {error}"]) from None
    except RecursionError:
        raise SpecError(
            [f"{source}:1:1: lists or mappings are nested too deeply to read — flatten them"]
        ) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SpecError(
            [
                f"{source}:1:1: the top level must be a mapping with name, input, classes and "
                f"layers, not a {kind} — see archs/mnist.yaml for an example"
            ]
        )
    spec.data = data
    return spec


class _TooManyNodes(Exception):
    pass


class _CountingLoader(yaml.SafeLoader):
    """The safe loader, stopping as soon as it has composed more than MAX_NODES nodes, so a
    large file costs no more than that many to refuse."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.composed += 1
        if self.composed > MAX_NODES:
            raise _TooManyNodes
        return super().compose_node(parent, index)


def _too_many_values(source: str) -> str:
    return (
        f"{source}:1:1: the file holds more than {MAX_NODES:,} values; an architecture file "
        "holds a few hundred — is this the right file? (write repeated layers once, in a "
        "`repeat:` block)"
    )


def _yaml_problem(error: yaml.MarkedYAMLError, source: str) -> str:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = error.problem or "not valid YAML"
    hint = "check the indentation and the brackets around this point"
    if "\\t" in problem or "'\\t'" in str(error) or "tab" in problem:
        hint = "YAML does not allow tabs for indentation; indent with spaces"
    elif "could not determine a constructor" in problem:
        hint = "cnnbuild files hold plain data only: remove the tag"
    context = f" ({error.context})" if error.context else ""
    return f"{source}:{line}:{column}: {problem}{context} — {hint}"


def _check_nodes(root: yaml.Node, spec: Spec) -> list[str]:
    """Walk the node tree: record positions, refuse tags and duplicate keys."""
    problems: list[str] = []
    # (node, its path, the innermost list item holding it and that item's path: the layer)
    stack: list[tuple[yaml.Node, Path_, yaml.Node | None, Path_]] = [(root, (), None, ())]
    while stack:
        node, path, owner, owner_path = stack.pop()
        spec.marks.setdefault(path, Mark(_line(node), _column(node)))
        if node.tag not in PLAIN_TAGS:
            problems.append(
                f"{spec.source}:{_line(node)}:{_column(node)}: "
                f"{_context(owner, owner_path, path)}the tag {node.tag!r} is not "
                "allowed — cnnbuild files hold plain data only: remove the tag"
            )
            continue
        if isinstance(node, yaml.MappingNode):
            if path and isinstance(path[-1], int):
                owner, owner_path = node, path
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key_node.tag == "tag:yaml.org,2002:merge":
                    stack.append((value_node, path, owner, owner_path))
                    continue
                if key in seen:
                    first = seen[key]
                    problems.append(
                        f"{spec.source}:{_line(key_node)}:{_column(key_node)}: "
                        f"{_context(owner, owner_path, (*path, key))}duplicate key "
                        f"{key!r} (first at line {_line(first)}) — keep only one of them"
                    )
                    continue
                seen[key] = key_node
                child = (*path, key)
                spec.key_marks.setdefault(child, Mark(_line(key_node), _column(key_node)))
                stack.append((value_node, child, owner, owner_path))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i), owner, owner_path) for i, item in enumerate(node.value))
    return problems


def _expanded_size(root: yaml.Node) -> int | None:
    """How many nodes the document holds with every alias expanded (at most MAX_NODES + 1),
    counted without expanding any; None when a node contains itself through an alias. (The
    loader has already refused more than MAX_NODES nodes as written: a long file, not a
    bomb.)"""
    sizes: dict[int, int] = {}
    opened: set[int] = set()
    stack = [root]
    while stack:
        node = stack[-1]
        if id(node) in sizes:
            stack.pop()
            continue
        children = _children(node)
        if id(node) not in opened:
            opened.add(id(node))
            for child in children:
                if id(child) in opened and id(child) not in sizes:
                    return None  # an ancestor: the alias closes a loop
                stack.append(child)
            continue
        stack.pop()
        sizes[id(node)] = min(1 + sum(sizes[id(child)] for child in children), MAX_NODES + 1)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _context(owner: yaml.Node | None, owner_path: Path_, path: Path_) -> str:
    """``layers[3] 'conv1' (conv): `` for a problem at ``path`` inside the layer ``owner``,
    read from the scalars it holds (the document is not constructed yet)."""
    data: Any = {}
    for key, value in owner.value if isinstance(owner, yaml.MappingNode) else ():
        if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.ScalarNode):
            data.setdefault(key.value, value.value)
    for step in reversed(owner_path):
        data = {step: data}
    context = describe_path(data, path)
    return f"{context}: " if context else ""


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _column(node: yaml.Node) -> int:
    return node.start_mark.column + 1


# --- parametrised blocks -----------------------------------------------------------------------

PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")  # `$NAME` in a block: a parameter's value
USE_KEYS = ("use", "name", "repeat", "changes")  # the keys of a use that are not parameters


def item_problems(
    item: Any, prefix: Path_, keep: Callable[[Any], bool] | None = None
) -> list[tuple[Path_, str, bool]]:
    """``explain_errors`` for one item of a layers list standing at ``prefix``."""
    from cnnbuild.schema import item_validator

    return explain_errors(item_validator().iter_errors(item), prefix, keep)


def definition_problems(spec: Spec) -> list[tuple[Path_, str, bool]]:
    """(path, message, at the key) for each problem of the block definitions and of the
    uses, in a spec the schema accepts: layers that are invalid whatever the parameters,
    unknown ``$NAME`` references, unknown blocks and parameters, missing required ones, and
    blocks that use themselves."""
    blocks = spec.data.get("blocks") or {}
    problems: list[tuple[Path_, str, bool]] = []
    for name, block in blocks.items():
        params = list(block_params(block))
        for index, item in enumerate(block["layers"]):
            problems += item_problems(
                item,
                ("blocks", name, "layers", index),
                keep=lambda leaf: not _is_reference(leaf.instance),
            )
        for path, reference in _references(block["layers"], ("blocks", name, "layers")):
            if reference not in params:
                problems.append(
                    (
                        path,
                        f"unknown parameter '${reference}'"
                        f"{did_you_mean(f'${reference}', [f'${p}' for p in params])}; "
                        f"block {name!r} has "
                        f"{_listed(params)} — declare it under `params`",
                        False,
                    )
                )
    for item, path in uses(spec.data):
        problems += _use_problems(spec, item, path, blocks)
    return problems + _cycle_problems(blocks)


def _use_problems(
    spec: Spec, item: dict[str, Any], path: Path_, blocks: dict[str, Any]
) -> list[tuple[Path_, str, bool]]:
    name = item["use"]
    if name not in blocks:
        known = f"blocks defined: {', '.join(blocks)}" if blocks else "no blocks are defined"
        return [
            (
                (*path, "use"),
                f"unknown block {name!r}{did_you_mean(name, list(blocks))}; {known} — "
                "define it under `blocks:` at the top level",
                False,
            )
        ]
    params = block_params(blocks[name])
    defined = f"block {name!r}" + (
        f" (line {spec.mark(('blocks', name), at_key=True).line})" if spec.marks else ""
    )
    problems = [
        (
            (*path, key),
            f"unknown parameter {key!r}{did_you_mean(key, list(params))}; {defined} takes "
            f"{_listed(list(params))}",
            True,
        )
        for key in item
        if key not in USE_KEYS and key not in params
    ]
    problems += [
        (path, f"missing parameter {key!r}, which {defined} requires — add `{key}: VALUE`", False)
        for key, default in params.items()
        if default is None and item.get(key) is None
    ]
    return problems


def _cycle_problems(blocks: dict[str, Any]) -> list[tuple[Path_, str, bool]]:
    """A block that uses itself, directly or through others, at the use that closes the
    loop (once per loop)."""
    used = {
        name: list(uses({"layers": block["layers"]}, ("blocks", name, "layers")))
        for name, block in blocks.items()
    }
    problems, reported = [], set()

    def visit(name: str, trail: list[str]) -> None:
        for item, path in used.get(name, []):
            target = item["use"]
            if target in trail:
                loop = [*trail[trail.index(target) :], target]
                if frozenset(loop) not in reported:
                    reported.add(frozenset(loop))
                    problems.append(
                        (
                            path,
                            f"block {target!r} uses itself ({' -> '.join(loop)}) — a block "
                            "cannot contain itself; use `repeat` to chain copies",
                            False,
                        )
                    )
            elif target in used:
                visit(target, [*trail, target])

    for name in blocks:
        visit(name, [name])
    return problems


def uses(data: dict[str, Any], path: Path_ = ("layers",)) -> Iterator[tuple[dict, Path_]]:
    """Every use item in ``data["layers"]`` and the repeat blocks inside, with its path;
    from the top level (``path`` is ``("layers",)``) also those in block definitions."""
    stack = [(data["layers"], path)]
    if path == ("layers",):
        stack += [
            (block["layers"], ("blocks", name, "layers"))
            for name, block in (data.get("blocks") or {}).items()
        ]
    while stack:
        items, where = stack.pop()
        for index, item in enumerate(items):
            if isinstance(item.get("use"), str):
                yield item, (*where, index)
            elif "repeat" in item and isinstance(item.get("layers"), list):
                stack.append((item["layers"], (*where, index, "layers")))


def _references(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    """Each ``$NAME`` string in ``value``, with its path."""
    if _is_reference(value):
        yield path, PARAM.fullmatch(value)[1]
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _references(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, (*path, index))


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and PARAM.fullmatch(value) is not None


def block_params(block: dict[str, Any]) -> dict[str, Any]:
    return block.get("params") or {}


def _listed(names: list[str]) -> str:
    return ", ".join(names) if names else "no parameters"


# --- checking against the schema ----------------------------------------------------------


def schema_problems(spec: Spec) -> list[str]:
    """Every schema violation in ``spec``, as located messages (sorted by position)."""
    from cnnbuild.schema import validator

    found: dict[str, tuple[Mark, str]] = {}

    def add(path: Path_, message: str, at_key: bool = False) -> None:
        text = spec.problem(path, message, at_key)
        found.setdefault(text, (spec.mark(path, at_key), text))

    for path, message, at_key in explain_errors(validator().iter_errors(spec.data)):
        add(path, message, at_key)
    for path, value in _non_finite(spec.data):
        add(path, _non_finite_message(path, value))
    if not found:  # blocks and their uses, once their structure is sound
        for path, message, at_key in definition_problems(spec):
            add(path, message, at_key)
    return [text for _, text in sorted(found.values(), key=lambda item: (item[0].line, item[1]))]


def explain_errors(
    errors: Iterable[Any], prefix: Path_ = (), keep: Callable[[Any], bool] | None = None
) -> list[tuple[Path_, str, bool]]:
    """(path, message, whether at the key) for each of the most specific of ``errors``
    (jsonschema's, for a value at ``prefix``) that ``keep`` accepts."""
    leaves = [leaf for error in errors for leaf in _leaves(error)]
    leaves = [leaf for leaf in leaves if keep is None or keep(leaf)]
    # A misspelt key is also a missing one: say it once, as the unknown key, where the
    # schema names the unknown key too (a closed mapping), else as the missing one.
    closed = {
        (*prefix, *leaf.absolute_path)
        for leaf in leaves
        if leaf.validator == "additionalProperties"
    }
    explained = []
    for leaf in leaves:
        path = (*prefix, *leaf.absolute_path)
        found = _explain(leaf, path, path in closed)
        if found is not None:
            explained.append((found[2], found[0], found[1]))
    return explained


def _non_finite(data: Any) -> list[tuple[Path_, float]]:
    """The path of every NaN or infinite number in ``data`` (no option takes one)."""
    found: list[tuple[Path_, float]] = []
    stack: list[tuple[Any, Path_]] = [(data, ())]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                found.append((path, node))
        elif isinstance(node, (dict, list)) and id(node) not in seen:
            seen.add(id(node))  # aliases share a node: look inside it once
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((value, (*path, key)) for key, value in items)
    return found


def _non_finite_message(path: Path_, value: float) -> str:
    key = path[-1] if path and isinstance(path[-1], str) else None
    return f"{_name(key)} is {_yaml_float(value)} — write a finite number"


def _yaml_float(value: float) -> str:
    """How YAML writes a non-finite number: .nan, .inf, -.inf."""
    if math.isnan(value):
        return ".nan"
    return ".inf" if value > 0 else "-.inf"


def _leaves(error):
    """The most specific errors under a combinator (if/then, allOf, oneOf)."""
    if error.validator in ("allOf", "if", "then", "$ref") and error.context:
        for child in error.context:
            yield from _leaves(child)
    else:
        yield error


def _explain(error, path: Path_, closed: bool = False) -> tuple[str, bool, Path_] | None:
    """A message saying what is wrong and how to fix it, and whether to point at the key;
    None where another error already says it: a misspelt key is also a missing one, and
    where the mapping is ``closed`` the unknown key has its own message."""
    kind = error.validator
    value = error.instance
    schema = error.schema
    key = path[-1] if path and isinstance(path[-1], str) else None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # said once, by the walk over non-finite numbers
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = [k for k in value if k not in schema.get("properties", {})]
        extra = extras[0]
        message = f"unknown key {extra!r}{did_you_mean(str(extra), allowed)}"
        if len(extras) > 1:
            message = f"unknown keys {', '.join(map(repr, extras))}"
        return f"{message}; allowed keys: {', '.join(allowed)}", True, (*path, extra)
    if kind == "required":
        missing = next(key for key in error.validator_value if key not in value)
        written = [str(key) for key in value if key not in schema.get("properties", {})]
        # A layer without a type may be a repeat block or a use with its key misspelt.
        meant = [missing, "repeat", "use"] if missing == "type" and _is_item(path) else [missing]
        for target in meant:
            close = closest(target, written)
            if close and closed:
                return None
            if close:
                typo = next(key for key in value if str(key) == close)
                needed = f" ({target!r} is required)" if target == missing else ""
                return (
                    f"unknown key {typo!r} — did you mean {target!r}?{needed}",
                    True,
                    (*path, typo),
                )
        description = schema.get("properties", {}).get(missing, {}).get("description", "")
        hint = f" ({description})" if description else ""
        return f"missing required key {missing!r}{hint} — add it", False, path
    if kind == "enum":
        options = [str(v) for v in error.validator_value]
        what = "layer type" if key == "type" and _is_layer(path) else f"value for {key!r}"
        return (
            f"unknown {what} {value!r}{did_you_mean(str(value), options)}; "
            f"choose one of: {', '.join(options)}",
            False,
            path,
        )
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return (
            f"{_name(key)} must be {_article(expected)}, not {_json_type(value)} {value!r}",
            False,
            path,
        )
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {
            "minimum": ">=",
            "exclusiveMinimum": ">",
            "maximum": "<=",
            "exclusiveMaximum": "<",
        }[kind]
        return (
            f"{_name(key)} must be {relation} {error.validator_value}, got {value!r}",
            False,
            path,
        )
    if kind in ("minItems", "maxItems"):
        bound = "at least" if kind == "minItems" else "at most"
        count = f"{len(value)} item{'s' if len(value) != 1 else ''}"
        need = f"{bound} {error.validator_value}"
        return (
            f"{_name(key)} has {count}, needs {need} — {schema.get('description', '')}",
            False,
            path,
        )
    if kind in ("oneOf", "anyOf"):
        description = schema.get("description", "")
        return f"{_name(key)} got {value!r}, which is not allowed — {description}", False, path
    if kind == "pattern":
        from cnnbuild.schema import PATTERN_RULES

        rule = PATTERN_RULES.get(error.validator_value, schema.get("description", error.message))
        return f"{_name(key)} {_shown(value)} is not allowed — {rule}", False, path
    if kind == "const":
        return f"{_name(key)} must be {error.validator_value!r}", False, path
    return error.message, False, path


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short in the middle when long (a name may be megabytes)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...{text[-12:]} ({len(value):,} characters)"


def _is_item(path: Path_) -> bool:
    """Whether ``path`` is an item of a `layers` list (a layer or a repeat block)."""
    return len(path) >= 2 and path[-2] == "layers" and isinstance(path[-1], int)


def _is_layer(path: Path_) -> bool:
    return len(path) >= 3 and path[-3] == "layers"


def _name(key: str | None) -> str:
    return repr(key) if key else "this value"


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    names |= {list: "list", dict: "mapping", type(None): "null"}
    return names.get(type(value), type(value).__name__)
