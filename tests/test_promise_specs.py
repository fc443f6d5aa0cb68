"""Promises 1 and 2: every malformed or hostile spec exits 2 with FILE:LINE:COL and the layer.

The corpus is generated at test time, from seeds, by mutating the files in archs/ (the
hand-written cases are in test_spec.py).
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import random
import re
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import ARCHS
from promises import count, record

from cnnbuild.builder import build, loads
from cnnbuild.cli import main
from cnnbuild.errors import SpecError
from cnnbuild.specfile import parse_spec, spec_from_data

SIZE_KEYS = ("filters", "kernel", "stride", "units", "size")
WRONG_INTEGERS = ["eight", 2.5, True, None, [3], {"value": 3}]
WRONG_VALUES = {  # values of the wrong type, or out of range, for each key
    "stride": ["two", 2.5, True, [2]],
    "padding": [2.5, True, None, [1], "full"],
    "bias": ["yes", 1, None, [True]],
    "init": [3, None, "glorot"],
    "rate": ["half", True, None, [0.5], 1.5],
    "momentum": ["half", True, None, [0.9], 1.0],
    "eps": ["tiny", True, None, 0, -1e-5],
    "slope": ["x", True, None, -0.1],
    "name": [5, True, None, ["a"], "has space"],
    "inputs": ["conv1", 5, None, {"a": 1}],
}
UNKNOWN_TYPES = ["conv3d", "maxpol", "Dense", "", "relu6", "lstm", "softmaxx"]
UNKNOWN_KEYS = ["kernal", "filtres", "activation", "use_bias", "pool_size", "dilation", "groups"]
MERGES = ("add", "concat")


@dataclass
class Case:
    """One generated file: its bytes, and where the problem is (when it is in a layer)."""

    name: str
    raw: bytes
    culprits: list[tuple] = field(default_factory=list)  # paths of the layers at fault
    line: int | None = None  # the line the problem is on, where known exactly


def layer_paths(data: dict) -> list[tuple]:
    """Paths of every layer, in repeat blocks and block definitions too: ("layers", 3),
    ("layers", 0, "layers", 1), ("blocks", "residual", "layers", 2)."""
    paths = []
    for i, item in enumerate(data["layers"]):
        if "repeat" in item and "use" not in item:
            paths += [("layers", i, "layers", j) for j in range(len(item["layers"]))]
        elif "use" not in item:
            paths.append(("layers", i))
    for name, block in data.get("blocks", {}).items():
        paths += [("blocks", name, "layers", j) for j in range(len(block["layers"]))]
    return paths


def culprits(data: dict, path: tuple) -> list[tuple]:
    """The layer at ``path``, and for a layer of a block's definition also the uses of the
    block (a problem that shows once its parameters are known is located at the use)."""
    if path[0] != "blocks":
        return [path]
    uses = [("layers", i) for i, item in enumerate(data["layers"]) if item.get("use") == path[1]]
    return [path, *uses]


def at(data, path):
    for step in path:
        data = data[step]
    return data


def label(path: tuple) -> str:
    """How cnnbuild's messages name the layer at ``path``: ``layers[0].layers[1]``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text.lstrip(".")


def dump(data: dict, rng: random.Random) -> bytes:
    flow = rng.choice([None, False])  # one-line layers, as in archs/, or block style
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=flow, width=1000).encode()


def named(data: dict) -> dict:
    """A copy in which every top-level layer has a name (n<index> where it had none)."""
    data = copy.deepcopy(data)
    for i, item in enumerate(data["layers"]):
        if "repeat" not in item and "use" not in item:
            item.setdefault("name", f"n{i}")
    return data


def shapes_by_name(data: dict) -> dict[str, tuple]:
    net = build(spec_from_data(data, "original"))
    return {"input": net.input_shape} | {node.name: node.output_shape for node in net.nodes}


# --- mutations: each returns (bytes, culprit paths) or None when it does not apply ------------


def wrong_type(data, rng):
    path = rng.choice(layer_paths(data))
    layer = at(data, path)
    key = rng.choice([k for k in layer if k != "type"] or ["inputs"])
    layer[key] = rng.choice(WRONG_VALUES.get(key, WRONG_INTEGERS))
    return dump(data, rng), culprits(data, path)


