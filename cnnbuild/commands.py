"""What the train, evaluate and predict commands do, between parsing and printing:
find the data, pick the run folder, wire the trainer to its callbacks and the console."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from cnnbuild.builder import allocate, plan
from cnnbuild.callbacks import (
    Checkpointer,
    EarlyStopping,
    HistoryWriter,
    StopOnDivergence,
    StopOnSignal,
)
from cnnbuild.checkpoint import RunCheckpoint
from cnnbuild.console import ConsoleProgress, confusion_table
from cnnbuild.constraints import check_constraints
from cnnbuild.data import DataError, Dataset, load_dataset, load_image_file
from cnnbuild.engine import compile_note
from cnnbuild.engine import resolve as resolve_engine
from cnnbuild.engine import use as use_engine
from cnnbuild.errors import CnnbuildError
from cnnbuild.files import atomic_write
from cnnbuild.finetune import check_freeze, freeze, init_from
from cnnbuild.inference import checked_run, confusion_matrix, load_trained
from cnnbuild.limits import check_memory, training_memory
from cnnbuild.optim import optimizer_slots
from cnnbuild.overrides import read_spec
from cnnbuild.png import encode_png, enlarge
from cnnbuild.runfolder import claimed
from cnnbuild.specfile import Spec
from cnnbuild.tensorboard import tensorboard_callbacks
from cnnbuild.train import Callback, Trainer, TrainingFailed, resolve_config

RESUME_MAY_CHANGE = ("epochs", "data_dir", "engine")  # settings a resumed run may change


def train_from_cli(
    spec_file: str,
    *,
    out: str | None,
    resume: str | None,
    overrides: tuple[str, ...] = (),
    **flags: Any,
) -> int:
    """Run `cnnbuild train`; returns the exit status (128 + the signal's number when a
    signal stopped it). ``overrides`` are ``--set PATH=VALUE`` texts."""
    spec = read_spec(spec_file, overrides)
    if resume:
        run, _ = checked_run(resume)
        _check_same_network(spec.data, run.spec, spec_file, resume)
        flags = _resume_overrides(spec, flags)
        config = _resumed_config(run, resume, flags)
    else:
        config = resolve_config(spec.data.get("training", {}), **flags)
    board = tensorboard_callbacks(config)  # a missing extra stops the run before it starts
    outcome = train_spec(spec, config, out=out, resume=resume, callbacks=board, console=True)
    if outcome.signal is not None:
        state, last = outcome.trainer.state, outcome.run_dir / "last.npz"
        click.echo(
            f"{outcome.trainer.stop_reason} at epoch {state.epoch + 1}, batch {state.batch}; "
            f"saved {last} — continue with --resume {last}",
            err=True,
        )
        return 128 + outcome.signal
    trainer, history, run_dir = outcome.trainer, outcome.history, outcome.run_dir
    if note := compile_note():
        click.echo(note, err=True)
    _draw_curves(run_dir)
    _write_report(run_dir, trainer.test_set)
    metric = trainer.selection_metric
    best = max(history, key=lambda record: record[metric])
    measured = "validation" if metric == "val_accuracy" else "test"
    also = f" (test accuracy {best['test_accuracy']:.4f})" if metric == "val_accuracy" else ""
    click.echo(
        f"best {measured} accuracy {best[metric]:.4f} at epoch {best['epoch']}{also}; "
        f"saved {run_dir / 'best.npz'} and {run_dir / 'last.npz'}",
        err=True,
    )
    if trainer.state.stop_reason:
        click.echo(
            f"stopped after epoch {trainer.state.epoch} of {config['epochs']}: "
            f"{trainer.state.stop_reason}",
            err=True,
        )
    return 0


@dataclass
class TrainedRun:
    """What `train_spec` leaves: the trainer, its history and the run folder; ``signal`` is
    the number of the signal that stopped it, if one did."""

    trainer: Trainer
    history: list[dict[str, float]]
    run_dir: Path
    signal: int | None


def train_spec(
    spec: Spec,
    config: dict[str, Any],
    *,
    out: str | Path | None,
    resume: str | None = None,
    callbacks: Sequence[Callback] = (),
    console: bool = True,
) -> TrainedRun:
    """Train the network of ``spec`` with the resolved ``config`` in a claimed run folder
    (``out``, or a new one under runs/), with the standard callbacks, then ``callbacks``,
    then (with ``console``) the progress bar and epoch table. The engine ``auto`` resolves
    to ``fast`` or ``numpy`` here, and the run records which, so that it resumes on it."""
    config = {**config, "engine": resolve_engine(config["engine"])}
    net = plan(spec)
    check_constraints(spec, net, config["batch_size"])
    check_freeze(net, config["freeze"])
    check_memory(
        training_memory(net, config["batch_size"], optimizer_slots(config["optimizer"])),
        f"training {net.name} at batch {config['batch_size']:,} (weights, optimizer state and "
        "the activations training keeps)",
        "use a smaller --batch-size, or a smaller network",
    )
    allocate(net, seed=config["seed"])
    if config["init_from"] and not resume:  # a resumed run has its own weights
        transfer = init_from(net, config["init_from"])
        if console:
            click.echo(str(transfer), err=True)
    freeze(net, config["freeze"])
    if console and config["freeze"]:
        click.echo(f"frozen: {', '.join(config['freeze'])}", err=True)
    train_set = _dataset(config, "train", net)
    test_set = _dataset(config, "test", net)
    with claimed(net.name, None if out is None else str(out), resume) as run_dir:
        network = {k: v for k, v in spec.data.items() if k not in ("training", "sweep")}
        record = {
            "spec": spec.source,
            "overrides": list(spec.overrides),
            "training": config,
            "network": network,  # the architecture trained: the file with the overrides
        }
        text = yaml.safe_dump(record, sort_keys=False, allow_unicode=True).encode()
        atomic_write(run_dir / "config.yaml", lambda file: file.write(text))
        checkpoints, signals = Checkpointer(run_dir), StopOnSignal()
        standard = [checkpoints, HistoryWriter(run_dir), StopOnDivergence(), signals]
        if config["early_stopping"]:
            # first: the last.npz of the stopping epoch then records why it stopped
            standard.insert(0, EarlyStopping(**config["early_stopping"]))
        shown = [ConsoleProgress()] if console else []
        trainer = Trainer(net, config, train_set, test_set, [*standard, *callbacks, *shown])
        use_engine(net, config["engine"], trainer.optimizer)
        trainer.overrides = list(spec.overrides)
        if resume:
            trainer.restore(resume)
        if console:
            click.echo(_first_line(trainer, config, run_dir), err=True)
        try:
            history = trainer.fit()
        except TrainingFailed as failure:
            last = checkpoints.last
            kept = f"; {last} holds the last good state" if last.exists() else ""
            raise TrainingFailed(f"{failure}{kept}") from None
    return TrainedRun(trainer, history, run_dir, signals.received)


def _first_line(trainer: Trainer, config: dict[str, Any], run_dir: Path) -> str:
    held_out = trainer.validation_set
    sizes = f"{len(trainer.train_set):,} training" + (
        f", {len(held_out):,} validation" if held_out is not None else ""
    )
    selected = (
        "validation accuracy" if held_out is not None else "test accuracy (no validation split)"
    )
    return (
        f"training {trainer.net.name} on {config['dataset']} with the {config['engine']} "
        f"engine: {sizes} and {len(trainer.test_set):,} test images, "
        f"{trainer.steps_per_epoch} steps per epoch; run folder {run_dir}; "
        f"best.npz is selected on {selected}"
    )


def _resume_overrides(spec: Any, flags: dict[str, Any]) -> dict[str, Any]:
    """On resume, `--set training.epochs`, `training.data_dir` and `training.engine` act as
    --epochs, --data-dir and --engine; other training settings are the checkpoint's and
    cannot change."""
    flags = dict(flags)
    for path, flag in spec.overridden.items():
        if path[:1] != ("training",):
            continue
        key = path[1] if len(path) > 1 else None
        if key not in RESUME_MAY_CHANGE:
            raise click.UsageError(
                f"{flag} cannot change when resuming: the run continues with the settings "
                "saved in the checkpoint (only training.epochs, training.data_dir and "
                "training.engine may)"
            )
        if flags.get(key) is None:
            flags[key] = spec.data["training"][key]
    return flags


def _check_same_network(
    given: dict[str, Any], saved: dict[str, Any], spec_file: str, checkpoint: str
) -> None:
    """Refuse to resume a checkpoint with a spec of another architecture."""
    for key in ("input", "classes", "layers", "blocks"):
        if given.get(key) == saved.get(key):
            continue
        if key == "layers":
            pairs = zip(given["layers"], saved["layers"], strict=False)
            index = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
            if index is None:
                count = len(given["layers"]), len(saved["layers"])
                difference = f"{count[0]} layers here, {count[1]} there"
            else:
                a, b = given["layers"][index], saved["layers"][index]
                difference = f"layers[{index}] is {_flow(a)} here but {_flow(b)} there"
        elif key == "blocks":
            mine, theirs = given.get("blocks") or {}, saved.get("blocks") or {}
            names = [n for n in {**mine, **theirs} if mine.get(n) != theirs.get(n)]
            difference = f"the block {names[0]!r} is defined differently"
        else:
            difference = f"{key} is {given.get(key)} here but {saved.get(key)} there"
        raise CnnbuildError(
            f"{spec_file} is not the network {checkpoint} was trained with ({difference}) — "
            "resume with the spec the run was trained with (its config.yaml names it), or "
            "start a new run without --resume"
        )


def _flow(value: Any, width: int = 80) -> str:
    """``value`` as one YAML flow line, wrapped beyond ``width`` characters."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=width).strip()


