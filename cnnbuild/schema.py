"""The JSON Schema of architecture files, built from the registered types.

The layers, optimizers and schedules registered now (built in, from plugins or from user
code) and the ``training:`` options declare their keys once; this module turns those
declarations into the schema that specs are checked against (Ludwig's shape: a ``type``
enum plus one ``if type == X then {properties, additionalProperties: false}`` block each).
The built-in types' schema is also shipped as ``schemas/cnnbuild.schema.json`` for
editors; regenerate it with ``python -m cnnbuild.schema > schemas/cnnbuild.schema.json``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from cnnbuild.options import Option

SCHEMA_FILE = "cnnbuild.schema.json"
SCHEMA_ID = "https://cnnbuild.dev/schemas/cnnbuild.schema.json"
# "(?!\n)$" ends the string in Python's re (where "$" also matches before a final newline)
# and in the ECMA regexes of editors alike.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(?!\n)$"
MAX_NETWORK_NAME = 100
NETWORK_NAME_PATTERN = rf"^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NETWORK_NAME - 1}}}(?!\n)$"
MEMORY_PATTERN = r"^\d+(\.\d+)? ?(B|KB|MB|GB|KiB|MiB|GiB)(?!\n)$"
# What each pattern allows, for the message when a value does not match.
PATTERN_RULES = {
    NAME_PATTERN: "use letters, digits and underscores, starting with a letter or underscore",
    NETWORK_NAME_PATTERN: "use letters, digits, '_', '-' and '.', not starting with '.' or "
    f"'-', at most {MAX_NETWORK_NAME} characters (runs are saved under runs/<name>/)",
    MEMORY_PATTERN: "write a number of bytes, or a size such as 500 KB, 256 MiB or 2 GiB",
}


def validator() -> Any:
    """A JSON Schema validator for the types registered now (rebuilt only when they change)."""
    from cnnbuild.layers import REGISTRY
    from cnnbuild.optim import OPTIMIZERS
    from cnnbuild.schedules import SCHEDULES

    return _validator(REGISTRY.generation, OPTIMIZERS.generation, SCHEDULES.generation)


@cache
def _validator(*generations: int) -> Any:
    from jsonschema import Draft202012Validator, validators

    fast = validators.extend(Draft202012Validator, {"if": _if})  # no version: not registered
    return fast(build_schema())


def item_validator() -> Any:
    """A validator for one item of a `layers` list (the layers of a used block, once its
    parameters are substituted)."""
    from cnnbuild.layers import REGISTRY
    from cnnbuild.optim import OPTIMIZERS
    from cnnbuild.schedules import SCHEDULES

    return _item_validator(REGISTRY.generation, OPTIMIZERS.generation, SCHEDULES.generation)


@cache
def _item_validator(*generations: int) -> Any:
    whole = _validator(*generations)
    return whole.evolve(schema={"$defs": whole.schema["$defs"], "$ref": "#/$defs/item"})


def _if(validator: Any, if_schema: Any, instance: Any, schema: dict[str, Any]) -> Any:
    """jsonschema's ``if``, with the conditions this schema is made of (``type`` is X; an
    object with ``repeat`` or ``use``) decided directly instead of by a sub-validator: the same
    answers, many times faster (every layer tests one condition per registered type)."""
    matched = _decided(if_schema, instance)
    if matched is None:
        matched = validator.evolve(schema=if_schema).is_valid(instance)
    if matched:
        if "then" in schema:
            yield from validator.descend(instance, schema["then"], schema_path="then")
    elif "else" in schema:
        yield from validator.descend(instance, schema["else"], schema_path="else")


def _decided(condition: Any, instance: Any) -> bool | None:
    """Whether ``instance`` meets ``condition`` when it is one of the schema's forms of
    ``if``; None for any other condition. (``properties`` and ``required`` hold for
    anything that is not an object, as JSON Schema says.)"""
    for key in ("repeat", "use"):
        if condition == {"type": "object", "required": [key]}:
            return isinstance(instance, dict) and key in instance
    if (
        isinstance(condition, dict)
        and condition.keys() == {"properties", "required"}
        and condition["required"] == ["type"]
        and condition["properties"].keys() == {"type"}
        and condition["properties"]["type"].keys() == {"const"}
        and isinstance(condition["properties"]["type"]["const"], str)
    ):
        if not isinstance(instance, dict):
            return True
        value = instance.get("type")
        return isinstance(value, str) and value == condition["properties"]["type"]["const"]
    return None


def shipped_schema_text() -> str:
    """The JSON Schema file shipped inside the package (the same file as schemas/)."""
    return resources.files("cnnbuild").joinpath(SCHEMA_FILE).read_text("utf-8")


def build_schema(built_in: bool = False) -> dict[str, Any]:
    """The whole schema as a dict, ready for ``json.dumps``; with ``built_in``, only for the
    types cnnbuild itself defines (the shipped file), not those of plugins or user code."""
    from cnnbuild.layers import REGISTRY
    from cnnbuild.optim import OPTIMIZERS
    from cnnbuild.schedules import SCHEDULES
    from cnnbuild.search_space import SCHEMA as SWEEP
    from cnnbuild.train import TRAINING

    layers, optimizers, schedules = (
        {name: cls for name, cls in registry.items() if not built_in or _own(cls)}
        for registry in (REGISTRY, OPTIMIZERS, SCHEDULES)
    )

    defs: dict[str, Any] = {
        "item": {
            "description": "A layer, a block of layers repeated `repeat` times, or a use of "
            "a block defined under `blocks`.",
            "if": {"type": "object", "required": ["use"]},
            "then": {"$ref": "#/$defs/use"},
            "else": {
                "if": {"type": "object", "required": ["repeat"]},
                "then": {"$ref": "#/$defs/repeat"},
                "else": {"$ref": "#/$defs/layer"},
            },
        },
        "repeat": _repeat_block(),
        "use": _use_block(),
        "block": _block_definition(),
        "layer": _tagged_union("layer", layers, "layer."),
    }
    for type_name, cls in sorted(layers.items()):
        defs[f"layer.{type_name}"] = _layer_block(cls)
    defs["optimizer"] = _tagged_union("optimizer", optimizers, "optimizer.")
    for type_name, cls in sorted(optimizers.items()):
        defs[f"optimizer.{type_name}"] = _options_block(type_name, cls.options, cls.__doc__)
    defs["schedule"] = _tagged_union("schedule", schedules, "schedule.")
    for type_name, cls in sorted(schedules.items()):
        defs[f"schedule.{type_name}"] = _options_block(type_name, cls.options, cls.__doc__)

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cnnbuild architecture",
        "description": "A convolutional network for cnnbuild: its input, its layers and "
        "how to train it.",
        "type": "object",
        "required": ["name", "input", "classes", "layers"],
        "additionalProperties": False,
        "properties": {
            "name": {
                "description": "Name of the network; runs are saved under runs/<name>/. "
                "Letters, digits, `_`, `-` and `.`, not starting with `.` or `-`, at most "
                f"{MAX_NETWORK_NAME} characters.",
                "type": "string",
                "pattern": NETWORK_NAME_PATTERN,
            },
            "input": {
                "description": "Shape of one input image: [channels, height, width].",
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 3,
                "maxItems": 3,
            },
            "classes": {
                "description": "Number of classes; the last layer must output this many.",
                "type": "integer",
                "minimum": 2,
            },
            "layers": {
                "description": "The layers in order. Each takes the previous layer's output "
                "unless it names its `inputs`.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/item"},
            },
            "training": {
                "description": "Defaults for `cnnbuild train`; command-line flags override them.",
                "type": "object",
                "additionalProperties": False,
                "properties": {key: option.json_schema() for key, option in TRAINING.items()},
            },
            "sweep": SWEEP,
            "blocks": {
                "description": "Named blocks of layers with parameters, used in `layers` as "
                "`{use: NAME, name: PREFIX, PARAM: VALUE, ...}`.",
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/block"},
            },
            "constraints": _constraints(),
        },
        "$defs": defs,
    }


def schema_text(built_in: bool = False) -> str:
    """The schema as the file holds it: indented JSON with a final newline."""
    return json.dumps(build_schema(built_in), indent=2, ensure_ascii=False) + "\n"


def _own(cls: type) -> bool:
    """Whether ``cls`` is one of cnnbuild's own types."""
    return cls.__module__.split(".")[0] == "cnnbuild"


