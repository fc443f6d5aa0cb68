"""Layers are plugins: a layer defined in user code, or installed as a package with a
`cnnbuild.layers` entry point, works in YAML, summary, gradient checks, training,
checkpoints and the command line like a built-in one. The README's example runs as written."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import ROOT
from gradcheck import check_layer_gradients
from test_train import TEST, TRAIN

import cnnbuild
from cnnbuild.callbacks import standard_callbacks
from cnnbuild.errors import SpecError
from cnnbuild.inference import load_trained
from cnnbuild.layers import REGISTRY, Layer, register
from cnnbuild.options import Option, boolean, number
from cnnbuild.train import Trainer, resolve_config

PLUGIN_SOURCE = Path(__file__).parent / "plugin_example"

SPEC = """\
name: plugged
input: [1, 8, 8]
classes: 3
layers:
  - {name: conv1, type: conv, filters: 4, kernel: 3, padding: same}
  - {name: sq, type: square, scale: 0.5, gain: true}
  - {type: batchnorm}
  - {type: relu}
  - {type: maxpool, size: 2}
  - {type: flatten}
  - {type: dense, units: 3}
  - {type: softmax}
training:
  dataset: folder
  batch_size: 16
  optimizer: {type: adam, lr: 0.01}
  seed: 5
"""


def column(text: str, line: int, word: str) -> int:
    """The 1-based column of ``word`` on the 1-based ``line`` of ``text``."""
    return text.splitlines()[line - 1].index(word) + 1


def unregister(type_name: str, cls: type) -> None:
    """Remove ``cls`` if it is still the class registered under ``type_name``."""
    if cls is not None and REGISTRY.get(type_name) is cls:
        REGISTRY.unregister(type_name)


@pytest.fixture
def square():
    """A layer defined in user code, registered for one test only."""

    @register
    class Square(Layer):
        """y = scale * g * x * x, with g a learnt per-channel gain when ``gain`` is set."""

        type_name = "square"
        description = "Elementwise square: scale * x * x, times a learnt gain per channel."
        options: ClassVar[dict[str, Option]] = {
            "scale": number("Factor.", 1.0, minimum=0),
            "gain": boolean("Learn a gain per channel.", False),
        }

        def build(self, input_shapes, rng, dtype=np.float32):
            if self.config["gain"]:
                self.add_param("g", np.ones(input_shapes[0][0], dtype))

        def forward(self, xs, train=False):
            (x,) = xs
            self._x = x
            y = self.config["scale"] * x * x
            return y * self._gain(x) if self.params else y

        def backward(self, dy):
            x, scale = self._x, self.config["scale"]
            if not self.params:
                return [2 * scale * x * dy]
            axes = (0, *range(2, x.ndim))
            self.grads["g"][...] = np.sum(dy * scale * x * x, axis=axes)
            return [2 * scale * self._gain(x) * x * dy]

        def _gain(self, x):
            return self.params["g"].reshape(-1, *[1] * (x.ndim - 2))

    yield Square
    unregister("square", Square)


# --- a layer defined in user code -----------------------------------------------------------


def test_a_registered_layer_is_accepted_in_yaml_and_built(square, write_spec):
    net = cnnbuild.load(write_spec(SPEC), seed=0)
    assert isinstance(net.layers["sq"], square)
    assert net.layers["sq"].config == {"scale": 0.5, "gain": True}
    assert net.params["sq.g"].shape == (4,)
    table = str(net.summary())
    assert re.search(r"^sq\s+square\s+\(4, 8, 8\)\s+4\b", table, re.M), table
    from_text = cnnbuild.loads(SPEC, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), from_text.forward(x))


@pytest.mark.parametrize("gain", [False, True])
def test_the_registered_layer_passes_a_gradient_check(square, gain):
    for shape in [(3, 4, 5), (6,)]:
        layer = square(name="sq", scale=0.7, gain=gain)
        rng = np.random.default_rng(1)
        layer.build([shape], rng, np.float64)
        if gain:
            layer.params["g"][...] = rng.uniform(0.5, 1.5, shape[0])
        check_layer_gradients(layer, [rng.standard_normal((2, *shape))])


def test_the_registered_layer_trains_and_round_trips_a_checkpoint(square, tmp_path):
    net = cnnbuild.loads(SPEC, seed=0)
    before = net.params["sq.g"].copy()
    config = resolve_config(net.spec["training"], epochs=1)
    trainer = Trainer(net, config, TRAIN, TEST, standard_callbacks(tmp_path / "run"))
    (record,) = trainer.fit()
    assert np.isfinite(record["loss"])
    assert not np.array_equal(net.params["sq.g"], before), "the plugin's weight was not trained"

    path = trainer.save(tmp_path / "plugged.npz")
    model = load_trained(path, engine="numpy")  # the engine that trained it: the same bits
    assert isinstance(model.net.layers["sq"], square)
    np.testing.assert_array_equal(model.net.params["sq.g"], net.params["sq.g"])
    expected = net.predict(TEST.images, prepare=trainer.normalization.apply)
    np.testing.assert_array_equal(model.probabilities(TEST.images), expected)
    assert load_trained(tmp_path / "run" / "last.npz").net.layers["sq"].config["gain"] is True


def test_a_misspelt_option_of_the_plugin_is_located_like_a_built_in_one(square, write_spec):
    text = SPEC.replace("scale: 0.5", "scael: 0.5")
    path = write_spec(text)
    with pytest.raises(SpecError) as caught:
        cnnbuild.load(path)
    (problem,) = caught.value.problems
    where = f"{path}:6:{column(text, 6, 'scael')}: layers[1] 'sq' (square)"
    assert problem.startswith(f"{where}: unknown key 'scael'"), problem
    assert "did you mean 'scale'?" in problem
    assert "allowed keys: gain, inputs, name, scale, type" in problem

    with pytest.raises(SpecError, match=r"'sq' \(square\): 'scale' must be >= 0, got -1"):
        cnnbuild.loads(SPEC.replace("scale: 0.5", "scale: -1"))


def test_an_unregistered_layer_is_refused_again(square, write_spec):
    path = write_spec(SPEC)
    cnnbuild.load(path)
    REGISTRY.unregister("square")
    with pytest.raises(SpecError) as caught:
        cnnbuild.load(path)
    (problem,) = caught.value.problems
    where = f"{path}:6:{column(SPEC, 6, 'square')}: layers[1] 'sq' (square)"
    assert problem.startswith(f"{where}: unknown layer type 'square'"), problem
    assert "square" not in REGISTRY


# --- a plugin package, installed, through the command line --------------------------------

BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "cnnbuild-broken"
version = "0.1.0"

[project.entry-points."cnnbuild.layers"]
broken = "cnnbuild_broken"

[tool.setuptools]
py-modules = ["cnnbuild_broken"]
"""

