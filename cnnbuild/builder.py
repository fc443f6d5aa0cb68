"""Spec -> network: expand repeats, name and resolve inputs, order the graph, infer every
shape and check the sizes against cnnbuild's limits (``plan``), then allocate weights
(``allocate``); ``build`` does both.

``plan`` allocates nothing that grows with the network's sizes, so validation and summary
of any file cost milliseconds: a repeat inside a repeat is counted before it is expanded,
and parameters are counted from the shapes the layers declare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.blocks import problem_in_use, resolve
from cnnbuild.data.batches import crop_problem
from cnnbuild.errors import ConfigError, ShapeError, SpecError
from cnnbuild.graph import INPUT, Network, Node
from cnnbuild.layers import Layer, layer_class
from cnnbuild.layers.base import Shape
from cnnbuild.limits import (
    FLOAT_BYTES,
    MAX_LAYERS,
    MAX_PARAMETERS,
    MAX_VALUES_PER_IMAGE,
    check_memory,
    format_bytes,
    format_count,
    parameter_values,
    weight_memory,
)
from cnnbuild.options import did_you_mean
from cnnbuild.specfile import Path_, Spec, data_at, item_problems, parse_spec, read_spec
from cnnbuild.tables import aligned

COMMON_KEYS = ("name", "type", "inputs")


@dataclass
class Planned:
    """A layer after repeat expansion, before it is built. ``inputs`` holds names the file
    gave, or the Planned layer itself where the input is implicitly the layer before."""

    name: str | None
    type_name: str
    config: dict[str, Any]
    inputs: list[str | Planned]
    path: Path_  # where the layer stands in the file (in a block's definition, for a use)
    blocks: tuple[str, ...] = ()  # the repetitions holding it, outermost first: ("stage1_2",)
    sites: tuple[Path_, ...] = ()  # the uses of blocks holding it, outermost first
    change: Path_ | None = None  # the block's `changes` entry that alters this one layer


@dataclass(frozen=True)
class Unmatched:
    """Names in a block's ``changes`` (at ``path``) that no layer of the block has."""

    path: Path_
    unknown: list[str]
    names: list[str]  # the layers the block has


def load(path: str | Path, seed: int | None = None, dtype: Any = np.float32) -> Network:
    """Read, check and build the architecture file at ``path``."""
    return build(read_spec(path), seed=seed, dtype=dtype)


def loads(text: str, seed: int | None = None, dtype: Any = np.float32) -> Network:
    """Build a network from YAML text."""
    return build(parse_spec(text), seed=seed, dtype=dtype)


def build(spec: Spec, seed: int | None = None, dtype: Any = np.float32) -> Network:
    """Turn a schema-valid spec into a network with its weights: ``plan``, then
    ``allocate``. Raises SpecError naming file, line and layer, or ResourceError when the
    weights do not fit in the memory available."""
    return allocate(plan(spec), seed=seed, dtype=dtype)


def plan(spec: Spec) -> Network:
    """The network a schema-valid spec describes, with every layer constructed and every
    shape inferred, but no weights (``net.allocated`` is False; ``allocate`` adds them).

    Raises SpecError (file, line, layer) for a wrong graph or shape, and for a network
    beyond cnnbuild's limits: more than MAX_LAYERS layers after expanding repeats, more
    than MAX_PARAMETERS parameters, more than MAX_VALUES_PER_IMAGE values kept per image.
    Summary and validation need nothing more.
    """
    data = spec.data
    items = resolve(spec)
    _check_layer_count(items, spec)
    unmatched: list[Unmatched] = []
    planned = _expand(items, ("layers",), INPUT, counters={}, unmatched=unmatched)
    _check_changes(planned, unmatched, spec)
    _assign_default_names(planned)
    problems = _check_names(planned, spec)
    layers = _construct(planned, spec, problems)
    if problems:
        raise SpecError(problems)
    order = _topological_order(planned, spec)
    nodes = _infer_shapes(order, layers, tuple(data["input"]), spec)
    _check_output(nodes[-1], planned[-1], data["classes"], spec, nodes)
    _check_sizes(order, nodes, tuple(data["input"]), spec)
    _check_training(data.get("training") or {}, tuple(data["input"]), spec)
    return Network(
        data["name"],
        tuple(data["input"]),
        data["classes"],
        nodes,
        None,
        data,
        allocated=False,
    )