def _resumed_config(run: RunCheckpoint, checkpoint: str, flags: dict[str, Any]) -> dict[str, Any]:
    """A resumed run keeps its saved settings; only --epochs, --data-dir and --engine may
    change, and there must be epochs left to train. It logs to TensorBoard only when given
    --tensorboard."""
    kept = ("batch_size", "lr", "seed", "init_from", "freeze")
    fixed = [name for name in kept if flags.get(name) is not None]
    if fixed:
        option = "--" + fixed[0].replace("_", "-")
        raise click.UsageError(
            f"{option} cannot change when resuming: the run continues with the settings "
            f"saved in {checkpoint}"
        )
    # runs from before the engines were numpy runs: they resume on it, bit for bit
    config = resolve_config({"engine": "numpy", **run.config})
    for name in RESUME_MAY_CHANGE:
        if flags.get(name) is not None:
            config[name] = flags[name]
    config["tensorboard"] = flags.get("tensorboard")  # this command's choice, never the file's
    done = run.state.epoch
    if config["epochs"] <= done:
        raise click.UsageError(
            f"{checkpoint} has trained {done} epoch{'s' if done != 1 else ''} of its "
            f"{config['epochs']} already — give --epochs above {done} to train more"
        )
    return config


def _dataset(config: dict[str, Any], split: str, net: Any) -> Dataset:
    dataset = load_dataset(
        config["dataset"],
        split,
        data_dir=config.get("data_dir"),
        image_shape=net.input_shape if config["dataset"] == "folder" else None,
        progress=_download_bar(),
    )
    if dataset.image_shape != net.input_shape:
        raise DataError(
            f"{config['dataset']} images are {dataset.image_shape} (channels, height, width) "
            f"but the network's input is {net.input_shape} — change `input:` in the spec"
        )
    if dataset.num_classes != net.classes:
        raise DataError(
            f"{config['dataset']} has {dataset.num_classes} classes but the network has "
            f"{net.classes} — change `classes:` and the last dense layer in the spec"
        )
    return dataset


