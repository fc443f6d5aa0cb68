"""The run report: one self-contained HTML page per run (``cnnbuild report``).

Everything is inline: charts are SVG written by ``cnnbuild.charts``, dataset images PNG
data URIs from ``cnnbuild.png``, the architecture Graphviz's SVG when Graphviz is installed
(else a note). The page references nothing outside itself, so it works offline, mailed or
archived, and prints. A sweep folder (with ``sweep.csv``) gets a leaderboard section.
"""

from __future__ import annotations

import csv
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnbuild import __version__
from cnnbuild.charts import heatmap, line_chart
from cnnbuild.checkpoint import read_run
from cnnbuild.console import duration
from cnnbuild.data import Dataset
from cnnbuild.errors import CnnbuildError
from cnnbuild.graph import Network
from cnnbuild.inference import TrainedModel, confusion_matrix
from cnnbuild.overrides import read_spec
from cnnbuild.png import SIGNATURE, data_uri, encode_png
from cnnbuild.summary import summarize
from cnnbuild.train import resolve_config

MISTAKES = 32  # the most confidently wrong images shown
EXAMPLES = 40  # correct examples shown in all, spread over the classes (at most 4 each)
TRAIN_FLAGS = ("epochs", "batch_size", "seed", "data_dir", "tensorboard")  # --lr aside


class ReportError(CnnbuildError):
    """A report cannot be made from what was given."""


@dataclass
class RunFiles:
    """What a report is made from: a run folder's files, or one checkpoint."""

    folder: Path
    checkpoint: Path | None  # predictions come from it: best.npz in a run folder
    history_from: Path | None  # the checkpoint with the longest history: last.npz
    config: dict[str, Any] | None  # config.yaml, when the folder has one
    sweep: Path | None  # sweep.csv of a sweep folder


def find_run(source: str | Path) -> RunFiles:
    """The files of the run folder or checkpoint ``source``."""
    source = Path(source)
    if source.is_dir():
        folder = source
        checkpoint = next(
            (p for p in (folder / "best.npz", folder / "last.npz") if p.exists()), None
        )
        last = folder / "last.npz"
        history_from = last if last.exists() else checkpoint
    else:
        folder, checkpoint, history_from = source.parent, source, source
    sweep = folder / "sweep.csv" if source.is_dir() and (folder / "sweep.csv").exists() else None
    if checkpoint is None and sweep is None:
        raise ReportError(
            f"{source} holds no best.npz, last.npz or sweep.csv — give a run folder "
            "(runs/<name>), a checkpoint, or a sweep folder"
        )
    config = None
    if checkpoint is not None and (folder / "config.yaml").exists():
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            config = None  # the command line is then rebuilt from the checkpoint
    return RunFiles(folder, checkpoint, history_from, config, sweep)


def default_output(source: str | Path) -> Path:
    """report.html in the run folder (a checkpoint's folder)."""
    source = Path(source)
    return (source if source.is_dir() else source.parent) / "report.html"


def architecture_svg(net: Network) -> tuple[str | None, str]:
    """(the ``cnnbuild diagram`` SVG of ``net`` for inlining, or None and why not)."""
    from cnnbuild.diagram import diagram

    try:
        svg = diagram(net, "svg")
    except CnnbuildError as error:
        return None, f"No diagram: {error}."
    text = svg.decode() if isinstance(svg, bytes) else svg
    return text[text.index("<svg") :], ""  # without the XML declaration and doctype


def render_report(
    files: RunFiles,
    model: TrainedModel | None = None,
    dataset: Dataset | None = None,
    split: str = "test",
    diagram_svg: str | None = None,
    diagram_note: str = "",
) -> str:
    """The report page: ``model`` is the checkpoint's network, ``dataset`` the split its
    predictions are shown on; ``diagram_svg`` the architecture (else ``diagram_note``)."""
    sections: list[str] = []
    title = files.folder.name
    if model is not None and dataset is not None:
        history = read_run(files.history_from or files.checkpoint).state.history
        p = model.probabilities(dataset.images)
        title = f"{model.net.name} on {dataset.name}"
        sections += [
            _header(files, model, dataset, split, history, files.sweep is not None),
            _architecture(model, diagram_svg, diagram_note),
            _curves(history),
            _classes(model, dataset, p, split),
            _mistakes(model, dataset, p, split),
            _examples(model, dataset, p, split),
        ]
    if files.sweep is not None:
        if not sections:
            sections.append(f"<header><h1>{escape(title)}: sweep</h1></header>")
        sections.append(_sweep(files.sweep))
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = "\n".join(sections)
    footer = f"<footer>Written by cnnbuild {escape(__version__)} on {written}.</footer>"
    return PAGE.format(title=escape(title), style=STYLE, body=body, footer=footer)