def allocate(net: Network, seed: int | None = None, dtype: Any = np.float32) -> Network:
    """Allocate the weights of a planned network (in place; returns it), drawn from a
    generator seeded with ``seed`` that the network keeps. Checks first that they fit in
    the memory available (ResourceError saying what they need and what there is)."""
    if net.allocated:
        raise ValueError(f"the network {net.name!r} already has its weights")
    trainable, non_trainable = parameter_values(net)
    check_memory(
        weight_memory(net, np.dtype(dtype).itemsize),
        f"the weights of {net.name} ({format_count(trainable + non_trainable)} parameters, "
        "with their gradients)",
        "make the network smaller (fewer filters or units), or free memory",
    )
    rng = np.random.default_rng(seed)
    for node in net.nodes:
        node.layer.build(node.input_shapes, rng, dtype)
    net.rng = rng
    net.allocated = True
    return net


# --- limits ---------------------------------------------------------------------------------


def _check_layer_count(items: list[dict[str, Any]], spec: Spec) -> None:
    """Refuse a network that expands to more than MAX_LAYERS layers, counted from the repeat
    counts without expanding (so a repeat inside a repeat costs nothing), naming the block."""
    counts: dict[int, int] = {}  # by id of a layers list: aliases may share one

    def count(layers: list[dict[str, Any]]) -> int:
        if id(layers) not in counts:
            counts[id(layers)] = min(sum(_item_count(item, count) for item in layers), CAP)
        return counts[id(layers)]

    try:
        total = count(items)
    except RecursionError:
        raise SpecError(
            [spec.problem(("layers",), "repeat blocks are nested too deeply — flatten them")]
        ) from None
    if total <= MAX_LAYERS:
        return
    chain: list[tuple[int, Path_]] = []  # the repeats that multiply, outermost first
    layers, path = items, ("layers",)
    while True:
        index = max(range(len(layers)), key=lambda i: _item_count(layers[i], count))
        item = layers[index]
        if "repeat" not in item:
            break
        chain.append((item["repeat"], (*path, index)))
        layers, path = item["layers"], (*path, index, "layers")
    where = " inside ".join(
        f"repeat {repeat:,} at {_place(spec, block)}" for repeat, block in reversed(chain)
    )
    has = "expands to" if chain else "has"
    shown = f"{total:,}" if total < CAP else f"more than {CAP:,}"
    raise SpecError(
        [
            spec.problem(
                chain[0][1] if chain else ("layers",),
                f"the network {has} {shown} layers, more than the {MAX_LAYERS:,} cnnbuild "
                f"builds{f' ({where})' if where else ''} — lower `repeat`; even deep networks "
                "have a few hundred layers",
            )
        ]
    )


CAP = 10**18  # layer counts are not multiplied out beyond this


def _place(spec: Spec, path: Path_) -> str:
    """``line 12`` in a file; ``layers[0].layers[1]`` in data that has no lines."""
    if spec.marks:
        return f"line {spec.mark(path).line}"
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)[1:]


def _item_count(item: dict[str, Any], count) -> int:
    if "repeat" in item:
        return min(item["repeat"] * count(item["layers"]), CAP)
    return 1


