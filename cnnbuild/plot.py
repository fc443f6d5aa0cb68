"""Learning curves from a run's history.csv (matplotlib, an optional extra)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from cnnbuild.errors import CnnbuildError


def plot_history(run_dir: str | Path) -> Path:
    """Draw loss and accuracy per epoch, train and test (and validation, when the run has
    a validation split), to ``run_dir/curves.png``."""
    run_dir = Path(run_dir)
    history_file = run_dir / "history.csv"
    try:
        with history_file.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError:
        raise CnnbuildError(f"{history_file} not found — is {run_dir} a run folder?") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CnnbuildError(
            f"{history_file}: cannot be read as cnnbuild's history ({error}) — is {run_dir} a "
            "run folder?"
        ) from None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise CnnbuildError("curves.png needs matplotlib: pip install 'cnnbuild[plot]'") from None
    try:
        epochs = [int(row["epoch"]) for row in rows]
        series = {key: [float(row[key]) for row in rows] for key in rows[0]} if rows else {}
    except (KeyError, ValueError) as error:
        raise CnnbuildError(f"{history_file}: unreadable ({error})") from None
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(epochs, series.get("loss", []), "o-", label="train")
    loss_axes.plot(epochs, series.get("test_loss", []), "o-", label="test")
    if "val_loss" in series:  # a run with a validation split
        loss_axes.plot(epochs, series["val_loss"], "o-", label="validation")
        accuracy_axes.plot(epochs, series["val_accuracy"], "o-", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    accuracy_axes.plot(epochs, series.get("train_accuracy", []), "o-", label="train")
    accuracy_axes.plot(epochs, series.get("test_accuracy", []), "o-", label="test")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(run_dir.name)
    return _save(figure, run_dir / "curves.png", plt)


def sweep_plots(study: Any, space: Any, folder: Path) -> list[Path]:
    """Draw a sweep's ``history.png`` (each trial's metric and the best so far) and, once
    two trials are complete, ``importances.png`` (how much each swept value moved the
    metric, by Optuna's default evaluator); returns the paths drawn (none without
    matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return []
    drawn = []
    figure, axes = plt.subplots(figsize=(7, 4))
    numbers, values = [t.number for t in complete], [t.value for t in complete]
    pick = max if space.direction == "maximize" else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    axes.plot(numbers, values, "o", label="trial")
    axes.step(numbers, best, where="post", label="best so far")
    axes.set(xlabel="trial", ylabel=space.metric, title=f"{study.study_name}: {space.metric}")
    axes.grid(alpha=0.3)
    axes.legend()
    drawn.append(_save(figure, folder / "history.png", plt))
    importances = _importances(study) if len(complete) >= 2 else {}
    if importances:
        from cnnbuild.search_space import short_names

        names = short_names(list(importances))
        figure, axes = plt.subplots(figsize=(7, 0.5 + 0.4 * len(names)))
        axes.barh(names[::-1], list(importances.values())[::-1])
        axes.set(xlabel="importance", title=f"what moved {space.metric}")
        axes.grid(alpha=0.3, axis="x")
        drawn.append(_save(figure, folder / "importances.png", plt))
    return drawn


def _importances(study: Any) -> dict[str, float]:
    """Each swept value's importance; empty when Optuna cannot tell (too few trials, or
    nothing varied)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "importances will be equal" on flat studies
        try:
            return optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            return {}


def _save(figure: Any, path: Path, plt: Any) -> Path:
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise CnnbuildError(f"cannot write {path}: {error.strerror}") from None
    finally:
        plt.close(figure)
    return path
