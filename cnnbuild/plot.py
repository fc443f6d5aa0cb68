"""Learning curves from a run's history.csv (matplotlib, an optional extra)."""

from __future__ import annotations

import csv
from pathlib import Path

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
    figure.tight_layout()
    path = run_dir / "curves.png"
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise CnnbuildError(f"cannot write {path}: {error.strerror}") from None
    finally:
        plt.close(figure)
    return path