def _description(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


def _tagged_union(kind: str, registry: dict[str, Any], prefix: str) -> dict[str, Any]:
    names = sorted(registry)
    return {
        "description": f"A {kind}, chosen by `type`.",
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"description": f"The {kind} type.", "enum": names}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"$ref": f"#/$defs/{prefix}{name}"},
            }
            for name in names
        ],
    }


def _options_block(type_name: str, options: dict[str, Option], doc: str | None) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": {"const": type_name}}
    properties |= {key: option.json_schema() for key, option in options.items()}
    return {
        "description": _description(doc),
        "type": "object",
        "required": ["type", *(key for key, option in options.items() if option.required)],
        "properties": properties,
        "additionalProperties": False,
    }


def _layer_block(cls: Any) -> dict[str, Any]:
    block = _options_block(cls.type_name, cls.options, cls.description or cls.__doc__)
    least, most = cls.arity
    takes = _count(least) if most == least else f"{_count(least)} or more"
    inputs = {
        "description": "Names of earlier layers feeding this one (`input` is the network's "
        "input); default: the layer before."
        + (f" A merge layer takes {takes}." if least > 1 else ""),
        "type": "array",
        "items": {"type": "string"},
        "minItems": least,
    }
    if most is not None:
        inputs["maxItems"] = most
    block["properties"] = {
        "name": {
            "description": f"Unique layer name; default `{cls.type_name}<n>`. Letters, digits "
            "and underscores.",
            "type": "string",
            "pattern": NAME_PATTERN,
        },
        "inputs": inputs,
        **block["properties"],
    }
    return block