# --- sections ----------------------------------------------------------------------------------


def _header(
    files: RunFiles,
    model: TrainedModel,
    dataset: Dataset,
    split: str,
    history: list[dict[str, float]],
    sweep: bool,
) -> str:
    run, checkpoint = model.run, model.path
    facts = [
        ("network", f"{model.net.name} ({summarize(model.net).trainable:,} parameters)"),
        ("dataset", f"{dataset.name}; predictions below on its {split} split ({len(dataset):,})"),
        ("finished", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(checkpoint.stat().st_mtime))),
    ]
    if history:
        seconds = sum(record["seconds"] for record in history)
        epochs = int(history[-1]["epoch"])
        facts.append(
            ("trained", f"{epochs} epoch{'s' if epochs != 1 else ''} in {duration(seconds)}")
        )
        measured = "val_accuracy" if "val_accuracy" in history[-1] else "test_accuracy"
        best = max(history, key=lambda record: record[measured])
        which = "validation" if measured == "val_accuracy" else "test"
        also = f", test {best['test_accuracy']:.2%}" if measured == "val_accuracy" else ""
        facts.append(
            (f"best {which} accuracy", f"{best[measured]:.2%} at epoch {int(best['epoch'])}{also}")
        )
        last = history[-1]
        lasts = [f"test {last['test_accuracy']:.2%}"]
        if "val_accuracy" in last:
            lasts.insert(0, f"validation {last['val_accuracy']:.2%}")
        facts.append(("last epoch", ", ".join(lasts)))
    if run.state.stop_reason:
        facts.append(("stopped", run.state.stop_reason))
    facts.append(("checkpoint", f"{checkpoint} (epoch {run.state.epoch})"))
    rows = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in facts)
    command = reproduce_command(files, model)
    return (
        f"<header><h1>{escape(model.net.name)} <span>on {escape(dataset.name)}</span></h1>"
        f'<dl class="facts">{rows}</dl>'
        f"<p>Reproduce the run:</p><pre><code>{escape(command)}</code></pre>"
        f"{_contents(sweep)}</header>"
    )


def _contents(sweep: bool) -> str:
    links = [
        ("architecture", "Architecture"),
        ("curves", "Learning curves"),
        ("classes", "Classes"),
        ("mistakes", "Mistakes"),
        ("examples", "Examples"),
    ] + ([("sweep", "Sweep")] if sweep else [])
    items = "".join(f'<li><a href="#{anchor}">{name}</a></li>' for anchor, name in links)
    return f'<nav><ul class="contents">{items}</ul></nav>'


def reproduce_command(files: RunFiles, model: TrainedModel) -> str:
    """``cnnbuild train`` with the spec file, overrides and flags that give this run, when
    the spec file (as config.yaml names it) still gives the same network and settings;
    else the spec rewritten from the checkpoint, then trained."""
    record = files.config or {}
    name = shlex.quote(f"{model.net.name}.yaml")
    fallback = f"cnnbuild spec {shlex.quote(str(model.path))} -o {name} && cnnbuild train {name}"
    try:
        spec = read_spec(record["spec"], record.get("overrides") or [])
        trained = resolve_config(record["training"])  # with settings added since, at default
        given = resolve_config(spec.data.get("training", {}))
    except (CnnbuildError, OSError, KeyError, TypeError, AttributeError):
        return fallback
    trained["engine"] = given["engine"]  # it changes results by float rounding only
    flags = {key: trained[key] for key in TRAIN_FLAGS if trained[key] != given[key]}
    lr = trained["optimizer"].get("lr")
    if lr is not None and lr != given["optimizer"].get("lr"):
        flags["lr"] = lr
    network = record.get("network") or {}
    same_network = all(
        spec.data.get(key) == network.get(key) for key in ("name", "input", "classes", "layers")
    )
    if not same_network or resolve_config(spec.data.get("training", {}), **flags) != trained:
        return fallback
    words = ["cnnbuild", "train", record["spec"]]
    for override in record.get("overrides") or []:
        words += ["--set", override]
    for key, value in flags.items():
        words += ["--" + key.replace("_", "-"), str(value)]
    return " ".join(shlex.quote(str(word)) for word in words)


