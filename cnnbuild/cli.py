"""The ``cnnbuild`` command line: one click group; parses, calls the modules, prints.

Heavy modules (numpy, jsonschema) are imported inside the commands so that ``--help``
answers at once. User errors exit with status 2 and a message, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import click

from cnnbuild.engine import ENGINES


class PathWithoutNul(click.Path):
    """A path, refused with a message when it holds a NUL byte (no file name can)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if "\0" in str(value):
            self.fail(f"{value!r} holds a NUL byte, which no file name can", param, ctx)
        return super().convert(value, param, ctx)


EXISTING_FILE = PathWithoutNul(exists=True, dir_okay=False)
FOLDER = PathWithoutNul(file_okay=False)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print cnnbuild's own errors, and file-system errors, as one-line messages and exit with
    status 2; a stop signal (Ctrl-C, SIGTERM, SIGHUP) exits with 128 + its number."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cnnbuild.errors import CnnbuildError

        try:
            with _signals_interrupt():
                return command(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            number = getattr(interrupt, "signal", signal.SIGINT)
            click.echo(f"stopped by {signal.Signals(number).name}", err=True)
            sys.exit(128 + number)
        except CnnbuildError as error:
            click.echo(f"error: {error}" if "\n" not in str(error) else str(error), err=True)
            sys.exit(2)
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"error: {where}{error.strerror or error}", err=True)
            sys.exit(2)

    return wrapper


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside training, where Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.signal = number


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Let SIGTERM and SIGHUP unwind like Ctrl-C, so that ``finally`` blocks run (training
    installs its own handlers, which save before stopping)."""

    def stop(number: int, frame: Any) -> None:
        raise _Stopped(number)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class FiniteFloat(click.FloatRange):
    """A float in a range that is a number: NaN and infinities are refused."""

    name = "finite float"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def set_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--set PATH=VALUE`` (repeatable): change a value of the spec before it is checked."""
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="PATH=VALUE",
        help="Change a value of the spec before it is checked, e.g. training.optimizer.lr=0.003 "
        "or layers.conv1.filters=8 (VALUE is YAML; repeatable).",
    )(command)


def engine_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--engine auto|numpy|fast``: what computes the passes."""
    return click.option(
        "--engine",
        type=click.Choice(ENGINES),
        default=None,
        help="numpy (the reference), fast (compiled kernels, needs cnnbuild[fast]) or auto "
        "(fast when installed)  [default: auto; train and time: the spec's training.engine]",
    )(command)


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
@click.option(
    "--receptive-field",
    is_flag=True,
    help="Add a column with each layer's receptive field (input pixels one output sees).",
)
@click.option(
    "--depth",
    type=click.IntRange(0),
    help="Show blocks nested deeper than this as one row each (0: every top-level block).",
)
@set_option
@user_errors
def summary(
    spec_file: str,
    batch_size: int,
    fmt: str,
    receptive_field: bool,
    depth: int | None,
    overrides: tuple[str, ...],
) -> None:
    """Show each layer's output shape, parameters and cost."""
    from cnnbuild.builder import plan
    from cnnbuild.constraints import check_constraints
    from cnnbuild.overrides import read_spec
    from cnnbuild.summary import collapse, dropped_edges, render, summarize

    spec = read_spec(spec_file, overrides)
    net = plan(spec)
    check_constraints(spec, net)
    table = summarize(net, batch_size)
    if depth is not None:
        table = collapse(table, net, depth)
    click.echo(render(table, fmt, receptive_field))
    for warning in dropped_edges(net):
        click.echo(f"warning: {warning}", err=True)


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
@engine_option
@set_option
@user_errors
def time_(
    spec_file: str, batch_size: int, steps: int, engine: str, overrides: tuple[str, ...]
) -> None:
    """Time each layer's forward and backward pass in training."""
    from cnnbuild.builder import allocate, plan
    from cnnbuild.engine import compile_note
    from cnnbuild.overrides import read_spec
    from cnnbuild.timing import check_step_memory, render, time_step

    spec = read_spec(spec_file, overrides)
    net = plan(spec)
    check_step_memory(net, batch_size)  # before the weights, too, are allocated
    engine = engine or spec.data.get("training", {}).get("engine", "auto")
    click.echo(render(time_step(allocate(net), batch_size, steps, engine=engine)))
    if note := compile_note():
        click.echo(note, err=True)


