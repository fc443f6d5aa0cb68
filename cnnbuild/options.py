"""Declarations of user-facing options (YAML keys), shared by layers and optimizers.

Each option is declared once; the JSON Schema, the constructor checks and the defaults
are derived from the declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnbuild.errors import ConfigError

REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One key: its JSON Schema fragment, description and default (REQUIRED if none)."""

    schema: dict[str, Any]
    description: str
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def json_schema(self) -> dict[str, Any]:
        """The fragment with its description and default, as written to the schema file."""
        fragment = {"description": self.description, **self.schema}
        if not self.required:
            fragment["default"] = self.default
        return fragment


def integer(minimum: int, description: str, default: Any = REQUIRED) -> Option:
    return Option({"type": "integer", "minimum": minimum}, description, default)


def number(description: str, default: Any = REQUIRED, **bounds: float) -> Option:
    return Option({"type": "number", **bounds}, description, default)


def choice(values: list[str], description: str, default: Any = REQUIRED) -> Option:
    return Option({"type": "string", "enum": values}, description, default)


def boolean(description: str, default: bool) -> Option:
    return Option({"type": "boolean"}, description, default)


def check_config(who: str, options: dict[str, Option], given: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check each value against its schema, echoing a bad value.

    ``who`` names the owner in messages, e.g. "conv 'conv1'".
    """
    from jsonschema import Draft202012Validator

    unknown = sorted(set(given) - set(options))
    if unknown:
        known = ", ".join(options) or "none"
        raise ConfigError(f"{who}: unknown option {unknown[0]!r}; known options: {known}")
    config = {}
    for key, option in options.items():
        if key not in given:
            if option.required:
                raise ConfigError(f"{who}: option {key!r} is required ({option.description})")
            config[key] = option.default
            continue
        value = given[key]
        error = next(Draft202012Validator(option.schema).iter_errors(value), None)
        if error is not None:
            raise ConfigError(f"{who}: received {key}={value!r}: {error.message}")
        if isinstance(value, float) and "integer" in _types(option.schema):
            raise ConfigError(
                f"{who}: received {key}={value!r}: write a whole number, e.g. {key}: {int(value)}"
            )
        config[key] = value
    return config


def _types(schema: dict[str, Any]) -> list[str]:
    """The JSON types a schema fragment admits, through ``oneOf``/``anyOf``."""
    kinds = schema.get("type", [])
    types = [kinds] if isinstance(kinds, str) else list(kinds)
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        types += _types(branch)
    return types