CLI_SPEC = """\
name: plugged
input: [1, 8, 8]
classes: 3
layers:
  - {name: conv1, type: conv, filters: 4, kernel: 3, padding: same}
  - {type: square, scale: 0.5}
  - {type: batchnorm}
  - {type: tanh}
  - {type: cube}
  - {type: maxpool, size: 2}
  - {type: flatten}
  - {type: dense, units: 3}
  - {type: softmax}
training:
  dataset: folder
  batch_size: 16
  optimizer: {type: adam, lr: 0.01}
  seed: 5
"""


def install(source: Path, target: Path) -> None:
    """Install the package at ``source`` into the folder ``target``, as pip does for users
    (``pip install --target``), built offline with the setuptools of this environment.

    Where setuptools is missing (virtual environments of Python 3.12 and later lack it), write
    what pip would install: the module and a ``.dist-info`` with METADATA and
    entry_points.txt, which is all that entry-point discovery reads."""
    build_dir = target.with_name(f"{target.name}-source")  # no build/ left in tests/
    shutil.copytree(source, build_dir, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    if importlib.util.find_spec("setuptools") is None:
        write_dist_info(build_dir, target)
        return
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet"]
    result = subprocess.run(
        [*pip, "--target", str(target), str(build_dir)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def write_dist_info(source: Path, target: Path) -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((source / "pyproject.toml").read_text())
    name, version = project["project"]["name"], project["project"]["version"]
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in project["project"]["entry-points"].items()
    )
    (info / "entry_points.txt").write_text(entry_points)
    for module in project["tool"]["setuptools"]["py-modules"]:
        shutil.copy(source / f"{module}.py", target)


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    """Two folders as `pip install --target` leaves them: ``square`` holds the example plugin
    (tests/plugin_example: ``square`` and ``cube``), ``broken`` one whose module raises."""
    root = tmp_path_factory.mktemp("plugins")
    broken = root / "broken-package"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "cnnbuild_broken.py").write_text('raise RuntimeError("this plugin is broken")\n')
    sites = {"square": root / "square", "broken": root / "broken"}
    with ThreadPoolExecutor() as pool:  # two pip processes at once
        jobs = [pool.submit(install, PLUGIN_SOURCE, sites["square"])]
        jobs.append(pool.submit(install, broken, sites["broken"]))
        for job in jobs:
            job.result()
    return sites


def cnnbuild_command(*args, path=(), cwd):
    """Run ``python -m cnnbuild ARGS`` in a fresh process whose PYTHONPATH is ``path``, then
    the repository (so plugins are found only where ``path`` holds them)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join(str(folder) for folder in [*path, ROOT])
    return subprocess.run(
        [sys.executable, "-m", "cnnbuild", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def run_all(commands: dict[str, dict]) -> dict[str, subprocess.CompletedProcess]:
    """Run independent commands at once (each keyword dict is ``cnnbuild_command``'s)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        jobs = {
            key: pool.submit(cnnbuild_command, *kwargs.pop("args"), **kwargs)
            for key, kwargs in commands.items()
        }
        return {key: job.result() for key, job in jobs.items()}


@pytest.mark.slow
def test_the_command_line_finds_an_installed_plugin(sites, tmp_path, image_folder):
    spec = tmp_path / "plugged.yaml"
    spec.write_text(CLI_SPEC)
    out = tmp_path / "run"
    plugged = {"path": [sites["square"]], "cwd": tmp_path}
    bare = {"path": [], "cwd": tmp_path}
    train = ["train", spec, "--epochs", 1, "--data-dir", image_folder, "--out", out]
    first = run_all(
        {
            "validate": {"args": ["validate", spec], **plugged},
            "summary": {"args": ["summary", spec], **plugged},
            "schema": {"args": ["schema"], **plugged},
            "train": {"args": train, **plugged},
            "refused": {"args": ["validate", spec], **bare},
        }
    )
    for key in ("validate", "summary", "schema", "train"):
        result = first[key]
        assert result.returncode == 0, f"{key}: {result.stdout}{result.stderr}"
        assert "Warning" not in result.stderr, f"{key}: {result.stderr}"

    assert first["validate"].stdout.startswith(f"{spec}: OK (9 layers")
    table = first["summary"].stdout
    assert re.search(r"^square1\s+square\s+\(4, 8, 8\)\s+0\b", table, re.M), table
    assert re.search(r"^cube1\s+cube\s+\(4, 8, 8\)\s+0\b", table, re.M), table
    schema = json.loads(first["schema"].stdout)["$defs"]
    assert {"square", "cube"} <= set(schema["layer"]["properties"]["type"]["enum"])
    assert schema["layer.square"]["properties"]["scale"]["default"] == 1.0
    assert schema["layer.square"]["description"] == "Elementwise square: scale * x * x."
    assert first["train"].stdout.splitlines()[1].split()[0] == "1"  # one epoch line

    refused = first["refused"]
    assert refused.returncode == 2, refused.stdout + refused.stderr
    where = f"{spec}:6:{column(CLI_SPEC, 6, 'square')}: layers[1] (square)"
    assert f"{where}: unknown layer type 'square'" in refused.stderr
    assert "unknown layer type 'cube'" in refused.stderr
    assert "Traceback" not in refused.stderr

    checkpoint = out / "last.npz"
    second = run_all(
        {
            "evaluate": {"args": ["evaluate", checkpoint], **plugged},
            "predict": {"args": ["predict", checkpoint, "--index", 0], **plugged},
            "refused": {"args": ["evaluate", checkpoint], **bare},
        }
    )
    for key in ("evaluate", "predict"):
        result = second[key]
        assert result.returncode == 0, f"{key}: {result.stdout}{result.stderr}"
    assert "plugged on folder test: accuracy" in second["evaluate"].stdout
    assert "test[0]: predicted" in second["predict"].stdout
    refused = second["refused"]
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"{checkpoint}: the saved architecture"), refused.stderr
    assert "unknown layer type 'square'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_broken_plugin_warns_naming_it_and_the_others_still_work(sites, tmp_path):
    spec = tmp_path / "plugged.yaml"
    spec.write_text(CLI_SPEC)
    result = cnnbuild_command(
        "validate", spec, path=[sites["broken"], sites["square"]], cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{spec}: OK (9 layers")
    assert "PluginWarning: cannot load the layer plugin 'cnnbuild_broken'" in result.stderr
    assert "(entry point 'broken' in group 'cnnbuild.layers')" in result.stderr
    assert "this plugin is broken" in result.stderr
    assert "Traceback" not in result.stderr


# --- the README's example -------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.S | re.M)


@pytest.fixture
def readme_layer(tmp_path, monkeypatch):
    """The README's my_layers.py, written out and importable; unregistered afterwards."""
    section = readme_section("Writing a layer")
    module, script = code_blocks(section, "python")
    assert module.startswith("# my_layers.py\n")
    (tmp_path / "my_layers.py").write_text(module)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.chdir(tmp_path)
    yield section, script
    cls = getattr(sys.modules.pop("my_layers", None), "Square", None)
    unregister("square", cls)


def test_the_readme_example_layer_works_as_written(readme_layer):
    section, script = readme_layer
    layers = SPEC.split("training:")[0].replace(", gain: true", "")
    Path("net.yaml").write_text(layers)
    namespace: dict = {}
    exec(compile(script, "README.md (Writing a layer)", "exec"), namespace)
    net = namespace["net"]
    square = sys.modules["my_layers"].Square
    assert REGISTRY["square"] is square and isinstance(net.layers["sq"], square)
    assert "sq" in str(net.summary())

    layer = square(name="sq", scale=0.5)
    check_layer_gradients(layer, [np.random.default_rng(0).standard_normal((2, 3, 4, 4))])

    (toml,) = code_blocks(section, "toml")
    assert toml == '[project.entry-points."cnnbuild.layers"]\nsquare = "my_layers"\n'
    assert "import my_layers" in script