def _download_bar():
    def progress(done: int, total: int | None) -> None:
        if total:
            click.echo(
                f"\rdownloading: {done / total:6.1%} of {total / 1e6:.1f} MB", nl=False, err=True
            )
        else:
            click.echo(f"\rdownloading: {done / 1e6:.1f} MB", nl=False, err=True)
        if total and done >= total:
            click.echo("", err=True)

    return progress


def _draw_curves(run_dir: Path) -> None:
    from cnnbuild.plot import plot_history

    try:
        plot_history(run_dir)
    except CnnbuildError as error:
        click.echo(f"note: {error}", err=True)


def _write_report(run_dir: Path, test_set: Dataset) -> None:
    try:
        click.echo(f"wrote {report_from_cli(run_dir, dataset=test_set)}", err=True)
    except CnnbuildError as error:
        click.echo(f"note: report.html not written: {error}", err=True)


# --- evaluate and predict --------------------------------------------------------------------


def evaluate_report(
    checkpoint: str, split: str, data_dir: str | None, engine: str | None = None
) -> str:
    """Accuracy, per-class accuracy and the confusion matrix, as text."""
    model = load_trained(checkpoint, engine or "auto")
    dataset = _checkpoint_dataset(model.run.config, split, data_dir, model.net)
    predictions = model.probabilities(dataset.images).argmax(axis=1)
    counts = confusion_matrix(dataset.labels, predictions, model.net.classes)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    per_class = np.diag(counts) / np.maximum(counts.sum(axis=1), 1)
    width = max(len(name) for name in model.class_names)
    lines = [
        f"{model.net.name} on {dataset.name} {split}: accuracy {accuracy:.4f} "
        f"({np.trace(counts):,} of {counts.sum():,})",
        "",
        "per-class accuracy:",
        *(
            f"  {name:<{width}}  {acc:.4f}  ({counts[i, i]:,} of {counts[i].sum():,})"
            for i, (name, acc) in enumerate(zip(model.class_names, per_class, strict=True))
        ),
        "",
        "confusion matrix (rows: true class, columns: predicted):",
        confusion_table(counts, model.class_names),
    ]
    return "\n".join(lines)