def _check_sizes(order: list[Planned], nodes: list[Node], input_shape: Shape, spec: Spec) -> None:
    """Refuse parameter counts and per-image values beyond cnnbuild's limits, naming the
    layer that contributes most, before anything is allocated."""
    problems: list[tuple[int, str]] = []  # (line, message)

    def add(path: Path_, message: str, layer: Planned | None = None) -> None:
        text = spec.problem(path, message) if layer is None else _problem(spec, layer, message)
        problems.append((spec.mark(layer.sites[0] if layer and layer.sites else path).line, text))

    input_values = math.prod(input_shape)
    if input_values > MAX_VALUES_PER_IMAGE:
        add(
            ("input",),
            f"an input of {_shape_text(input_shape)} is {format_count(input_values)} values "
            f"per image, more than the {MAX_VALUES_PER_IMAGE:,} cnnbuild allows "
            f"({format_bytes(MAX_VALUES_PER_IMAGE * FLOAT_BYTES)} of float32) — give the "
            "image's real [channels, height, width]",
        )
    params, values = [], []
    for node in nodes:
        layer = node.layer
        shapes = [
            *layer.parameter_shapes(node.input_shapes).values(),
            *layer.buffer_shapes(node.input_shapes).values(),
        ]
        params.append(sum(map(math.prod, shapes)))
        values.append(
            math.prod(node.output_shape)
            + layer.training_scratch(node.input_shapes, node.output_shape)
        )
    total = sum(params)
    if total > MAX_PARAMETERS:
        worst = max(range(len(nodes)), key=params.__getitem__)
        add(
            order[worst].path,
            f"{format_count(params[worst])} parameters here, {format_count(total)} in the "
            f"network ({format_bytes(total * FLOAT_BYTES)} of float32), more than the "
            f"{MAX_PARAMETERS:,} cnnbuild allows — use fewer filters or units",
            order[worst],
        )
    kept = input_values + sum(values)
    if input_values <= MAX_VALUES_PER_IMAGE < kept:
        worst = max(range(len(nodes)), key=values.__getitem__)
        add(
            order[worst].path,
            f"its output {_shape_text(nodes[worst].output_shape)} and what training keeps "
            f"for backward are {format_count(values[worst])} values per image, "
            f"{format_count(kept)} in the network ({format_bytes(kept * FLOAT_BYTES)} of "
            f"float32 per image), more than the {MAX_VALUES_PER_IMAGE:,} cnnbuild allows — "
            "use fewer filters, a smaller kernel or padding, or a smaller input",
            order[worst],
        )
    if problems:
        raise SpecError([text for _, text in sorted(problems, key=lambda item: item[0])])


def _check_training(training: dict[str, Any], input_shape: Shape, spec: Spec) -> None:
    """Refuse an augmentation crop that would pad the images away."""
    crop = (training.get("augment") or {}).get("crop", 0)
    problem = crop_problem(crop, *input_shape[1:]) if crop and len(input_shape) == 3 else None
    if problem:
        raise SpecError([spec.problem(("training", "augment", "crop"), problem)])


def _shape_text(shape: Shape) -> str:
    return "(" + ", ".join(format_count(size) for size in shape) + ")"


# --- expansion and names -------------------------------------------------------------------