@main.command()
@click.argument("spec_files", nargs=-1, required=True, type=EXISTING_FILE)
@set_option
def validate(spec_files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check architecture files: schema and shapes."""
    from cnnbuild.builder import plan
    from cnnbuild.constraints import check_constraints
    from cnnbuild.errors import CnnbuildError
    from cnnbuild.limits import parameter_values
    from cnnbuild.overrides import read_spec

    failed = 0
    for path in spec_files:
        try:
            spec = read_spec(path, overrides)
            net = plan(spec)  # shapes and limits; no weights are allocated
            check_constraints(spec, net)
        except CnnbuildError as error:
            failed += 1
            click.echo(str(error), err=True)
            continue
        count = parameter_values(net)[0]
        click.echo(f"{path}: OK ({len(net.nodes)} layers, {count:,} trainable parameters)")
    if failed:
        click.echo(f"{failed} of {len(spec_files)} files have errors", err=True)
        sys.exit(2)


@main.command("diff")
@click.argument("first", type=EXISTING_FILE)
@click.argument("second", type=EXISTING_FILE)
@click.option(
    "--batch-size",
    "-b",
    default=128,
    show_default=True,
    type=click.IntRange(1),
    help="Batch size for the activation-memory totals.",
)
@user_errors
def diff_(first: str, second: str, batch_size: int) -> None:
    """Compare two networks (spec files or checkpoints): layers added, removed and changed,
    then the totals. Exits with 0 when they are the same, 1 when they differ, 2 on errors."""
    from cnnbuild.diff import diff

    report, differ = diff(first, second, batch_size)
    click.echo(report)
    sys.exit(1 if differ else 0)


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
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", type=click.IntRange(0), help="Seed of the random generator.")
@click.option("--data-dir", type=FOLDER, help="Folder holding the dataset.")
@click.option(
    "--out",
    type=FOLDER,
    help="Run folder for checkpoints and "
    "history  [default: runs/<name>, or runs/<name>-2, ... if taken]",
)
@click.option("--resume", type=EXISTING_FILE, help="Checkpoint (last.npz) to continue from.")
@click.option(
    "--tensorboard",
    type=FOLDER,
    help="Also write TensorBoard event files to this folder (needs cnnbuild[tensorboard]).",
)
@click.option(
    "--init-from",
    type=EXISTING_FILE,
    help="Checkpoint to start from: layers whose name and parameter shapes match are loaded.",
)
@click.option(
    "--freeze",
    multiple=True,
    metavar="NAME",
    help="A layer whose parameters training leaves as they are (repeatable).",
)
@engine_option
@set_option
@user_errors
def train(
    spec_file: str,
    epochs,
    batch_size,
    lr,
    seed,
    data_dir,
    out,
    resume,
    tensorboard,
    init_from,
    freeze,
    engine,
    overrides,
) -> None:
    """Train a network; print loss and accuracy per epoch.

    The spec's `training:` section gives the defaults; options override them. Each epoch
    writes last.npz, best.npz (by validation accuracy with a `training.validation` split,
    else by test accuracy) and history.csv to the run folder.
    Ctrl-C, SIGTERM and SIGHUP save last.npz and exit with status 130, 143 and 129.
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
            overrides=overrides,
            tensorboard=tensorboard,
            init_from=init_from,
            freeze=list(freeze) or None,
            engine=engine,
        )
    )


@main.command()
@click.argument("spec_file", type=EXISTING_FILE)
@click.option(
    "--trials",
    type=click.IntRange(1),
    help="Trials in the study in all (re-running continues it)  [default: sweep.trials, or 16]",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Trials trained at once, in separate processes sharing the cores.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="Optuna storage shared by every process of the study, e.g. "
    "postgresql://user:password@host/db  [default: sqlite:///<out>/study.db]",
)
@click.option("--study", metavar="NAME", help="Name of the study  [default: the network's name]")
@click.option(
    "--out",
    type=FOLDER,
    help="Sweep folder for the trials' run folders  [default: runs/<name>-sweep]",
)
@click.option("--show", is_flag=True, help="Print the leaderboard of the study; train nothing.")
@set_option
@user_errors
def sweep(spec_file, trials, workers, storage, study, out, show, overrides) -> None:
    """Search the variants the spec's `sweep:` section describes (needs cnnbuild[sweep]).

    Each trial trains the spec with sampled --set values in its own run folder; the
    leaderboard, sweep.csv, best.yaml and plots go to the sweep folder. Run the same
    command again (or on another machine, with a shared --storage) to finish the study.
    """
    from cnnbuild.leaderboard import leaderboard, write_results
    from cnnbuild.sweep import open_study, prepare, run_sweep

    plan = prepare(spec_file, overrides, trials, storage, study, out)
    status = 0 if show else run_sweep(plan, workers, lambda line: click.echo(line, err=True))
    found = open_study(plan, create=False)
    click.echo(leaderboard(plan, found.get_trials(deepcopy=False)))
    written = write_results(plan, found)
    click.echo(f"wrote {', '.join(str(path) for path in written)}", err=True)
    sys.exit(status)


