"""What the train, evaluate and predict commands do, between parsing and printing:
find the data, pick the run folder, wire the trainer to its callbacks and the console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from cnnbuild.builder import build
from cnnbuild.callbacks import Checkpointer, HistoryWriter, StopOnInterrupt, StopOnNonFinite
from cnnbuild.checkpoint import read_run
from cnnbuild.console import ConsoleProgress, confusion_table
from cnnbuild.data import DataError, Dataset, load_dataset, load_image_file
from cnnbuild.errors import CnnbuildError
from cnnbuild.inference import confusion_matrix, load_trained
from cnnbuild.specfile import read_spec
from cnnbuild.train import Trainer, TrainingFailed, resolve_config

INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C


def train_from_cli(spec_file: str, *, out: str | None, resume: str | None, **flags: Any) -> int:
    """Run `cnnbuild train`; returns the exit status."""
    spec = read_spec(spec_file)
    if resume:
        config = _resumed_config(resume, flags)
    else:
        config = resolve_config(spec.data.get("training", {}), **flags)
    net = build(spec, seed=config["seed"])
    train_set = _dataset(config, "train", net)
    test_set = _dataset(config, "test", net)
    run_dir = Path(out) if out else _run_folder(resume, net.name)
    if not resume and (run_dir / "last.npz").exists():
        raise CnnbuildError(
            f"{run_dir} already holds a run (last.npz) — continue it with --resume "
            f"{run_dir / 'last.npz'}, or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"spec": str(spec_file), "training": config}, sort_keys=False)
    )
    checkpoints, interrupts = Checkpointer(run_dir), StopOnInterrupt()
    callbacks = [HistoryWriter(run_dir), checkpoints, StopOnNonFinite(), interrupts]
    trainer = Trainer(net, config, train_set, test_set, [*callbacks, ConsoleProgress()])
    if resume:
        trainer.restore(resume)
    click.echo(
        f"training {net.name} on {config['dataset']}: {len(train_set):,} training and "
        f"{len(test_set):,} test images, {trainer.steps_per_epoch} steps per epoch; "
        f"run folder {run_dir}",
        err=True,
    )
    try:
        history = trainer.fit()
    except TrainingFailed as failure:
        kept = (
            f"; {checkpoints.last} holds the last good state" if checkpoints.last.exists() else ""
        )
        raise TrainingFailed(f"{failure}{kept}") from None
    if interrupts.interrupted:
        state, last = trainer.state, checkpoints.last
        click.echo(
            f"stopped at epoch {state.epoch + 1}, batch {state.batch}; saved {last} — "
            f"continue with --resume {last}",
            err=True,
        )
        return INTERRUPTED
    _draw_curves(run_dir)
    if history:
        best = max(history, key=lambda record: record["test_accuracy"])
        click.echo(
            f"best test accuracy {best['test_accuracy']:.4f} at epoch {best['epoch']}; "
            f"saved {run_dir / 'best.npz'} and {run_dir / 'last.npz'}",
            err=True,
        )
    return 0


def _resumed_config(checkpoint: str, flags: dict[str, Any]) -> dict[str, Any]:
    """A resumed run keeps its saved settings; only --epochs and --data-dir may change."""
    saved = read_run(checkpoint).config
    fixed = [name for name in ("batch_size", "lr", "seed") if flags.get(name) is not None]
    if fixed:
        option = "--" + fixed[0].replace("_", "-")
        raise click.UsageError(
            f"{option} cannot change when resuming: the run continues with the settings "
            f"saved in {checkpoint}"
        )
    config = resolve_config(saved)
    for name in ("epochs", "data_dir"):
        if flags.get(name) is not None:
            config[name] = flags[name]
    return config


def _run_folder(resume: str | None, name: str) -> Path:
    if resume:
        return Path(resume).parent
    base = Path("runs") / name
    candidate, number = base, 1
    while (candidate / "last.npz").exists():
        number += 1
        candidate = base.with_name(f"{name}-{number}")
    return candidate


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


# --- evaluate and predict --------------------------------------------------------------------


def evaluate_report(checkpoint: str, split: str, data_dir: str | None) -> str:
    """Accuracy, per-class accuracy and the confusion matrix, as text."""
    model = load_trained(checkpoint)
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
) -> str:
    """The top-k classes for each dataset index and each image file, as text."""
    model = load_trained(checkpoint)
    top_k = min(top_k, model.net.classes)
    lines: list[str] = []
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
            lines.append(f"{split}[{index}]: predicted {guess}, true {truth} ({verdict})")
            lines += _top(p, model.class_names, top_k)
            if show:
                lines.append(f"  image written to {_write_png(image, f'{split}_{index}.png')}")
    if image_files:
        images = np.stack([load_image_file(path, model.net.input_shape) for path in image_files])
        for path, p in zip(image_files, model.probabilities(images), strict=True):
            lines.append(f"{path}: predicted {model.class_names[int(p.argmax())]}")
            lines += _top(p, model.class_names, top_k)
    return "\n".join(lines)


def _top(p: np.ndarray, names: list[str], k: int) -> list[str]:
    order = np.argsort(-p, kind="stable")[:k]
    width = max(len(names[i]) for i in order)
    return [f"  {names[i]:<{width}}  {p[i]:7.2%}" for i in order]


def _write_png(image: np.ndarray, name: str) -> Path:
    """Write a uint8 (C, H, W) image, enlarged for viewing, to the current folder."""
    from cnnbuild.data.folder import pillow

    scale = max(1, 256 // max(image.shape[1:]))
    pixels = image.repeat(scale, axis=1).repeat(scale, axis=2)
    picture = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    path = Path(name)
    pillow().fromarray(np.ascontiguousarray(picture)).save(path)
    return path


def _checkpoint_dataset(
    saved: dict[str, Any], split: str, data_dir: str | None, net: Any
) -> Dataset:
    config = dict(saved)
    if "dataset" not in config:
        raise CnnbuildError("the checkpoint does not say which dataset it was trained on")
    if data_dir is not None:
        config["data_dir"] = data_dir
    return _dataset(config, split, net)
