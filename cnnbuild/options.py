"""Declarations of user-facing options (YAML keys), shared by layers and optimizers.

Each option is declared once; the JSON Schema, the constructor checks and the defaults
are derived from the declaration.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import warnings
from collections.abc import Iterator, Mapping
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


def section(options: dict[str, Option], description: str) -> Option:
    """A mapping of its own options (such as ``training.augment``); default: theirs."""
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: option.json_schema() for key, option in options.items()},
    }
    return Option(schema, description, defaults(options))


def defaults(options: dict[str, Option]) -> dict[str, Any]:
    """The default of every option that has one (copies: callers may change them)."""
    return {key: copy.deepcopy(o.default) for key, o in options.items() if not o.required}


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
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{who}: received {key}={value!r}: write a finite number")
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


def closest(word: str, options: list[str]) -> str | None:
    """The one of ``options`` closest to ``word`` (a likely typo of it), if any is close."""
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, options: list[str]) -> str:
    """`` — did you mean 'x'?`` for the closest of ``options``, or "" when none is close."""
    match = closest(word, options)
    return f" — did you mean {match!r}?" if match else ""


class PluginWarning(UserWarning):
    """An installed plugin could not be loaded; cnnbuild goes on without it."""


@functools.cache
def _installed_entry_points() -> Any:
    """Every installed package's entry points, read once for all registries: each read goes
    through the metadata of every installed package."""
    from importlib.metadata import entry_points

    return entry_points()


class Registry(Mapping[str, type]):
    """Type names -> classes (layers, optimizers, schedules), like Caffe's layer factory:
    a name is registered once, and an unknown name is answered with the known ones.

    Other installed packages add classes through the entry-point group ``group``
    (``cnnbuild.layers``, ...): each entry point names a module that registers its classes
    on import, or a class to register. They load the first time the registry is read.
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind  # "layer", "optimizer", ...: names the registry in messages
        self.group = group
        self._generation = 0
        self._classes: dict[str, type] = {}
        self._plugins_loaded = False

    @property
    def generation(self) -> int:
        """Counts registrations (plugins loaded first), so caches know when they are stale."""
        self._load_plugins()
        return self._generation

    def register(self, cls: type) -> type:
        """Class decorator: make ``cls`` available under its ``type_name``."""
        if not getattr(cls, "type_name", ""):
            raise TypeError(f"{cls.__name__} has no type_name")
        if self._classes.get(cls.type_name, cls) is not cls:
            raise TypeError(f"{self.kind} type {cls.type_name!r} is registered twice")
        self._classes[cls.type_name] = cls
        self._generation += 1
        return cls

    def unregister(self, type_name: str) -> None:
        """Remove a type (for tests and interactive sessions that redefine a class)."""
        del self._classes[type_name]
        self._generation += 1

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in _installed_entry_points().select(group=self.group):
            try:
                loaded = entry.load()
                if isinstance(loaded, type):
                    self.register(loaded)
            except Exception as error:  # a broken plugin must not take cnnbuild down
                warnings.warn(
                    f"cannot load the {self.kind} plugin {entry.value!r} (entry point "
                    f"{entry.name!r} in group {self.group!r}): {error}",
                    PluginWarning,
                    stacklevel=2,
                )

    def __getitem__(self, name: str) -> type:
        self._load_plugins()
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(self._classes)

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._classes)

    def lookup(self, name: str) -> type:
        """The class registered under ``name``; ConfigError with a "did you mean" if none."""
        if name in self:
            return self[name]
        known = ", ".join(sorted(self))
        hint = did_you_mean(str(name), list(self))
        raise ConfigError(f"{self.kind}: unknown type {name!r}{hint}; known types: {known}")

    def split(self, config: Mapping[str, Any]) -> tuple[type, dict[str, Any]]:
        """``{"type": name, **options}`` -> (the registered class, its options)."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"{self.kind}: expected a mapping with a 'type', received {config!r}")
        options = dict(config)
        if "type" not in options:
            known = ", ".join(sorted(self))
            raise ConfigError(f"{self.kind}: 'type' is required; known types: {known}")
        return self.lookup(options.pop("type")), options
