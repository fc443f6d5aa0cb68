"""Reading a spec's ``sweep:`` section: every path must exist, every range must make sense,
and the metric must be one the runs record (see `cnnbuild.search_space` for the section)."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from cnnbuild.errors import SpecError
from cnnbuild.overrides import apply_overrides, value_at
from cnnbuild.search_space import KINDS, Parameter, SearchSpace
from cnnbuild.specfile import Spec, schema_problems


def read_search_space(spec: Spec) -> SearchSpace:
    """The checked ``sweep:`` section of ``spec`` (read with its overrides applied); a
    SpecError lists every problem with its file, line and column."""
    section = spec.data.get("sweep")
    if not isinstance(section, dict):
        raise SpecError(
            [
                f"{spec.source}: no `sweep:` section — add one that says what to vary, e.g.\n"
                "sweep:\n  space:\n    training.optimizer.lr: {float: [0.0003, 0.03], log: true}"
            ]
        )
    problems: list[str] = []
    parameters = []
    for path, options in section["space"].items():
        where = ("sweep", "space", path)
        parameter = _parameter(path, options, spec, where, problems)
        if parameter is None:
            continue
        try:
            apply_overrides(_without_sweep(spec), [f"{path}={json.dumps(_example(parameter))}"])
        except SpecError as error:
            message = "; ".join(error.problems).replace(f"--set {path}: ", "")
            problems.append(spec.problem(where, message, at_key=True))
            continue
        parameters.append(parameter)
    if not problems:  # every path exists: would the schema take a value there?
        example = _without_sweep(spec)
        apply_overrides(example, [f"{p.path}={json.dumps(_example(p))}" for p in parameters])
        problems += [
            f"sweep.space: {problem} (checked with each range's low end, each choice's first)"
            for problem in schema_problems(example)
            if problem.startswith("--set ")
        ]

    validation = spec.data.get("training", {}).get("validation")
    notes = []
    metric = section.get("metric")
    if metric is None:
        metric = "val_accuracy" if validation else "test_accuracy"
        if not validation:
            notes.append(
                "trials are compared on test_accuracy: there is no validation split — set "
                "training.validation (e.g. 0.1) to keep the test set out of the choice"
            )
    elif metric.startswith("val_") and not validation:
        problems.append(
            spec.problem(
                ("sweep", "metric"),
                f"the metric {metric} needs a validation split — set training.validation "
                "(e.g. 0.1), or use a test_ column",
            )
        )
    direction = section.get("direction") or _direction(metric)
    if direction is None:
        problems.append(
            spec.problem(
                ("sweep", "metric"),
                f"say whether {metric} is maximised or minimised: add `direction: maximize` or "
                "`direction: minimize`",
            )
        )
    space = SearchSpace(
        parameters,
        metric,
        direction or "maximize",
        section.get("sampler", "tpe"),
        section.get("pruner", "median"),
        section.get("trials"),
        notes,
    )
    if space.sampler == "grid":
        continuous = [p.path for p in parameters if p.grid() is None]
        if continuous:
            problems.append(
                spec.problem(
                    ("sweep", "sampler"),
                    f"the grid sampler needs a finite set of values, but {', '.join(continuous)} "
                    "is a continuous range — give it a `step`, or use `choice`",
                )
            )
    if problems:
        raise SpecError(problems)
    return space


def _parameter(
    path: str, options: dict[str, Any], spec: Spec, where: tuple, problems: list[str]
) -> Parameter | None:
    kinds = [kind for kind in KINDS if kind in options]
    if len(kinds) != 1:
        given = f"it has {' and '.join(kinds)}" if kinds else "it has none"
        problems.append(
            spec.problem(
                where,
                f"give exactly one of float: [low, high], int: [low, high] or choice: [values] "
                f"({given})",
                at_key=True,
            )
        )
        return None
    kind = kinds[0]
    log, step = bool(options.get("log", False)), options.get("step")
    if kind == "choice":
        if log or step is not None:
            problems.append(spec.problem(where, "log and step apply to ranges, not to choice"))
            return None
        return Parameter(path, kind, choices=tuple(options["choice"]))
    low, high = options[kind]
    message = None
    if not all(math.isfinite(bound) for bound in (low, high)):
        message = f"the range [{low}, {high}] must be finite"
    elif low > high:
        message = f"the range [{low}, {high}] is empty: write [low, high] with low <= high"
    elif log and low <= 0:
        message = f"a log range must start above 0, not at {low}"
    elif log and step is not None:
        message = "log and step cannot be combined: use one of them"
    elif kind == "int" and step is not None and step != int(step):
        message = f"an int range takes a whole step, not {step}"
    if message:
        problems.append(spec.problem((*where, kind), message))
        return None
    return Parameter(path, kind, low, high, log, step)


def _without_sweep(spec: Spec) -> Spec:
    """A copy of ``spec`` as a trial trains it: without its sweep section."""
    trial = copy.deepcopy(spec)
    trial.data.pop("sweep", None)
    return trial


def _example(parameter: Parameter) -> Any:
    return parameter.choices[0] if parameter.kind == "choice" else parameter.low


def _direction(metric: str) -> str | None:
    if metric.endswith("accuracy"):
        return "maximize"
    if metric.endswith("loss"):
        return "minimize"
    return None


def written_values(space: SearchSpace, spec: Spec) -> dict[str, Any] | None:
    """The values the spec itself has at every path, as Optuna stores them; None when
    one is missing or outside its range (the spec as written is then not a trial)."""
    values = {}
    for p in space.parameters:
        value = value_at(spec.data, p.path)
        if p.kind == "choice":
            if value not in p.choices:
                return None
            value = p.encoded()[p.choices.index(value)]
        elif not (isinstance(value, int | float) and p.low <= value <= p.high):
            return None
        values[p.path] = value
    return values