def predict_report(
    checkpoint: str,
    image_files: tuple[str, ...],
    indices: tuple[int, ...],
    split: str,
    data_dir: str | None,
    top_k: int,
    show: bool,
    engine: str | None = None,
) -> Iterator[str]:
    """The top-k classes for each dataset index and each image file, line by line (with
    ``show``, each index's image is written after its prediction is given)."""
    model = load_trained(checkpoint, engine or "auto")
    top_k = min(top_k, model.net.classes)
    if indices:
        dataset = _checkpoint_dataset(model.run.config, split, data_dir, model.net)
        for index in indices:
            if index >= len(dataset):
                raise click.BadParameter(
                    f"{index} is out of range: the {split} split has {len(dataset):,} images "
                    f"(0 to {len(dataset) - 1:,})",
                    param_hint="--index",
                )
        images = dataset.images[list(indices)]
        probabilities = model.probabilities(images)
        for index, image, p in zip(indices, images, probabilities, strict=True):
            truth = model.class_names[dataset.labels[index]]
            guess = model.class_names[int(p.argmax())]
            verdict = "right" if guess == truth else "wrong"
            yield f"{split}[{index}]: predicted {guess}, true {truth} ({verdict})"
            yield from _top(p, model.class_names, top_k)
            if show:
                path = _write_png(image, f"{split}_{index}")
                yield f"  image written to {path} (predicted {guess}, true {truth})"
    if image_files:
        images = np.stack([load_image_file(path, model.net.input_shape) for path in image_files])
        for path, p in zip(image_files, model.probabilities(images), strict=True):
            yield f"{path}: predicted {model.class_names[int(p.argmax())]}"
            yield from _top(p, model.class_names, top_k)


def _top(p: np.ndarray, names: list[str], k: int) -> list[str]:
    order = np.argsort(-p, kind="stable")[:k]
    width = max(len(names[i]) for i in order)
    return [f"  {names[i]:<{width}}  {p[i]:7.2%}" for i in order]


def _write_png(image: np.ndarray, stem: str) -> Path:
    """Write a uint8 (C, H, W) image, enlarged for viewing (nearest neighbour, to up to 256
    pixels), to a new file in the current folder: ``stem.png``, or ``stem-2.png``, ... so
    that no file is overwritten. Needs no Pillow."""
    encoded = encode_png(enlarge(image, 256))
    for number in range(1, 10_000):
        path = Path(f"{stem}.png" if number == 1 else f"{stem}-{number}.png")
        try:
            with path.open("xb") as file:  # "x": never replaces an existing file
                file.write(encoded)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise CnnbuildError(
                f"cannot write {path.resolve()}: {error.strerror} — run predict --show from a "
                "folder you can write to"
            ) from None
    raise CnnbuildError(f"{stem}.png to {stem}-9999.png all exist — remove some")


