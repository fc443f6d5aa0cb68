"""The ``sweep:`` section of a spec: what `cnnbuild sweep` varies and what it optimises.

```yaml
sweep:
  metric: val_accuracy        # a history column; maximised for *accuracy, minimised for *loss
  sampler: tpe                # tpe (default), random or grid
  pruner: median              # median (default), hyperband or none
  space:                      # each key is a --set path
    training.optimizer.lr: {float: [0.0003, 0.03], log: true}
    layers.conv1.filters: {choice: [2, 4, 8]}
    layers.fc.units: {int: [32, 512], log: true}
```

A trial is the spec with one ``--set PATH=VALUE`` per key of ``space``. This module declares
the section (its schema) and the search space it describes; `cnnbuild.sweep_section` reads
and checks it, and `cnnbuild.sweep` runs the study.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from cnnbuild.checkpoint import HISTORY_COLUMNS, VALIDATION_COLUMNS

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
METRICS = [column for column in HISTORY_COLUMNS + VALIDATION_COLUMNS if column != "epoch"]
KINDS = ("float", "int", "choice")

_RANGE = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
SCHEMA: dict[str, Any] = {
    "description": "What `cnnbuild sweep` varies (`space`: --set paths and their ranges) and "
    "what it optimises (`metric`).",
    "type": "object",
    "additionalProperties": False,
    "required": ["space"],
    "properties": {
        "metric": {
            "description": "The history column to optimise, at the trial's best epoch. Default: "
            "val_accuracy with a validation split, else test_accuracy.",
            "enum": METRICS,
        },
        "direction": {
            "description": "Whether the metric is maximised or minimised. Default: maximize "
            "for *accuracy, minimize for *loss.",
            "enum": ["maximize", "minimize"],
        },
        "sampler": {
            "description": "How trials are chosen: tpe (Bayesian), random, or grid (every "
            "combination of the choices).",
            "enum": list(SAMPLERS),
            "default": "tpe",
        },
        "pruner": {
            "description": "Stops trials whose metric falls behind after an epoch: median, "
            "hyperband, or none.",
            "enum": list(PRUNERS),
            "default": "median",
        },
        "trials": {
            "description": "The study's number of trials when --trials is not given.",
            "type": "integer",
            "minimum": 1,
        },
        "space": {
            "description": "The values to vary: a --set path (training.optimizer.lr, "
            "layers.conv1.filters) and its range.",
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "float": {**_RANGE, "description": "[low, high]: a real number."},
                    "int": {
                        **_RANGE,
                        "items": {"type": "integer"},
                        "description": "[low, high]: a whole number, both ends included.",
                    },
                    "choice": {
                        "description": "The values to choose from (any YAML values).",
                        "type": "array",
                        "minItems": 1,
                    },
                    "log": {
                        "description": "Sample on a log scale (low must be above 0).",
                        "type": "boolean",
                    },
                    "step": {
                        "description": "Only multiples of step above low.",
                        "type": "number",
                        "exclusiveMinimum": 0,
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Parameter:
    """One swept value: its --set path, its kind (float, int, choice) and range."""

    path: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial suggests for this parameter."""
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), log=self.log, step=step
            )
        return self.decode(trial.suggest_categorical(self.path, list(self.encoded())))

    def encoded(self) -> tuple[Any, ...]:
        """The choices as Optuna stores them: scalars as they are, others as JSON text."""
        if all(
            value is None or isinstance(value, bool | int | float | str) for value in self.choices
        ):
            return self.choices
        return tuple(json.dumps(value) for value in self.choices)

    def decode(self, stored: Any) -> Any:
        """The value of a choice as Optuna stored it."""
        if self.encoded() is self.choices:
            return stored
        return json.loads(stored)

    def grid(self) -> list[Any] | None:
        """Every value, for the grid sampler; None for a continuous range."""
        if self.kind == "choice":
            return list(self.encoded())
        if self.kind == "int" or self.step is not None:
            step = self.step or 1
            count = math.floor((self.high - self.low) / step + 1e-9) + 1
            values = [self.low + i * step for i in range(count)]
            return [int(v) for v in values] if self.kind == "int" else values
        return None


@dataclass
class SearchSpace:
    """The sweep section, checked: the parameters, the metric and how it is optimised."""

    parameters: list[Parameter]
    metric: str
    direction: str
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int | None = None
    notes: list[str] = field(default_factory=list)  # what was chosen for the user

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The ``--set PATH=VALUE`` texts of a trial's values."""
        return [f"{p.path}={json.dumps(values[p.path])}" for p in self.parameters]

    def grid(self) -> dict[str, list[Any]]:
        return {p.path: p.grid() or [] for p in self.parameters}

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())


def short_names(paths: list[str]) -> list[str]:
    """The shortest dotted suffix of each path that no other path ends with."""
    names = []
    for path in paths:
        parts = path.split(".")
        for size in range(1, len(parts) + 1):
            name = ".".join(parts[-size:])
            if not any(other != path and other.endswith("." + name) for other in paths):
                break
        names.append(name)
    return names
