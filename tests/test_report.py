"""`cnnbuild report`: one self-contained HTML page per run, checked as a browser reads it."""

import base64
import csv
import dataclasses
import itertools
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html import unescape as html_unescape
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from click.testing import CliRunner

import cnnbuild.commands
from cnnbuild.charts import heatmap, line_chart, nice_ticks
from cnnbuild.cli import main
from cnnbuild.png import SIGNATURE, encode_png

TINY_MNIST = """\
name: tinymnist
input: [1, 28, 28]
classes: 10
layers:
  - {type: conv, filters: 4, kernel: 3, padding: same}
  - {type: relu}
  - {type: maxpool, size: 4}
  - {type: dense, units: 10}
  - {type: softmax}
training:
  dataset: mnist
  batch_size: 32
  optimizer: {type: adam, lr: 0.01}
"""
SIZES = {"train": 600, "test": 300}  # the first images of the MNIST that ships with cnnbuild


def small_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the commands see only the first SIZES images of each split, for speed."""
    load = cnnbuild.commands.load_dataset

    def first_images(name, split, **options):
        dataset = load(name, split, **options)
        n = SIZES[split]
        return dataclasses.replace(dataset, images=dataset.images[:n], labels=dataset.labels[:n])

    monkeypatch.setattr(cnnbuild.commands, "load_dataset", first_images)


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, result.output


def train_tiny(folder: Path, *args) -> Path:
    """Train TINY_MNIST for one epoch on small_mnist; returns the run folder."""
    spec = folder / "tiny.yaml"
    spec.write_text(TINY_MNIST)
    out = folder / "run"
    result, output = run("train", spec, "--epochs", 1, "--out", out, *args)
    assert result.exit_code == 0, output
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        small_mnist(patch)
        patch.setitem(sys.modules, "matplotlib", None)  # no curves.png: it is most of the time
        return train_tiny(tmp_path_factory.mktemp("report"), "--set", "training.validation=100")


@pytest.fixture
def small(monkeypatch):
    small_mnist(monkeypatch)


def chromium_program() -> str:
    """The path of headless Chromium; CI installs it, so there a missing one fails."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def decoded_png(data: bytes) -> tuple[int, int, int]:
    """(width, height, channels) of a PNG from encode_png or any 8-bit grey/RGB/RGBA PNG
    without interlacing, after checking that its pixel data decompresses to that size."""
    assert data.startswith(SIGNATURE)
    position, idat, header = len(SIGNATURE), b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    assert depth == 8 and interlace == 0
    assert len(zlib.decompress(idat)) == height * (1 + width * channels)
    return width, height, channels


def check_self_contained(html: str) -> dict[str, int]:
    """Assert that every image of ``html`` decodes and nothing outside it is referenced;
    returns how many inline PNGs and SVGs it has."""
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    for encoded in pngs:
        decoded_png(base64.b64decode(encoded, validate=True))
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    for svg in svgs:
        ElementTree.fromstring(re.sub(r"\s(xmlns(:\w+)?)=\"[^\"]*\"", "", svg))
    sources = re.findall(r"\b(?:src|href|xlink:href)\s*=\s*[\"']?([^\"'\s>]*)", html)
    assert all(source.startswith(("data:image/png;base64,", "#")) for source in sources), [
        s[:40] for s in sources
    ]
    outside = re.sub(r"\sxmlns(:\w+)?=\"[^\"]*\"", "", html)  # names, not addresses
    outside = re.sub(r"base64,[^\"]+", "", outside)
    for reference in ("http:", "https:", "url(", "@import", "//"):
        assert reference not in outside, reference
    return {"png": len(pngs), "svg": len(svgs)}


def test_train_writes_a_report_with_every_section(run_dir):
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    found = check_self_contained(html)
    assert found["svg"] >= 4  # three learning curves and the confusion matrix (+ the diagram)
    assert "<h1>tinymnist <span>on mnist</span></h1>" in html
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    last = {key: float(value) for key, value in history[-1].items()}
    assert "<dt>best validation accuracy</dt>" in html
    assert (
        f"<dd>{last['val_accuracy']:.2%} at epoch 1, test {last['test_accuracy']:.2%}</dd>" in html
    )
    accuracy_chart = re.search(r"<title>accuracy</title>.*?</svg>", html).group()
    assert accuracy_chart.count("<circle") == 3  # train, validation and test at epoch 1
    command = html_unescape(re.search(r"<pre><code>(.*?)</code></pre>", html).group(1))
    spec = run_dir.parent / "tiny.yaml"
    assert command == f"cnnbuild train {spec} --set training.validation=100 --epochs 1"
    wrong, tiles = html.count('class="tile wrong"'), html.count('class="tile right"')
    right = [int(n) for n in re.findall(r'<td class="num">(\d+) of \d+</td>', html)]
    assert len(right) == 10  # the per-class table: right images of each class
    assert wrong == 32 and tiles == sum(min(4, n) for n in right) > 20
    assert found["png"] == wrong + tiles
    for section in ("architecture", "curves", "classes", "mistakes", "examples"):
        assert f'<section id="{section}">' in html
    assert html.count("<td>5</td>") == 1  # one row per class in the per-class table


