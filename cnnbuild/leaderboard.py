"""What a sweep leaves to read: the leaderboard, ``sweep.csv``, ``best.yaml`` and plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import yaml

from cnnbuild.console import duration
from cnnbuild.files import atomic_write
from cnnbuild.search_space import SearchSpace, short_names
from cnnbuild.sweep import Sweep, trial_state
from cnnbuild.tables import aligned

ORDER = ("complete", "pruned", "running", "failed", "interrupted")


def leaderboard(sweep: Sweep, trials: list[Any]) -> str:
    """The trials, best first: each swept value, the metric, epochs, time and state."""
    space = sweep.space
    shown = _shown_trials(trials, space)
    queued = sum(trial_state(t) == "waiting" for t in trials)
    if not shown:
        return f"the study {sweep.study!r} has no trials yet"
    names = short_names([p.path for p in space.parameters])
    header = ["trial", *names, space.metric, "epochs", "time", "state"]
    rows = [
        [
            str(t.number),
            *(_value(t.params.get(p.path), p) for p in space.parameters),
            f"{t.value:.4f}" if t.value is not None and trial_state(t) == "complete" else "",
            str(t.user_attrs.get("epochs", "")),
            _time(t.user_attrs.get("seconds")),
            trial_state(t),
        ]
        for t in shown
    ]
    counts = {state: sum(trial_state(t) == state for t in shown) for state in ORDER}
    summary = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
    summary += f" ({queued} queued to run again)" if queued else ""
    lines = [f"study {sweep.study!r}: {summary} of {sweep.trials}", "", *aligned(header, rows)]
    best = best_trial(trials, space)
    if best is not None:
        lines += [
            "",
            f"best: trial {best.number}, {space.metric} {best.value:.4f} (test accuracy "
            f"{best.user_attrs.get('test_accuracy', math.nan):.4f} at that epoch) — "
            f"{best.user_attrs.get('run_dir', '')}",
        ]
    return "\n".join(lines)


def best_trial(trials: list[Any], space: SearchSpace) -> Any | None:
    complete = [t for t in trials if trial_state(t) == "complete" and t.value is not None]
    if not complete:
        return None
    pick = max if space.direction == "maximize" else min
    return pick(complete, key=lambda t: (t.value, -t.number))


def write_results(sweep: Sweep, study: Any) -> list[Path]:
    """Write sweep.csv, best.yaml and (with matplotlib) the plots into the sweep folder;
    returns the paths written."""
    trials = study.get_trials(deepcopy=False)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    written = [_write(sweep.folder / "sweep.csv", _csv(sweep.space, trials))]
    best = best_trial(trials, sweep.space)
    if best is not None and "spec" in best.user_attrs:
        header = (
            f"# The best trial ({best.number}) of the sweep {sweep.study!r}: {sweep.space.metric} "
            f"{best.value:.4f}.\n# `cnnbuild train best.yaml` trains it again.\n"
        )
        written.append(_write(sweep.folder / "best.yaml", header + best.user_attrs["spec"]))
    try:
        from cnnbuild.plot import sweep_plots
    except ModuleNotFoundError:
        return written
    return written + sweep_plots(study, sweep.space, sweep.folder)


def _shown_trials(trials: list[Any], space: SearchSpace) -> list[Any]:
    shown = [t for t in trials if trial_state(t) not in ("surplus", "waiting")]
    sign = -1 if space.direction == "maximize" else 1

    def rank(t: Any) -> tuple:
        state = trial_state(t)
        value = t.value if state in ("complete", "pruned") and t.value is not None else None
        if state == "pruned" and value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        key = sign * value if value is not None else math.inf
        return (ORDER.index(state) if state in ORDER else len(ORDER), key, t.number)

    return sorted(shown, key=rank)


def _csv(space: SearchSpace, trials: list[Any]) -> str:
    columns = ["trial", "state", space.metric, "best_epoch", "epochs", "seconds"]
    columns += ["test_accuracy", *(p.path for p in space.parameters), "run_dir", "host", "error"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for t in sorted(trials, key=lambda t: t.number):
        state = trial_state(t)
        if state in ("surplus", "waiting"):
            continue
        attrs = t.user_attrs
        writer.writerow(
            [
                t.number,
                state,
                t.value if state == "complete" else "",
                attrs.get("best_epoch", ""),
                attrs.get("epochs", ""),
                attrs.get("seconds", ""),
                attrs.get("test_accuracy", ""),
                *(_csv_value(t.params.get(p.path), p) for p in space.parameters),
                attrs.get("run_dir", ""),
                attrs.get("host", ""),
                _first_line(attrs.get("error") or attrs.get("interrupted") or ""),
            ]
        )
    return out.getvalue()


def _value(stored: Any, parameter: Any) -> str:
    if stored is None:
        return ""
    value = parameter.decode(stored) if parameter.kind == "choice" else stored
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)


def _csv_value(stored: Any, parameter: Any) -> Any:
    if stored is None:
        return ""
    return parameter.decode(stored) if parameter.kind == "choice" else stored


def _write(path: Path, text: str) -> Path:
    data = text.encode()
    atomic_write(path, lambda file: file.write(data))
    return path


def _time(seconds: Any) -> str:
    return duration(seconds) if isinstance(seconds, int | float) else ""


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""
