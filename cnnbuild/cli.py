"""The ``cnnbuild`` command line: one click group; parses, calls the modules, prints.

Heavy modules (numpy, jsonschema) are imported inside the commands so that ``--help``
answers at once. User errors exit with status 2 and a message, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

EXISTING_FILE = click.Path(exists=True, dir_okay=False)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print cnnbuild's own errors as messages and exit with status 2 (130 on Ctrl-C)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cnnbuild.errors import CnnbuildError

        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except CnnbuildError as error:
            click.echo(f"error: {error}" if "\n" not in str(error) else str(error), err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnnbuild")
def main() -> None:
    """Define, inspect and train convolutional networks from YAML files, in numpy."""


@main.command()
@click.argument("spec_file", type=EXISTING_FILE)
@click.option(
    "--batch-size",
    "-b",
    default=128,
    show_default=True,
    type=click.IntRange(1),
    help="Batch size for the activation-memory estimate.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@user_errors
def summary(spec_file: str, batch_size: int, fmt: str) -> None:
    """Show each layer's output shape, parameters and cost."""
    from cnnbuild.builder import load
    from cnnbuild.summary import render, summarize

    click.echo(render(summarize(load(spec_file), batch_size), fmt))


@main.command("time")
@click.argument("spec_file", type=EXISTING_FILE)
@click.option(
    "--batch-size",
    "-b",
    default=128,
    show_default=True,
    type=click.IntRange(1),
    help="Images per training step.",
)
@click.option(
    "--steps",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Training steps to time (after two warm-up steps).",
)
@user_errors
def time_(spec_file: str, batch_size: int, steps: int) -> None:
    """Time each layer's forward and backward pass in training."""
    from cnnbuild.builder import load
    from cnnbuild.timing import render, time_step

    click.echo(render(time_step(load(spec_file), batch_size, steps)))


@main.command()
@click.argument("spec_files", nargs=-1, required=True, type=EXISTING_FILE)
def validate(spec_files: tuple[str, ...]) -> None:
    """Check architecture files: schema and shapes."""
    from cnnbuild.builder import load
    from cnnbuild.errors import CnnbuildError

    failed = 0
    for path in spec_files:
        try:
            net = load(path)
        except CnnbuildError as error:
            failed += 1
            click.echo(str(error), err=True)
            continue
        count = sum(p.size for p in net.params.values())
        click.echo(f"{path}: OK ({len(net.nodes)} layers, {count:,} trainable parameters)")
    if failed:
        click.echo(f"{failed} of {len(spec_files)} files have errors", err=True)
        sys.exit(2)


@main.command()
def schema() -> None:
    """Print the JSON Schema of architecture files (with plugin layers)."""
    from cnnbuild.schema import schema_text

    click.echo(schema_text(), nl=False)


@main.command()
@click.argument("spec_file", type=EXISTING_FILE)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    help="Epochs to train in all (a resumed run continues up to this many).",
)
@click.option("--batch-size", type=click.IntRange(1), help="Images per training step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", type=click.IntRange(0), help="Seed of the random generator.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding the dataset.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run folder for checkpoints and "
    "history  [default: runs/<name>, or runs/<name>-2, ... if taken]",
)
@click.option("--resume", type=EXISTING_FILE, help="Checkpoint (last.npz) to continue from.")
@user_errors
def train(spec_file: str, epochs, batch_size, lr, seed, data_dir, out, resume) -> None:
    """Train a network; print loss and accuracy per epoch.

    The spec's `training:` section gives the defaults; options override them. Each epoch
    writes last.npz, best.npz (by test accuracy) and history.csv to the run folder.
    Ctrl-C saves last.npz and exits with status 130.
    """
    from cnnbuild.commands import train_from_cli

    sys.exit(
        train_from_cli(
            spec_file,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            data_dir=data_dir,
            out=out,
            resume=resume,
        )
    )


@main.command()
@click.argument("checkpoint", type=EXISTING_FILE)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="test",
    show_default=True,
    help="Which part of the dataset to measure.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding the dataset.")
@user_errors
def evaluate(checkpoint: str, split: str, data_dir: str | None) -> None:
    """Accuracy, per-class accuracy, confusion matrix."""
    from cnnbuild.commands import evaluate_report

    click.echo(evaluate_report(checkpoint, split, data_dir))


@main.command()
@click.argument("checkpoint", type=EXISTING_FILE)
@click.argument("images", nargs=-1, type=EXISTING_FILE)
@click.option(
    "--index",
    type=click.IntRange(0),
    multiple=True,
    help="Index of a dataset image to classify (repeatable).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="test",
    show_default=True,
    help="Dataset part that --index refers to.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding the dataset.")
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="How many classes to list, most probable first.",
)
@click.option("--show", is_flag=True, help="Also write each --index image to a PNG file.")
@user_errors
def predict(checkpoint, images, index, split, data_dir, top_k, show) -> None:
    """Classify dataset images (--index) or image files.

    IMAGES are your own files (PNG, JPEG, ...), converted to the network's input shape.
    """
    from cnnbuild.commands import predict_report

    if not images and not index:
        raise click.UsageError("give image files, or --index N for a dataset image")
    click.echo(predict_report(checkpoint, images, index, split, data_dir, top_k, show))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@user_errors
def plot(run_dir: str) -> None:
    """Draw a run's loss and accuracy curves (curves.png)."""
    from cnnbuild.plot import plot_history

    click.echo(f"wrote {plot_history(run_dir)}")