def unknown_type(data, rng):
    path = rng.choice(layer_paths(data))
    at(data, path)["type"] = rng.choice(UNKNOWN_TYPES)
    return dump(data, rng), culprits(data, path)


def unknown_key(data, rng):
    path = rng.choice(layer_paths(data))
    at(data, path)[rng.choice(UNKNOWN_KEYS)] = rng.choice([1, "x", True])
    return dump(data, rng), culprits(data, path)


def missing_key(data, rng):
    path = rng.choice([p for p in layer_paths(data) if any(k in at(data, p) for k in SIZE_KEYS)])
    layer = at(data, path)
    del layer[rng.choice([k for k in ("type", "filters", "kernel", "units", "size") if k in layer])]
    return dump(data, rng), culprits(data, path)


def bad_size(data, rng):
    paths = [p for p in layer_paths(data) if any(k in at(data, p) for k in SIZE_KEYS)]
    path = rng.choice(paths)
    layer = at(data, path)
    layer[rng.choice([k for k in SIZE_KEYS if k in layer])] = rng.choice([0, -1, -3])
    return dump(data, rng), culprits(data, path)


def bad_top_level(data, rng):
    """Sizes and values outside the layers: no layer to name, but still FILE:LINE."""
    choice = rng.randrange(6)
    if choice == 0:
        data["input"][rng.randrange(3)] = rng.choice([0, -2])
    elif choice == 1:
        data["classes"] = rng.choice([0, -10, "ten", 2.5])
    elif choice == 2:
        data["input"] = rng.choice([[28, 28], "28x28", [1, 28, 28, 1]])
    elif choice == 3:
        data["layers"] = rng.choice([[], {"type": "relu"}, "conv"])
    elif choice == 4:
        data["training"] = {"optimizer": {"type": "adam", "lr": rng.choice([0, -1, "fast"])}}
    else:
        data["training"] = {"batch_size": 0, "epochs": -1}
    return dump(data, rng), []


def repeat_count(data, rng):
    blocks = [i for i, item in enumerate(data["layers"]) if "repeat" in item]
    if not blocks:
        return None
    index = rng.choice(blocks)
    data["layers"][index]["repeat"] = rng.choice([0, -1, "twice", 1.5])
    return dump(data, rng), [("layers", index)]


def kernel_too_large(data, rng):
    paths = [p for p in layer_paths(data) if at(data, p)["type"] in ("conv", "maxpool", "avgpool")]
    if not paths:
        return None
    path = rng.choice(paths)
    layer = at(data, path)
    if layer["type"] == "conv":
        layer["kernel"], layer["padding"] = rng.choice([65, 99]), "valid"
    else:
        layer["size"] = rng.choice([65, 99])
    return dump(data, rng), culprits(data, path)


def top_level_layers(data, merges=True):
    """Indices of top-level layers (not blocks) other than the first and last."""
    return [
        i
        for i, item in enumerate(data["layers"][1:-1], 1)
        if "repeat" not in item and "use" not in item and (merges or item["type"] not in MERGES)
    ]


def unknown_input(data, rng):
    data = named(data)
    index = rng.choice(top_level_layers(data, merges=False))
    previous = data["layers"][index - 1].get("name", "block")
    data["layers"][index]["inputs"] = [rng.choice([f"{previous}x", "nowhere", "Input"])]
    return dump(data, rng), [("layers", index)]


def cycle(data, rng):
    data = named(data)
    layers = data["layers"]
    options = [
        i
        for i in top_level_layers(data, merges=False)
        if i + 2 < len(layers) and "type" in layers[i + 1] and "inputs" not in layers[i + 1]
    ]
    if not options:
        return None
    index = rng.choice(options)
    layers[index]["inputs"] = [layers[index + 1]["name"]]
    return dump(data, rng), [("layers", index), ("layers", index + 1)]


def merge_mismatch(data, rng):
    data = named(data)
    shapes = shapes_by_name(data)
    index = rng.choice(top_level_layers(data))
    first = data["layers"][index]["name"]
    kind = rng.choice(MERGES)
    earlier = ["input"] + [item["name"] for item in data["layers"][:index]]

    def clash(name):
        a, b = shapes[first], shapes.get(name)
        return b is not None and (a != b if kind == "add" else len(a) != len(b) or a[1:] != b[1:])

    others = [name for name in earlier if clash(name)]
    if not others:
        return None
    merge = {"name": "merged", "type": kind, "inputs": [first, rng.choice(others)]}
    data["layers"].insert(index + 1, merge)
    return dump(data, rng), [("layers", index + 1)]