def test_the_report_agrees_with_evaluate(run_dir, small):
    result, output = run("evaluate", run_dir / "best.npz")
    assert result.exit_code == 0, output
    right_of_all = re.search(r"accuracy [\d.]+ \((\d+) of (\d+)\)", output).groups()
    html = (run_dir / "report.html").read_text()
    assert f"({right_of_all[0]} of {right_of_all[1]})." in html
    confusion = re.findall(r"<title>true (\d), predicted (\d): (\d+) ", html)
    assert len(confusion) == 100
    assert sum(int(n) for *_, n in confusion) == SIZES["test"]
    diagonal = sum(int(n) for a, b, n in confusion if a == b)
    assert diagonal == int(right_of_all[0])


def test_a_checkpoint_alone_makes_a_report_of_either_split(run_dir, small, tmp_path):
    alone = tmp_path / "copy.npz"
    shutil.copy(run_dir / "best.npz", alone)
    result, output = run("report", alone, "--split", "train", "-o", tmp_path / "r.html")
    assert result.exit_code == 0, output
    html = (tmp_path / "r.html").read_text()
    check_self_contained(html)
    assert f"of {SIZES['train']})." in html and "its train split (600)" in html
    command = html_unescape(re.search(r"<pre><code>(.*?)</code></pre>", html).group(1))
    assert command == f"cnnbuild spec {alone} -o tinymnist.yaml && cnnbuild train tinymnist.yaml"


def test_without_graphviz_the_report_says_why_there_is_no_diagram(run_dir, small, monkeypatch):
    monkeypatch.setattr("cnnbuild.diagram.shutil.which", lambda name: None)
    result, output = run("report", run_dir, "-o", run_dir / "plain.html")
    assert result.exit_code == 0, output
    html = (run_dir / "plain.html").read_text()
    assert '<p class="note">No diagram: --format svg needs Graphviz' in html
    assert '<div class="diagram">' not in html and "<td>conv1</td>" in html


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(run_dir, tmp_path):
    chromium = chromium_program()
    shot = tmp_path / "report.png"
    rendered = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1000,1400",
            (run_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    for problem in ("Uncaught", ":CONSOLE", "Failed to load resource"):  # the page has no script
        assert problem not in rendered.stderr, rendered.stderr
    assert decoded_png(shot.read_bytes())[:2] == (1000, 1400)


def test_a_sweep_folder_gets_a_leaderboard(tmp_path):
    (tmp_path / "sweep.csv").write_text(
        "trial,state,val_loss,test_accuracy,training.optimizer.lr,error\n"
        "0,complete,0.31,0.91,0.01,\n1,complete,0.12,0.95,0.1,\n2,failed,,,1.0,diverged\n"
        "3,complete,0.2,0.93,0.03,\n"
    )
    (tmp_path / "history.png").write_bytes(encode_png(np.zeros((3, 4, 5), np.uint8)))
    (tmp_path / "importances.png").write_bytes(b"not a png")
    result, output = run("report", tmp_path)
    assert result.exit_code == 0, output
    html = (tmp_path / "report.html").read_text()
    assert check_self_contained(html) == {"png": 1, "svg": 0}
    trials = re.findall(r"<tr><td class=\"num\">(\d)</td>", html)
    assert trials == ["1", "3", "0", "2"]  # lowest val_loss first, the failed trial last
    assert "4 trials from sweep.csv, best val_loss first" in html
    assert '<td class="num">0.01</td>' in html and "<td>diverged</td>" in html


def test_a_folder_with_nothing_to_report_is_a_one_line_error(tmp_path):
    result, output = run("report", tmp_path)
    assert result.exit_code == 2
    assert output.strip().count("\n") == 0 and "holds no best.npz, last.npz or sweep.csv" in output


def test_ticks_cover_the_values():
    for low, high in ((0.88, 2.04), (0.01, 0.01), (0, 1e-4), (-3, 7), (0.37, 0.73)):
        ticks = nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 9
        assert all(b > a for a, b in itertools.pairwise(ticks))


def test_charts_are_svg_with_one_line_per_series_and_a_cell_per_pair():
    chart = ElementTree.fromstring(
        line_chart("loss", [1, 2, 3], {"train": [3.0, 2.0, 1.0], "test": [3, float("nan"), 2]})
    )
    lines = chart.findall("polyline")
    assert [len(line.get("points").split()) for line in lines] == [3, 2]  # NaN left out
    counts = np.array([[5, 1], [0, 7]])
    matrix = ElementTree.fromstring(heatmap(counts, ["cat", "dog & co"]))
    assert len(matrix.findall("rect")) == 4
    texts = [text.text for text in matrix.findall("text")]
    assert [t for t in texts if t.isdigit()] == ["5", "1", "7"] and "dog &amp; co" not in texts