def _expand(
    items: list[dict[str, Any]],
    path: Path_,
    block_input: str | Planned,
    counters: dict[str, int],
    sites: tuple[Path_, ...] = (),
    unmatched: list[Unmatched] | None = None,
) -> list[Planned]:
    """Flatten repeat blocks and resolved uses (``blocks.resolve``), applying each block's
    ``changes`` to the layers they name. Each layer's default input is the one before it.
    ``unmatched`` receives the changes that name no layer of their block."""
    planned: list[Planned] = []
    previous = block_input
    for index, item in enumerate(items):
        item_path = (*path, index)
        if "repeat" in item:
            use = item.get("use")
            if use is None:
                counters["block"] = counters.get("block", 0) + 1
                inner_path, inner_sites, site = (*item_path, "layers"), sites, item_path
            else:
                inner_path, inner_sites = ("blocks", use.block, "layers"), (*sites, use.path)
                site = use.path
            prefix = item.get("name", f"block{counters.get('block')}")
            numbered = use is None or use.numbered
            changes = item.get("changes") or {}
            names: list[str] = []
            for repetition in range(1, item["repeat"] + 1):
                inner = _expand(
                    item["layers"], inner_path, previous, counters, inner_sites, unmatched
                )
                block = f"{prefix}_{repetition}" if numbered else prefix
                _rename_block(inner, f"{block}_")
                for layer in inner:
                    layer.blocks = (block, *layer.blocks)
                    if layer.name in changes:
                        change = changes[layer.name]
                        layer.config |= {k: v for k, v in change.items() if k not in COMMON_KEYS}
                        layer.change = (*site, "changes", layer.name)
                names += [layer.name for layer in inner if layer.name]
                planned.extend(inner)
                previous = inner[-1]
            unknown = [name for name in changes if name not in names]
            if unknown and unmatched is not None:
                unmatched.append(Unmatched((*site, "changes"), unknown, names))
            continue
        config = {key: value for key, value in item.items() if key not in COMMON_KEYS}
        given = item.get("inputs")
        inputs = [block_input if name == INPUT else name for name in given] if given else [previous]
        planned.append(
            Planned(item.get("name"), item["type"], config, inputs, item_path, sites=sites)
        )
        previous = planned[-1]
    return planned


def _check_changes(planned: list[Planned], unmatched: list[Unmatched], spec: Spec) -> None:
    """Refuse a block's ``changes`` that name no layer of it, that alter a layer's name,
    type or inputs, or that give a layer a value its type does not take."""
    problems = []
    for entry in unmatched:
        shown = ", ".join(entry.names[:12]) + (", ..." if len(entry.names) > 12 else "")
        problems += [
            spec.problem(
                (*entry.path, name),
                f"no layer named {name!r} in this block{did_you_mean(name, entry.names)}; "
                f"changes name a layer as `summary` shows it: {shown or 'none is named'}",
                at_key=True,
            )
            for name in entry.unknown
        ]
    checked = set()
    for layer in planned:
        if layer.change is None or layer.change in checked:
            continue
        checked.add(layer.change)
        change = data_at(spec.data, layer.change)
        problems += [
            spec.problem(
                (*layer.change, key),
                f"a change keeps the layer's {key} — to alter it, write this repetition "
                "out as layers of its own",
                at_key=True,
            )
            for key in COMMON_KEYS
            if key in change
        ]
        merged = {"type": layer.type_name, **layer.config}
        for path, message, _ in item_problems(merged, layer.change):
            key = path[len(layer.change)] if len(path) > len(layer.change) else None
            problems.append(spec.problem(path if key in change else layer.change, message))
    if problems:
        raise SpecError(_unique(problems))


def _rename_block(inner: list[Planned], prefix: str) -> None:
    """Prefix the names given inside one repetition, and the references to them."""
    renames = {layer.name: f"{prefix}{layer.name}" for layer in inner if layer.name}
    for layer in inner:
        if layer.name:
            layer.name = renames[layer.name]
        layer.inputs = [
            renames.get(ref, ref) if isinstance(ref, str) else ref for ref in layer.inputs
        ]


def _assign_default_names(planned: list[Planned]) -> None:
    """Unnamed layers become ``<type><n>``, skipping names the file already uses; then
    every input reference becomes a name."""
    taken = {layer.name for layer in planned if layer.name}
    counters: dict[str, int] = {}
    for layer in planned:
        while not layer.name:
            counters[layer.type_name] = counters.get(layer.type_name, 0) + 1
            name = f"{layer.type_name}{counters[layer.type_name]}"
            if name not in taken:
                layer.name = name
                taken.add(name)
    for layer in planned:
        layer.inputs = [ref if isinstance(ref, str) else ref.name for ref in layer.inputs]