def duplicate_key(original: str, rng):
    """A key written twice inside one of the file's one-line layers."""
    root = yaml.compose(original)
    data = yaml.safe_load(original)
    paths = [p for p in layer_paths(data) if node_at(root, p).flow_style]
    path = rng.choice(paths)
    node = node_at(root, path)
    key = rng.choice(list(at(data, path)))
    number, column = node.start_mark.line, node.start_mark.column + 1
    lines = original.splitlines(keepends=True)
    text = lines[number]
    lines[number] = f"{text[:column]}{key}: {json.dumps(at(data, path)[key])}, {text[column:]}"
    return "".join(lines).encode(), [path], number + 1


def tab(original: str, rng):
    lines = original.splitlines(keepends=True)
    number = rng.choice([i for i, line in enumerate(lines) if line.startswith("  ")])
    lines[number] = "\t" + lines[number].lstrip(" ")
    return "".join(lines).encode(), number + 1


def truncated(original: str, rng):
    raw = original.encode()
    end = raw.rindex(b"type: softmax}") + len(b"type: softmax")
    return raw[: rng.randrange(0, end)]


def non_utf8(original: str, rng):
    raw = original.encode()
    position = rng.randrange(0, len(raw))
    bad = bytes([rng.choice([0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFE, 0xFF])])
    return raw[:position] + bad + raw[position:], raw[:position].count(b"\n") + 1


STRUCTURAL = [
    wrong_type,
    unknown_type,
    unknown_key,
    missing_key,
    bad_size,
    bad_top_level,
    repeat_count,
    kernel_too_large,
    unknown_input,
    cycle,
    merge_mismatch,
]
FIXED = {
    "empty": b"",
    "blank": b"\n  \n",
    "comment-only": b"# nothing but a comment\n",
    "list-at-top": b"- {type: conv, filters: 4, kernel: 3}\n- {type: softmax}\n",
    "scalar-at-top": b"mnist\n",
    "bom-then-list": b"\xef\xbb\xbf- 1\n",
}


@functools.cache
def corpus(size: int) -> list[Case]:
    """``size`` or more malformed files, the same ones on every run."""
    cases = [Case(name, raw) for name, raw in FIXED.items()]
    originals = {path.stem: path.read_text() for path in ARCHS}
    data = {stem: yaml.safe_load(text) for stem, text in originals.items()}
    kinds = [*STRUCTURAL, duplicate_key, tab, truncated, non_utf8]
    i = 0
    while len(cases) < size:
        for stem in originals:
            for kind in kinds:
                rng = random.Random(f"{stem}-{kind.__name__}-{i}")
                name = f"{stem}-{kind.__name__}-{i}"
                if kind is truncated:
                    cases.append(Case(name, truncated(originals[stem], rng)))
                elif kind is duplicate_key:
                    cases.append(Case(name, *duplicate_key(originals[stem], rng)))
                elif kind in (tab, non_utf8):
                    raw, line = kind(originals[stem], rng)
                    cases.append(Case(name, raw, line=line))
                else:
                    made = kind(copy.deepcopy(data[stem]), rng)
                    if made:
                        cases.append(Case(name, *made))
        i += 1
    return cases


def node_at(node: yaml.Node, path: tuple) -> yaml.Node:
    for step in path:
        if isinstance(step, str):
            node = next(value for key, value in node.value if key.value == step)
        else:
            node = node.value[step]
    return node


def layer_lines(raw: bytes, path: tuple) -> range:
    """The lines the layer at ``path`` spans in the file."""
    node = node_at(yaml.compose(raw.decode()), path)
    return range(node.start_mark.line + 1, node.end_mark.line + 2)


def problems_in(output: str, path: Path) -> list[tuple[int, str]]:
    """(line, text after the location) of each problem the output reports for ``path``."""
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+):(\d+): (.*)$")
    found = []
    for text in output.splitlines():
        match = pattern.match(text)
        if match:
            found.append((int(match[1]), match[3]))
    return found


