"""The JSON Schema of architecture files, generated from the option declarations.

The layer registry, the optimizers and the schedules declare their keys once; this module
turns those declarations into ``schemas/cnnbuild.schema.json`` (Ludwig's shape: a ``type``
enum plus one ``if type == X then {properties, additionalProperties: false}`` block each).
Regenerate the file with ``python -m cnnbuild.schema > schemas/cnnbuild.schema.json``.
"""

from __future__ import annotations

import json
from typing import Any

from cnnbuild.options import Option

SCHEMA_ID = "https://cnnbuild.dev/schemas/cnnbuild.schema.json"
NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
DATASETS = ["mnist", "fashion-mnist", "cifar10", "folder"]


def build_schema() -> dict[str, Any]:
    """The whole schema as a dict, ready for ``json.dumps``."""
    from cnnbuild.layers import REGISTRY
    from cnnbuild.optim import OPTIMIZERS
    from cnnbuild.schedules import SCHEDULES

    defs: dict[str, Any] = {
        "item": {
            "description": "A layer, or a block of layers repeated `repeat` times.",
            "if": {"type": "object", "required": ["repeat"]},
            "then": {"$ref": "#/$defs/repeat"},
            "else": {"$ref": "#/$defs/layer"},
        },
        "repeat": _repeat_block(),
        "layer": _tagged_union("layer", REGISTRY, "layer."),
    }
    for type_name, cls in sorted(REGISTRY.items()):
        defs[f"layer.{type_name}"] = _layer_block(cls)
    defs["optimizer"] = _tagged_union("optimizer", OPTIMIZERS, "optimizer.")
    for type_name, cls in sorted(OPTIMIZERS.items()):
        defs[f"optimizer.{type_name}"] = _options_block(type_name, cls.options, cls.__doc__)
    defs["schedule"] = _tagged_union("schedule", SCHEDULES, "schedule.")
    for type_name, cls in sorted(SCHEDULES.items()):
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
                "description": "Name of the network; runs are saved under runs/<name>/.",
                "type": "string",
                "minLength": 1,
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
            "training": _training_block(),
        },
        "$defs": defs,
    }


def schema_text() -> str:
    """The schema as the file holds it: indented JSON with a final newline."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


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
    inputs = {
        "description": "Names of earlier layers feeding this one (`input` is the network's "
        "input); default: the layer before."
        + (" A merge layer takes two or more." if cls.merge else ""),
        "type": "array",
        "items": {"type": "string"},
        "minItems": 2 if cls.merge else 1,
    }
    if not cls.merge:
        inputs["maxItems"] = 1
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
        },
    }


def _training_block() -> dict[str, Any]:
    return {
        "description": "Defaults for `cnnbuild train`; command-line flags override them.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "dataset": {
                "description": "Dataset to train on.",
                "enum": DATASETS,
                "default": "mnist",
            },
            "data_dir": {
                "description": "Folder holding the dataset (required for `folder`); default: "
                "searched, then downloaded.",
                "type": "string",
            },
            "epochs": {
                "description": "Number of passes over the training set.",
                "type": "integer",
                "minimum": 1,
                "default": 10,
            },
            "batch_size": {
                "description": "Images per training step.",
                "type": "integer",
                "minimum": 1,
                "default": 128,
            },
            "seed": {
                "description": "Seed of the one random generator (weights, shuffling, "
                "dropout, augmentation).",
                "type": "integer",
                "minimum": 0,
                "default": 0,
            },
            "optimizer": {"$ref": "#/$defs/optimizer", "default": {"type": "adam"}},
            "schedule": {"$ref": "#/$defs/schedule", "default": {"type": "constant"}},
            "augment": {
                "description": "Random augmentation of training images.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "crop": {
                        "description": "Pad by this many pixels, then crop back at a "
                        "random offset; 0 turns it off.",
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                    },
                    "flip": {
                        "description": "Flip images left-right with probability 0.5.",
                        "type": "boolean",
                        "default": False,
                    },
                },
                "default": {},
            },
        },
    }


if __name__ == "__main__":
    print(schema_text(), end="")