def _check_names(planned: list[Planned], spec: Spec) -> list[str]:
    problems: list[str] = []
    first_seen: dict[str, Planned] = {}
    for layer in planned:
        if layer.name == INPUT:
            problems.append(
                _problem(
                    spec,
                    layer,
                    f"the name {INPUT!r} is reserved for the network's input — rename the layer",
                    "name",
                )
            )
        elif layer.name in first_seen and _origin(first_seen[layer.name]) != _origin(layer):
            first = first_seen[layer.name]
            line = spec.mark(first.sites[0] if first.sites else first.path).line
            problems.append(
                _problem(
                    spec,
                    layer,
                    f"duplicate layer name {layer.name!r} (first used on line {line}) — "
                    "names must be unique",
                    "name",
                )
            )
        first_seen.setdefault(layer.name, layer)
    known = [INPUT, *first_seen]
    for layer in planned:
        for name in layer.inputs:
            if name not in first_seen and name != INPUT:
                problems.append(
                    _problem(
                        spec,
                        layer,
                        f"unknown input {name!r}{did_you_mean(name, known)}; "
                        f"layers so far: {', '.join(known[:12])}"
                        + (", ..." if len(known) > 12 else ""),
                        "inputs",
                    )
                )
            elif name == layer.name:
                problems.append(
                    _problem(
                        spec,
                        layer,
                        f"layer {name!r} takes its own output as input — name an earlier layer",
                        "inputs",
                    )
                )
    return _unique(problems)


def _construct(planned: list[Planned], spec: Spec, problems: list[str]) -> dict[str, Layer]:
    layers: dict[str, Layer] = {}
    for layer in planned:
        try:
            cls = layer_class(layer.type_name)
            layers[layer.name] = cls(layer.name, **layer.config)
        except ConfigError as error:
            problems.append(_problem(spec, layer, _without_owner(str(error), layer)))
            continue
        problem = _arity_problem(cls, layer, spec)
        if problem:
            problems.append(problem)
    problems[:] = _unique(problems)
    return layers


def _arity_problem(cls: type[Layer], layer: Planned, spec: Spec) -> str | None:
    """The located message when ``layer`` is fed too few or too many inputs for its class."""
    least, most = cls.arity
    count = len(layer.inputs)
    if count < least:
        return _problem(
            spec,
            layer,
            f"a {layer.type_name} layer merges {least} or more layers, got {count} — list "
            "them in `inputs`, e.g. inputs: [conv2, input]",
        )
    if most is not None and count > most:
        takes = "exactly one input" if most == 1 else f"at most {most} inputs"
        return _problem(
            spec,
            layer,
            f"a {layer.type_name} layer takes {takes}, got {count} — "
            "merge them first with an `add` or `concat` layer",
            "inputs",
        )
    return None


# --- ordering and shapes -------------------------------------------------------------------


def _topological_order(planned: list[Planned], spec: Spec) -> list[Planned]:
    """Kahn's algorithm, ties broken by file order; rejects cycles and unused outputs."""
    by_name = {layer.name: layer for layer in planned}
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    for layer in planned:
        for name in layer.inputs:
            if name != INPUT:
                consumers[name].append(layer.name)
    problems = [
        _problem(
            spec,
            layer,
            f"the output of {layer.name!r} goes nowhere — feed it to a later layer "
            "(`inputs`) or remove it",
        )
        for layer in planned[:-1]
        if not consumers[layer.name]
    ]
    waiting = {layer.name: sum(n != INPUT for n in layer.inputs) for layer in planned}
    position = {layer.name: i for i, layer in enumerate(planned)}
    ready = sorted((n for n, count in waiting.items() if count == 0), key=position.get)
    order: list[Planned] = []
    while ready:
        name = ready.pop(0)
        order.append(by_name[name])
        for consumer in consumers[name]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
                ready.sort(key=position.get)
    if len(order) < len(planned):
        stuck = [layer for layer in planned if waiting[layer.name] > 0]
        cycle = _find_cycle(stuck)
        problems.append(
            _problem(
                spec,
                by_name[cycle[0]],
                f"the layers form a cycle: {' -> '.join(cycle)} — `inputs` must name "
                "layers that do not depend on this one",
            )
        )
    if problems:
        raise SpecError(_unique(problems))
    if order[-1] is not planned[-1]:
        order.remove(planned[-1])
        order.append(planned[-1])
    return order