def _count(number: int) -> str:
    return {2: "two", 3: "three"}.get(number, str(number))


def _repeat_block() -> dict[str, Any]:
    return {
        "description": "A block of layers repeated `repeat` times in sequence. Names inside "
        "are made unique as `<block>_<i>_<name>`; `input` inside the block means the block's "
        "input in that repetition.",
        "type": "object",
        "required": ["repeat", "layers"],
        "additionalProperties": False,
        "properties": {
            "repeat": {
                "description": "How many times to repeat the block.",
                "type": "integer",
                "minimum": 1,
            },
            "name": {
                "description": "Prefix for the names inside; default `block<n>`.",
                "type": "string",
                "pattern": NAME_PATTERN,
            },
            "layers": {
                "description": "The layers of one repetition.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/item"},
            },
            "changes": _changes(),
        },
    }


def _changes() -> dict[str, Any]:
    return {
        "description": "Layers of one repetition that differ from the others: each key is "
        "a layer's name as `summary` shows it (`stage1_2_conv`), each value the keys that "
        "change (`{filters: 64}`). `--set stage1_2_conv.filters=64` writes one.",
        "type": "object",
        "propertyNames": {"pattern": NAME_PATTERN},
        "additionalProperties": {
            "description": "The keys of this layer that differ, as in a layer of its type.",
            "type": "object",
        },
    }


def _use_block() -> dict[str, Any]:
    return {
        "description": "The layers of a block defined under `blocks`, with its parameters "
        "given as keys (`ch: 16`). Names inside become `<name>_<layer>` (with `repeat`, "
        "`<name>_<i>_<layer>`); `input` inside the block means this use's input.",
        "type": "object",
        "required": ["use"],
        "properties": {
            "use": {
                "description": "The name of a block under `blocks`.",
                "type": "string",
                "pattern": NAME_PATTERN,
            },
            "name": {
                "description": "Prefix for the names inside; default `<block><n>`.",
                "type": "string",
                "pattern": NAME_PATTERN,
            },
            "repeat": {
                "description": "How many times to repeat the block in sequence (default 1).",
                "type": "integer",
                "minimum": 1,
            },
            "changes": _changes(),
        },
        "additionalProperties": {"description": "A value for one of the block's parameters."},
    }


def _block_definition() -> dict[str, Any]:
    return {
        "description": "A block of layers with parameters: `$PARAM` anywhere in its layers "
        "stands for the value a use gives (or the default).",
        "type": "object",
        "required": ["layers"],
        "additionalProperties": False,
        "properties": {
            "params": {
                "description": "Parameter names and their defaults; null: the use must give it.",
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
            },
            "layers": {
                "description": "The block's layers, as in `layers`; `$PARAM` stands for a whole "
                "value and `input` for the block's input.",
                "type": "array",
                "minItems": 1,
                "items": {
                    "description": "A layer, repeat block or use; checked once `$PARAM` values "
                    "are known.",
                    "type": "object",
                },
            },
        },
    }


def _constraints() -> dict[str, Any]:
    def limit(description: str) -> dict[str, Any]:
        return {"description": description, "type": "integer", "minimum": 1}

    return {
        "description": "Limits the network must stay within; `validate`, `summary` and "
        "`train` refuse it otherwise.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "max_params": limit("Most trainable parameters."),
            "max_mult_adds": limit("Most multiply-adds per image."),
            "max_activation_memory": {
                "description": "Most activation memory in training at the spec's batch size "
                "(`training.batch_size`, default 128): bytes, or a size such as `256 MiB`.",
                "type": ["integer", "string"],
                "minimum": 1,
                "pattern": MEMORY_PATTERN,
            },
        },
    }


if __name__ == "__main__":
    print(schema_text(built_in=True), end="")