@main.command()
@click.argument("checkpoint", type=EXISTING_FILE)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="test",
    show_default=True,
    help="Which part of the dataset to measure.",
)
@click.option("--data-dir", type=FOLDER, help="Folder holding the dataset.")
@engine_option
@user_errors
def evaluate(checkpoint: str, split: str, data_dir: str | None, engine: str | None) -> None:
    """Accuracy, per-class accuracy, confusion matrix."""
    from cnnbuild.commands import evaluate_report

    click.echo(evaluate_report(checkpoint, split, data_dir, engine))


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
@click.option("--data-dir", type=FOLDER, help="Folder holding the dataset.")
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="How many classes to list, most probable first.",
)
@click.option("--show", is_flag=True, help="Also write each --index image to a PNG file.")
@engine_option
@user_errors
def predict(checkpoint, images, index, split, data_dir, top_k, show, engine) -> None:
    """Classify dataset images (--index) or image files.

    IMAGES are your own files (PNG, JPEG, ...), converted to the network's input shape.
    """
    from cnnbuild.commands import predict_report

    if not images and not index:
        raise click.UsageError("give image files, or --index N for a dataset image")
    lines = predict_report(checkpoint, images, index, split, data_dir, top_k, show, engine)
    for line in lines:
        click.echo(line)


@main.command()
@click.argument("checkpoint", type=EXISTING_FILE)
@click.option(
    "-o",
    "--output",
    type=PathWithoutNul(dir_okay=False),
    help="ONNX file to write, overwritten if it exists  [default: CHECKPOINT with .onnx]",
)
@click.option(
    "--opset",
    type=click.IntRange(13),
    default=17,
    show_default=True,
    help="ONNX operator set version.",
)
@click.option(
    "--check", is_flag=True, help="Compare onnxruntime with cnnbuild on up to 1,000 test images."
)
@user_errors
def export(checkpoint: str, output: str | None, opset: int, check: bool) -> None:
    """Write a trained network as an ONNX model (needs cnnbuild[onnx]).

    The model takes float32 `images` (N, C, H, W) with pixel values 0..255 and returns
    `probabilities` (N, classes). --check exits with status 1 when they differ.
    """
    from cnnbuild.export import check_export, export_checkpoint

    path = export_checkpoint(checkpoint, output, opset)
    click.echo(f"wrote {path}")
    if check:
        report, passed = check_export(checkpoint, path)
        click.echo(report)
        if not passed:
            sys.exit(1)


@main.command()
@click.argument("source", type=EXISTING_FILE)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dot", "mermaid", "svg", "png"]),
    default="dot",
    show_default=True,
    help="dot and mermaid are text; svg and png are rendered by Graphviz.",
)
@click.option("-o", "--output", type=PathWithoutNul(dir_okay=False), help="Write to this file.")
@set_option
@user_errors
def diagram(source: str, fmt: str, output: str | None, overrides: tuple[str, ...]) -> None:
    """Draw the architecture of a spec file or a checkpoint (SOURCE)."""
    from cnnbuild.commands import draw

    text = draw(source, fmt, output, overrides)
    if text is None:
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@main.command("spec")
@click.argument("checkpoint", type=EXISTING_FILE)
@click.option("-o", "--output", type=PathWithoutNul(dir_okay=False), help="Write to this file.")
@user_errors
def spec_(checkpoint: str, output: str | None) -> None:
    """Write the architecture and settings saved in a checkpoint as a YAML spec."""
    from cnnbuild.commands import spec_from_checkpoint, write_text

    text = spec_from_checkpoint(checkpoint)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_text(output, text)
        click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("run_dir", type=PathWithoutNul(exists=True, file_okay=False))
@user_errors
def plot(run_dir: str) -> None:
    """Draw a run's loss and accuracy curves (curves.png)."""
    from cnnbuild.plot import plot_history

    click.echo(f"wrote {plot_history(run_dir)}")


@main.command()
@click.argument("source", type=PathWithoutNul(exists=True))
@click.option(
    "-o",
    "--output",
    type=PathWithoutNul(dir_okay=False),
    help="HTML file to write, overwritten if it exists  [default: report.html in the run folder]",
)
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
    help="The dataset part that per-class accuracy, the confusion matrix and images show.",
)
@click.option("--data-dir", type=FOLDER, help="Folder holding the dataset.")
@user_errors
def report(source: str, output: str | None, split: str, data_dir: str | None) -> None:
    """Write a run's report: one self-contained HTML page.

    SOURCE is a run folder (runs/<name>), a checkpoint, or a sweep folder (with sweep.csv).
    Predictions are recomputed from the checkpoint (best.npz in a run folder) and the dataset.
    """
    from cnnbuild.commands import report_from_cli

    click.echo(f"wrote {report_from_cli(source, output, split, data_dir)}")