def _find_cycle(stuck: list[Planned]) -> list[str]:
    inputs = {layer.name: [n for n in layer.inputs if n != INPUT] for layer in stuck}
    name, path = stuck[0].name, []
    while name not in path:
        path.append(name)
        name = next(n for n in inputs[name] if n in inputs)
    return [*path[path.index(name) :], name]


def _infer_shapes(
    order: list[Planned], layers: dict[str, Layer], input_shape: Shape, spec: Spec
) -> list[Node]:
    shapes: dict[str, Shape] = {INPUT: input_shape}
    nodes: list[Node] = []
    for planned in order:
        layer = layers[planned.name]
        input_shapes = [shapes[name] for name in planned.inputs]
        try:
            shape = layer.output_shape(input_shapes)
        except ShapeError as error:
            raise SpecError(
                [_problem(spec, planned, _without_owner(str(error), layer))],
                shapes_so_far(nodes, input_shape, failing=(planned, input_shapes)),
            ) from None
        shapes[planned.name] = tuple(shape)
        nodes.append(Node(layer, planned.inputs, input_shapes, tuple(shape), planned.blocks))
    return nodes


def _check_output(node: Node, planned: Planned, classes: int, spec: Spec, nodes) -> None:
    layer = node.layer
    if layer.type_name != "softmax":
        raise SpecError(
            [
                _problem(
                    spec,
                    planned,
                    f"the last layer must be a softmax (the output, trained with "
                    f"cross-entropy), not {layer.type_name} — end with "
                    f"`{{type: dense, units: {classes}}}` and `{{type: softmax}}`",
                )
            ]
        )
    if node.output_shape != (classes,):
        raise SpecError(
            [
                _problem(
                    spec,
                    planned,
                    f"the network outputs {node.output_shape} but `classes` is {classes} — make "
                    f"the layer before the softmax output {classes} units",
                )
            ],
            shapes_so_far(nodes, None),
        )


def shapes_so_far(
    nodes: list[Node], input_shape: Shape | None, failing: tuple[Planned, list] | None = None
) -> str:
    """The summary up to a failing layer: name, type and output shape of each."""
    rows = [("layer", "type", "output shape")]
    if input_shape is not None:
        rows.append((INPUT, "", str(input_shape)))
    rows += [(n.name, n.layer.type_name, str(n.output_shape)) for n in nodes]
    if failing:
        planned, input_shapes = failing
        received = ", ".join(map(str, input_shapes))
        rows.append((planned.name, planned.type_name, f"<- error (input {received})"))
    lines = aligned(rows[0], rows[1:])
    return "Shapes up to the error:\n" + "\n".join(f"  {line}" for line in lines)


def _problem(spec: Spec, layer: Planned, message: str, key: str | None = None) -> str:
    """The located message for a problem of ``layer`` (at its ``key``): at the layer in the
    file, or at the use of the block holding it, naming the line of its definition."""
    if layer.change is not None:
        changed = key in data_at(spec.data, layer.change)
        return spec.problem((*layer.change, key) if changed else layer.change, message)
    path = (*layer.path, key) if key else layer.path
    if layer.sites:
        return problem_in_use(spec, layer.sites, path, message)
    return spec.problem(path, message)


def _origin(layer: Planned) -> tuple[Path_, ...]:
    """Where a layer comes from: its place in the file, and the uses that hold it."""
    return (*layer.sites, layer.path)


def _without_owner(message: str, layer: Layer | Planned) -> str:
    """Drop a leading "conv 'conv2': ": the location prefix already names the layer."""
    return message.removeprefix(f"{layer.type_name} '{layer.name}': ")


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