def _architecture(model: TrainedModel, svg: str | None, note: str) -> str:
    summary = summarize(model.net)
    with_inputs = any(row.inputs for row in summary.rows)
    head = ["layer", "type", "output shape", "params", "mult-adds"] + (
        ["inputs"] if with_inputs else []
    )
    body = []
    for row in summary.rows:
        cells = [
            escape(row.name),
            escape(row.type),
            "(" + ", ".join(map(str, row.output_shape)) + ")",
            f"{row.params + row.buffers:,}",
            f"{row.macs:,}",
        ] + ([escape(", ".join(row.inputs))] if with_inputs else [])
        body.append(cells)
    totals = [
        ("trainable parameters", f"{summary.trainable:,}"),
        ("non-trainable parameters", f"{summary.non_trainable:,}"),
        ("mult-adds per image", f"{summary.macs:,}"),
    ]
    table = _table(head, body, numeric={3, 4})
    total_rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in totals)
    drawing = f'<div class="diagram">{svg}</div>' if svg else f'<p class="note">{escape(note)}</p>'
    return (
        '<section id="architecture"><h2>Architecture</h2><div class="split">'
        f'{drawing}<div class="layers">{table}<dl class="facts">{total_rows}</dl></div>'
        "</div></section>"
    )


def _curves(history: list[dict[str, float]]) -> str:
    if not history:
        return '<section id="curves"><h2>Learning curves</h2><p>No epoch finished.</p></section>'
    epochs = [record["epoch"] for record in history]

    def series(**columns: str) -> dict[str, list[float]]:
        return {
            name: [record[column] for record in history]
            for name, column in columns.items()
            if column in history[0]
        }

    charts = [
        line_chart(
            "loss",
            epochs,
            series(train="loss", validation="val_loss", test="test_loss"),
            "cross-entropy",
        ),
        line_chart(
            "accuracy",
            epochs,
            series(train="train_accuracy", validation="val_accuracy", test="test_accuracy"),
            "accuracy",
        ),
        line_chart("learning rate", epochs, series(lr="lr"), zero=True),
    ]
    note = (
        '<p class="note">Train loss and accuracy are measured on the batches as they are trained '
        "(dropout and augmentation on); validation and test ones on the whole split at the end of "
        "each epoch. The learning rate is that of each epoch's last step.</p>"
    )
    figures = "".join(f"<figure>{chart}</figure>" for chart in charts)
    return (
        f'<section id="curves"><h2>Learning curves</h2><div class="charts">{figures}</div>'
        f"{note}</section>"
    )


def _classes(model: TrainedModel, dataset: Dataset, p: np.ndarray, split: str) -> str:
    names = model.class_names
    predicted = p.argmax(axis=1)
    counts = confusion_matrix(dataset.labels, predicted, len(names))
    total = int(counts.sum())
    accuracy = np.trace(counts) / max(total, 1)
    rows = []
    for i, name in enumerate(names):
        seen = int(counts[i].sum())
        share = counts[i, i] / seen if seen else math.nan
        off = counts[i].copy()
        off[i] = 0
        confused = f"{escape(names[int(off.argmax())])} ({off.max():,})" if off.max() else "—"
        bar = (
            f'<span class="bar"><span style="width:{share * 100:.1f}%"></span></span>'
            if seen
            else ""
        )
        rows.append(
            [
                escape(name),
                f"{share:.2%}" if seen else "—",
                bar,
                f"{counts[i, i]:,} of {seen:,}",
                confused,
            ]
        )
    table = _table(["class", "accuracy", "", "right", "most often taken for"], rows, numeric={1, 3})
    return (
        f'<section id="classes"><h2>Classes</h2><p>Accuracy on the {escape(split)} split: '
        f"<strong>{accuracy:.2%}</strong> ({np.trace(counts):,} of {total:,}).</p>"
        f'<div class="split"><div>{table}</div><figure>{heatmap(counts, names)}'
        "<figcaption>Confusion matrix: rows are the true classes, columns the predicted ones; "
        "blue cells are right, orange ones mistakes (the most common darkest).</figcaption>"
        "</figure></div></section>"
    )