def check(case: Case, path: Path, output: str) -> list[str]:
    """What is wrong with cnnbuild's answer to ``case`` (nothing, when it keeps the promise)."""
    problems = problems_in(output, path)
    if not problems:
        return ["no FILE:LINE:COL message"]
    wrong = []
    if case.line is not None and case.line not in [line for line, _ in problems]:
        wrong.append(f"the problem is on line {case.line}")
    for culprit in case.culprits:
        lines = layer_lines(case.raw, culprit)
        prefix = re.compile(rf"^{re.escape(label(culprit))}[ :]")
        if any(line in lines and prefix.match(text) for line, text in problems):
            return wrong
    if case.culprits:
        wrong.append(f"no message names {label(case.culprits[0])} on its lines")
    return wrong


@pytest.mark.slow
def test_a_generated_corpus_of_malformed_specs_exits_2_naming_file_line_and_layer(tmp_path):
    cases = corpus(count(250, 2500))
    runner = CliRunner()
    tracebacks, not_2, unlocated, unnamed, failures = 0, 0, 0, 0, []
    with_layer = sum(bool(case.culprits) for case in cases)
    for case in cases:
        path = tmp_path / f"{case.name}.yaml"
        path.write_bytes(case.raw)
        result = runner.invoke(main, ["validate", str(path)])
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        tracebacks += crashed
        not_2 += result.exit_code != 2
        wrong = (
            ["crashed: " + repr(result.exception)] if crashed else check(case, path, result.output)
        )
        unlocated += any("FILE:LINE" in w or "on line" in w for w in wrong)
        unnamed += any("names" in w for w in wrong)
        if wrong or result.exit_code != 2:
            failures.append(
                f"{case.name}: {'; '.join(wrong)} (exit {result.exit_code})\n{result.output}"
            )
    located = len(cases) - unlocated
    record(1, "files tried (CLI validate)", f"{len(cases):,} generated from archs/*.yaml")
    record(1, "tracebacks", tracebacks)
    record(1, "exit status 2", f"{len(cases) - not_2} of {len(cases)}")
    record(
        1,
        "messages naming FILE:LINE:COL",
        f"{located / len(cases):.0%} ({located} of {len(cases)})",
    )
    record(
        1,
        "messages naming the layer at fault",
        f"{(with_layer - unnamed) / with_layer:.0%} ({with_layer - unnamed} of {with_layer} "
        "problems inside a layer, on one of its lines)",
    )
    assert not failures, f"{len(failures)} cases fail:\n\n" + "\n\n".join(failures[:10])


