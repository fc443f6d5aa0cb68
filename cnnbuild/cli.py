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
    """Print cnnbuild's own errors as messages and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cnnbuild.errors import CnnbuildError

        try:
            return command(*args, **kwargs)
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
    """Print every layer's output shape, parameters and multiply-adds."""
    from cnnbuild.builder import load
    from cnnbuild.summary import render, summarize

    click.echo(render(summarize(load(spec_file), batch_size), fmt))


@main.command()
@click.argument("spec_files", nargs=-1, required=True, type=EXISTING_FILE)
def validate(spec_files: tuple[str, ...]) -> None:
    """Check architecture files (schema and shapes); print OK or every error."""
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
    """Print the JSON Schema of architecture files."""
    from cnnbuild.spec import shipped_schema_text

    click.echo(shipped_schema_text(), nl=False)