def _mistakes(model: TrainedModel, dataset: Dataset, p: np.ndarray, split: str) -> str:
    predicted = p.argmax(axis=1)
    wrong = np.flatnonzero(predicted != dataset.labels)
    confidence = p[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")[:MISTAKES]]
    if not len(worst):
        return (
            '<section id="mistakes"><h2>Mistakes</h2><p>None: every image is right.</p></section>'
        )
    tiles = "".join(_tile(model, dataset, p, split, int(i)) for i in worst)
    return (
        f'<section id="mistakes"><h2>Mistakes</h2><p>The {len(worst)} images the network is '
        f"most sure of and gets wrong, of {len(wrong):,} wrong in all, each with the class it "
        "predicts, its probability, and the true class.</p>"
        f'<div class="gallery">{tiles}</div></section>'
    )


def _examples(model: TrainedModel, dataset: Dataset, p: np.ndarray, split: str) -> str:
    names = model.class_names
    predicted = p.argmax(axis=1)
    each = max(1, min(4, EXAMPLES // len(names)))
    groups = []
    for label, name in enumerate(names):
        right = np.flatnonzero((dataset.labels == label) & (predicted == label))[:each]
        tiles = (
            "".join(_tile(model, dataset, p, split, int(i)) for i in right) or "<p>none right</p>"
        )
        groups.append(
            f'<div class="group"><h3>{escape(name)}</h3><div class="gallery">{tiles}</div></div>'
        )
    return (
        f'<section id="examples"><h2>Examples</h2><p>The first {each} images of each class that '
        f'the network gets right.</p><div class="groups">{"".join(groups)}</div></section>'
    )


def _tile(model: TrainedModel, dataset: Dataset, p: np.ndarray, split: str, index: int) -> str:
    names = model.class_names
    image = dataset.images[index]
    truth, guess = int(dataset.labels[index]), int(p[index].argmax())
    width = min(96, 2 * image.shape[-1])
    verdict = "right" if truth == guess else "wrong"
    caption = (
        f"{p[index, guess]:.0%}"
        if truth == guess
        else f"<b>{escape(names[guess])}</b> {p[index, guess]:.0%}<br>true {escape(names[truth])}"
    )
    alt = f"{split}[{index}]: true {names[truth]}, predicted {names[guess]}"
    return (
        f'<figure class="tile {verdict}" style="width:{max(width + 12, 88)}px">'
        f'<img src="{data_uri(encode_png(image))}" '
        f'width="{width}" height="{width}" alt="{escape(alt)}" title="{escape(alt)}">'
        f"<figcaption>{caption}<br><small>#{index}</small></figcaption></figure>"
    )


def _sweep(path: Path) -> str:
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ReportError(f"{path}: cannot be read as CSV ({error})") from None
    columns = list(rows[0]) if rows else []
    # ranked by the first accuracy (highest first) or loss (lowest first) column: the metric
    score = next((c for c in columns if c.endswith(("accuracy", "loss"))), None)
    if score is not None:
        sign = -1 if score.endswith("accuracy") else 1
        rows.sort(
            key=lambda row: (math.isnan(_number(row.get(score))), sign * _number(row.get(score)))
        )
    numeric = {i for i, column in enumerate(columns) if _numeric([row.get(column) for row in rows])}
    body = [[escape(_cell(row.get(column))) for column in columns] for row in rows]
    order = f", best {escape(score)} first" if score else ""
    pictures = ""
    for png in sorted(path.parent.glob("*.png")):
        data = png.read_bytes()
        if data.startswith(SIGNATURE):
            pictures += (
                f'<figure><img class="plot" src="{data_uri(data)}" alt="{escape(png.name)}">'
                f"<figcaption>{escape(png.name)}</figcaption></figure>"
            )
    return (
        f'<section id="sweep"><h2>Sweep</h2><p>{len(rows)} trials from {escape(path.name)}'
        f"{order}.</p>"
        f'<div class="wide">{_table([escape(c) for c in columns], body, numeric)}</div>'
        f"{pictures}</section>"
    )


# --- helpers -----------------------------------------------------------------------------------


def _table(head: Sequence[str], body: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """An HTML table of cells already escaped; ``numeric`` columns align right."""

    def cells(tag: str, row: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="num">{cell}</{tag}>' if i in numeric else f"<{tag}>{cell}</{tag}>"
            for i, cell in enumerate(row)
        )

    rows = "".join(f"<tr>{cells('td', row)}</tr>" for row in body)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{rows}</tbody></table>"


def _numeric(texts: list[str | None]) -> bool:
    """Whether the texts given (not empty) are all numbers, and there are some."""
    given = [text for text in texts if text]
    return bool(given) and not any(math.isnan(_number(text)) for text in given)


def _number(text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _cell(text: str | None) -> str:
    value = _number(text)
    if math.isnan(value) or "." not in (text or ""):
        return text or ""
    return f"{value:.4g}"


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · cnnbuild report</title>
<style>{style}</style>
</head>
<body>
<main>
{body}
</main>
{footer}
</body>
</html>
"""

STYLE = """
:root { color-scheme: light; --ink: #1d1d1f; --muted: #5b5b66; --line: #e2e2e8;
  --right: #0072b2; --wrong: #c8461a; --panel: #f6f6f9; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 20px 8px; }
h1 { font-size: 1.7rem; margin: 0.2em 0 0.4em; }
h1 span { color: var(--muted); font-weight: 400; }
h2 { font-size: 1.25rem; margin: 1.6em 0 0.5em; padding-bottom: 0.2em;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 0.95rem; margin: 0 0 4px; }
section { break-inside: auto; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 8px; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
pre { background: var(--panel); padding: 8px 12px; border-radius: 6px; margin: 4px 0 8px;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.85rem; }
.contents { list-style: none; padding: 0; margin: 8px 0 0; display: flex; flex-wrap: wrap;
  gap: 6px; }
.contents a { display: inline-block; padding: 2px 10px; border: 1px solid var(--line);
  border-radius: 12px; color: var(--right); text-decoration: none; font-size: 0.9rem; }
.note, figcaption { color: var(--muted); font-size: 0.85rem; }
figure { margin: 0; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left;
  white-space: nowrap; }
th { background: var(--panel); font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.wide, .layers { overflow-x: auto; max-width: 100%; }
.split { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.split > * { min-width: 0; }
.diagram { flex: 0 1 auto; max-width: 100%; max-height: 640px; overflow: auto;
  border: 1px solid var(--line); border-radius: 6px; padding: 4px; }
.diagram svg { max-width: 100%; height: auto; }
.layers { flex: 1 1 420px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
svg.chart { width: 100%; height: auto; }
svg.heatmap { width: 100%; height: auto; }
.split > figure { flex: 1 1 360px; }
.bar { display: inline-block; width: 90px; height: 8px; background: var(--line);
  border-radius: 4px; }
.bar span { display: block; height: 100%; background: var(--right); border-radius: 4px; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { padding: 4px; border: 1px solid var(--line); border-radius: 6px; text-align: center;
  font-size: 0.75rem; line-height: 1.25; break-inside: avoid; overflow-wrap: anywhere; }
.tile.wrong { border-color: #f0b9a4; background: #fff6f2; }
.tile.wrong b { color: var(--wrong); }
.tile img { display: block; margin: 0 auto 3px; image-rendering: pixelated; background: #000; }
.tile figcaption { color: var(--ink); font-size: 0.75rem; }
.tile small { color: var(--muted); }
.groups { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
img.plot { max-width: 100%; height: auto; }
footer { max-width: 1180px; margin: 24px auto; padding: 0 20px; color: var(--muted);
  font-size: 0.8rem; }
@media (max-width: 600px) {
  body { font-size: 14px; } main { padding: 10px; }
  .facts { grid-template-columns: 1fr; } .facts dd { margin-bottom: 4px; }
}
@media print {
  body { font-size: 11pt; } main { max-width: none; padding: 0; }
  nav { display: none; } h2 { break-after: avoid; } figure, .tile, tr { break-inside: avoid; }
  .split { display: block; } .split > * + * { margin-top: 12px; }
  .diagram { max-height: none; overflow: visible; border: none; }
  .diagram svg { max-height: 22cm; width: auto; }
  .wide, .layers { overflow: visible; }
  pre { white-space: pre-wrap; }
}
"""