@pytest.mark.slow
def test_a_sample_of_the_corpus_through_a_real_process(tmp_path):
    cases = corpus(count(250, 2500))[::25]
    paths = []
    for case in cases:
        paths.append(tmp_path / f"{case.name}.yaml")
        paths[-1].write_bytes(case.raw)
    result = subprocess.run(
        [sys.executable, "-m", "cnnbuild", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    record(
        1,
        "sample through `python -m cnnbuild validate`",
        f"{len(paths)} files, exit {result.returncode}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{len(paths)} of {len(paths)} files have errors" in result.stderr
    assert all(problems_in(result.stderr, path) for path in paths)


# --- promise 2: tags, duplicate keys, alias bombs ---------------------------------------------

BASE = """\
name: t
input: [1, 8, 8]
classes: 3
layers:
  - {name: conv1, type: conv, filters: 2, kernel: 3}
  - name: pool1
    type: maxpool
    size: 2
  - repeat: 2
    name: blk
    layers:
      - {name: c, type: conv, filters: 2, kernel: 1}
  - {type: flatten}
  - {type: dense, units: 3}
  - {type: softmax}
training:
  optimizer: {type: adam, lr: 0.01}
  augment: {flip: true}
"""
APPLY = "!!python/object/apply:builtins.open ['{marker}', 'w']"
# (id, the file with {marker} standing for the marker file's path)
TAGGED = [
    ("apply-value", BASE.replace("filters: 2, kernel: 3", f"filters: {APPLY}, kernel: 3")),
    (
        "apply-os-system",
        BASE.replace("size: 2", "size: !!python/object/apply:os.system ['touch {marker}']"),
    ),
    (
        "new-object",
        BASE.replace("size: 2", "size: !!python/object/new:builtins.open ['{marker}', 'w']"),
    ),
    ("name-tag", BASE.replace("size: 2", "size: !!python/name:os.system")),
    ("module-tag", BASE.replace("size: 2", "size: !!python/module:os")),
    ("tuple-tag", BASE.replace("input: [1, 8, 8]", "input: !!python/tuple [1, 8, 8]")),
    (
        "verbatim-tag",
        BASE.replace(
            "size: 2",
            "size: !<tag:yaml.org,2002:python/object/apply:builtins.open> ['{marker}', 'w']",
        ),
    ),
    (
        "tag-directive",
        "%TAG !p! tag:yaml.org,2002:python/object/apply:\n---\n"
        + BASE.replace("size: 2", "size: !p!builtins.open ['{marker}', 'w']"),
    ),
    ("tag-on-key", BASE + f"? {APPLY}\n: 1\n"),
    ("tag-on-document", f"--- {APPLY}\n"),
    (
        "tag-on-layer",
        BASE.replace(
            "  - {type: flatten}", "  - !!python/object/new:builtins.dict {type: flatten}"
        ),
    ),
    ("tag-in-block", BASE.replace("kernel: 1}", f"kernel: 1, bias: {APPLY}}}")),
    ("tag-in-training", BASE.replace("lr: 0.01", f"lr: {APPLY}")),
    ("tag-in-merge", BASE.replace("    size: 2", f"    size: 2\n    <<: {APPLY}")),
    ("binary", BASE.replace("name: t", "name: !!binary dA==")),
    ("set", BASE.replace("augment: {flip: true}", "augment: !!set {flip}")),
    ("omap", BASE.replace("augment: {flip: true}", "augment: !!omap [flip: true]")),
    ("timestamp", BASE.replace("name: t", "name: !!timestamp 2001-12-14")),
    ("local-tag", BASE.replace("units: 3", "units: !three 3")),
]
# (id, the file, line of the first key, line of the repeated key, the layer's label or "")
DUPLICATES = [
    ("top-level", BASE + "classes: 4\n", 3, 19, ""),
    ("layers-twice", BASE + "layers: []\n", 4, 19, ""),
    (
        "in-a-flow-layer",
        BASE.replace("kernel: 3}", "kernel: 3, kernel: 5}"),
        5,
        5,
        "layers[0] 'conv1' (conv)",
    ),
    (
        "in-a-block-layer",
        BASE.replace("    size: 2\n", "    size: 2\n    type: relu\n"),
        7,
        9,
        "layers[1] 'pool1' (maxpool)",
    ),
    (
        "quoted",
        BASE.replace("    size: 2\n", '    size: 2\n    "size": 3\n'),
        8,
        9,
        "layers[1] 'pool1' (maxpool)",
    ),
    (
        "in-a-repeat-block",
        BASE.replace("kernel: 1}", "kernel: 1, name: d}"),
        12,
        12,
        "layers[2].layers[0] 'c' (conv)",
    ),
    (
        "block-keys",
        BASE.replace("    name: blk\n", "    name: blk\n    repeat: 3\n"),
        9,
        11,
        "layers[2] 'blk' (repeat block)",
    ),
    (
        "in-the-optimizer",
        BASE.replace("lr: 0.01}", "lr: 0.01, lr: 1}"),
        17,
        17,
        "training.optimizer",
    ),
    (
        "in-augment",
        BASE.replace("flip: true}", "flip: true, flip: false}"),
        18,
        18,
        "training.augment",
    ),
    (
        "deep-inside-a-value",
        BASE.replace("filters: 2, kernel: 3", "filters: {a: 1, a: 2}, kernel: 3"),
        5,
        5,
        "layers[0] 'conv1' (conv)",
    ),
]


def bomb(levels: int, width: int, kind: str) -> str:
    """A "billion laughs": each level refers ``width`` times to the one below."""
    names = "abcdefghijklmnop"
    lines = [f"a: &a [{', '.join(['lol'] * width)}]"]
    for low, high in itertools.pairwise(names[:levels]):
        refs = [f"*{low}"] * width
        if kind == "mapping":
            lines.append(
                f"{high}: &{high} {{{', '.join(f'k{i}: {r}' for i, r in enumerate(refs))}}}"
            )
        elif kind == "merge":
            lines.append(f"{high}: &{high} {{<<: [{', '.join(refs)}], x{high}: 1}}")
        else:
            lines.append(f"{high}: &{high} [{', '.join(refs)}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "lists": bomb(9, 9, "list"),
    "mappings": bomb(6, 7, "mapping"),
    "merge-keys": bomb(9, 9, "merge"),
    "in-the-layers": BASE.replace("layers:\n", "layers: &l\n", 1)
    + "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}' if i else '*l'] * 9)}]\n" for i in range(9)),
    "self-reference": "a: &a [1, *a]\n",
    "self-reference-in-layers": BASE.replace("layers:\n", "layers: &l\n", 1).replace(
        "{type: flatten}", "{type: flatten, inputs: *l}"
    ),
}


REFUSED: set[str] = set()  # the TAGGED files refused so far
SLOWEST: dict[str, tuple[float, int]] = {}  # figure -> (seconds, peak bytes) over the bombs


def invoke(path: Path):
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize(("text"), [t for _, t in TAGGED], ids=[i for i, _ in TAGGED])
def test_yaml_tags_are_refused_and_never_run(tmp_path, text):
    marker = tmp_path / "marker"
    path = tmp_path / "tagged.yaml"
    path.write_text(text.replace("{marker}", str(marker)))
    result = invoke(path)
    assert result.exit_code == 2 and problems_in(result.output, path), result.output
    assert "remove the tag" in result.output, result.output
    assert not marker.exists()
    with pytest.raises(SpecError):
        parse_spec(path.read_bytes())
    assert not marker.exists()
    REFUSED.add(text)
    record(2, "YAML tags refused, nothing ran", f"{len(REFUSED)} of {len(TAGGED)} files")


def test_tags_are_a_real_threat_to_an_unsafe_loader(tmp_path):
    """Control: the payloads above do run under yaml.unsafe_load, so their refusal counts."""
    marker = tmp_path / "marker"
    yaml.unsafe_load(TAGGED[0][1].replace("{marker}", str(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    ("text", "first", "second", "layer"),
    [c[1:] for c in DUPLICATES],
    ids=[c[0] for c in DUPLICATES],
)
def test_duplicate_keys_at_any_depth_are_refused_naming_both_lines(
    tmp_path, text, first, second, layer
):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    result = invoke(path)
    assert result.exit_code == 2, result.output
    found = [
        message
        for line, message in problems_in(result.output, path)
        if line == second and f"(first at line {first})" in message and "duplicate key" in message
    ]
    assert found, result.output
    assert found[0].startswith(f"{layer}: " if layer else "duplicate"), found
    record(2, "duplicate keys refused, naming both lines", f"{len(DUPLICATES)} places")


@pytest.mark.parametrize("name", list(BOMBS))
def test_alias_bombs_are_refused_quickly_in_little_memory(tmp_path, name):
    text = BOMBS[name]
    assert len(text.encode()) < 1024
    started = time.perf_counter()
    with pytest.raises(SpecError):
        parse_spec(text)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        with pytest.raises(SpecError):
            parse_spec(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    result = invoke(path)
    assert result.exit_code == 2, result.output
    assert "(an alias bomb?)" in result.output or "never ends" in result.output, result.output
    SLOWEST[name] = (seconds, peak)
    worst = max(SLOWEST, key=lambda key: SLOWEST[key][0])
    record(
        2,
        "slowest alias bomb (<1 KB)",
        f"{worst}: refused in {SLOWEST[worst][0]:.3f} s, "
        f"peak {max(p for _, p in SLOWEST.values()) / 2**10:.0f} KiB ({len(SLOWEST)} bombs)",
    )
    assert seconds < 1
    assert peak < 64 * 2**20


def test_lists_nested_too_deeply_are_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 600 + "]" * 600 + "\n")
    result = invoke(path)
    assert result.exit_code == 2 and "nested too deeply" in result.output, result.output


def test_ordinary_anchors_and_merge_keys_still_work():
    text = BASE.replace(
        "  - {name: conv1, type: conv, filters: 2, kernel: 3}",
        "  - &conv {name: conv1, type: conv, filters: 2, kernel: 3, padding: same}\n"
        "  - {<<: *conv, name: conv2}\n"
        "  - <<: *conv\n    name: conv3\n    filters: 4",
    ).replace("input: [1, 8, 8]", "input: &shape [1, 8, 8]")
    net = loads(text)
    shapes = {node.name: node.output_shape for node in net.nodes}
    assert shapes["conv2"] == (2, 8, 8) and shapes["conv3"] == (4, 8, 8)
    record(2, "ordinary anchors, aliases and merge keys", "still build")