def _checkpoint_dataset(
    saved: dict[str, Any], split: str, data_dir: str | None, net: Any
) -> Dataset:
    """The split of the dataset a checkpoint was trained on, from ``data_dir`` if given."""
    config = resolve_config(saved)
    if data_dir is not None:
        config["data_dir"] = data_dir
    try:
        return _dataset(config, split, net)
    except DataError as error:
        if data_dir is not None or not config["data_dir"]:
            raise
        raise DataError(
            f"{error}\n(the checkpoint was trained on data in {config['data_dir']}; if it is "
            "elsewhere now, give --data-dir)"
        ) from None


# --- spec ------------------------------------------------------------------------------------

SPEC_HEADER = """\
# yaml-language-server: $schema=cnnbuild.schema.json
# (`cnnbuild schema > cnnbuild.schema.json` writes the schema beside this file for editors.)
# The architecture and training settings saved in {checkpoint}, written by `cnnbuild spec`.
"""


def spec_from_checkpoint(checkpoint: str) -> str:
    """The architecture and resolved training settings a checkpoint holds, as a YAML spec
    that validates and rebuilds the same network (one layer a line, as in archs/)."""
    _, spec = checked_run(checkpoint)
    data = spec.data
    head = {k: v for k, v in data.items() if k not in ("layers", "training", "blocks")}
    lines = [SPEC_HEADER.format(checkpoint=checkpoint).rstrip()]
    lines.append(yaml.safe_dump(head, sort_keys=False, default_flow_style=None).rstrip())
    if data.get("blocks"):
        lines.append("blocks:")
        for name, block in data["blocks"].items():
            lines.append(f"  {name}:")
            if "params" in block:
                lines.append(f"    params: {_flow(block['params'])}")
            lines.append("    layers:")
            lines += [f"      - {_flow(item, width=1000)}" for item in block["layers"]]
    lines.append("layers:")
    lines += [f"  - {_flow(item)}" for item in data["layers"]]
    training = yaml.safe_dump({"training": data["training"]}, sort_keys=False)
    lines.append(training.rstrip())
    return "\n".join(lines) + "\n"


def write_text(path: str, text: str | bytes) -> None:
    """Write ``text`` to ``path`` atomically, as a one-line error if the folder refuses."""
    data = text if isinstance(text, bytes) else text.encode()
    try:
        atomic_write(Path(path), lambda file: file.write(data))
    except OSError as error:
        raise CnnbuildError(f"cannot write {path}: {error.strerror}") from None


# --- diagram ---------------------------------------------------------------------------------


def draw(source: str, fmt: str, output: str | None, overrides: tuple[str, ...] = ()) -> str | None:
    """The diagram of a spec file (with ``overrides``) or a checkpoint's network in ``fmt``;
    written to ``output`` when given (then None), else returned as text (png needs
    ``output``)."""
    from cnnbuild.diagram import diagram

    if source.endswith(".npz"):
        if overrides:
            raise click.UsageError("--set changes spec files; SOURCE is a checkpoint")
        spec = checked_run(source)[1]
    else:
        spec = read_spec(source, overrides)
    drawn = diagram(plan(spec), fmt)
    if output is None:
        if isinstance(drawn, bytes) and fmt == "png":
            raise CnnbuildError("--format png writes a binary file: give -o FILE.png")
        return drawn.decode() if isinstance(drawn, bytes) else drawn
    write_text(output, drawn)
    return None


# --- report ----------------------------------------------------------------------------------


def report_from_cli(
    source: str | Path,
    output: str | Path | None = None,
    split: str = "test",
    data_dir: str | None = None,
    dataset: Dataset | None = None,
) -> Path:
    """Write the HTML report of a run folder, checkpoint or sweep folder (``source``) to
    ``output`` (default: report.html in its folder); predictions are made on ``split`` of
    the checkpoint's dataset, or on ``dataset`` when given. Returns the file written."""
    from cnnbuild.report import architecture_svg, default_output, find_run, render_report

    files = find_run(source)
    model = svg = None
    note = ""
    if files.checkpoint is not None:
        model = load_trained(files.checkpoint)
        if dataset is None:
            dataset = _checkpoint_dataset(model.run.config, split, data_dir, model.net)
        svg, note = architecture_svg(model.net)
    html = render_report(files, model, dataset, split, svg, note)
    path = Path(output) if output is not None else default_output(source)
    write_text(str(path), html)
    return path
