"""Reading specs: each kind of malformed file exits 2 with FILE:LINE, the layer and a fix.

YAML tags, duplicate keys, alias bombs and anchors are promise 2, and a generated corpus of
these kinds is promise 1 (both in tests/test_promise_specs.py).
"""

import pytest
from click.testing import CliRunner

from cnnbuild.cli import main
from cnnbuild.errors import SpecError
from cnnbuild.specfile import parse_spec

GOOD = """\
name: t
input: [1, 12, 12]
classes: 3
layers:
  - {name: conv1, type: conv, filters: 2, kernel: 3}
  - {name: pool1, type: maxpool, size: 2}
  - {type: flatten}
  - {name: fc, type: dense, units: 3}
  - {type: softmax}
"""


def swap(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


# (id, text, line of the problem, fragments the message must contain)
MALFORMED = [
    (
        "unknown-type",
        swap("type: maxpool", "type: maxpol"),
        6,
        ["'pool1'", "did you mean 'maxpool'"],
    ),
    ("unknown-key", swap("kernel: 3", "kernal: 3"), 5, ["'conv1' (conv)", "did you mean 'kernel'"]),
    (
        "missing-key",
        swap(", kernel: 3", ""),
        5,
        ["'conv1' (conv)", "missing required key 'kernel'"],
    ),
    ("string-for-int", swap("filters: 2", "filters: two"), 5, ["'conv1'", "must be an integer"]),
    ("float-for-int", swap("units: 3", "units: 3.5"), 8, ["'fc' (dense)", "must be an integer"]),
    ("bool-for-int", swap("size: 2", "size: true"), 6, ["'pool1'", "integer"]),
    ("zero-filters", swap("filters: 2", "filters: 0"), 5, ["'conv1'", ">= 1"]),
    ("negative-kernel", swap("kernel: 3", "kernel: -3"), 5, ["'conv1'", ">= 1"]),
    ("negative-stride", swap("size: 2", "size: 2, stride: -1"), 6, ["'pool1'", ">= 1"]),
    ("bad-padding", swap("kernel: 3", "kernel: 3, padding: full"), 5, ["'conv1'", "padding"]),
    ("same-even-kernel", swap("kernel: 3", "kernel: 4, padding: same"), 5, ["'conv1'", "odd"]),
    (
        "dropout-rate-1",
        swap("  - {type: flatten}", "  - {type: dropout, rate: 1.0}\n  - {type: flatten}"),
        7,
        ["(dropout)", "rate"],
    ),
    ("kernel-larger-than-input", swap("kernel: 3", "kernel: 13"), 5, ["'conv1' (conv)", "13"]),
    ("pool-larger-than-input", swap("size: 2", "size: 11"), 6, ["'pool1' (maxpool)", "11"]),
    (
        "unknown-input",
        swap("{type: flatten}", "{type: flatten, inputs: [pool2]}"),
        7,
        ["(flatten)", "did you mean 'pool1'"],
    ),
    (
        "two-inputs-to-one-input-layer",
        swap("{type: flatten}", "{type: flatten, inputs: [pool1, conv1]}"),
        7,
        ["(flatten)", "'inputs' has 2 items, needs at most 1"],
    ),
    ("duplicate-name", swap("name: pool1", "name: conv1"), 6, ["duplicate layer name 'conv1'"]),
    ("reserved-name", swap("name: pool1", "name: input"), 6, ["reserved"]),
    (
        "cycle",
        swap(
            "{name: pool1, type: maxpool, size: 2}",
            "{name: pool1, type: maxpool, size: 2, inputs: [fc]}",
        ),
        6,
        ["'pool1' (maxpool)", "cycle: pool1 -> fc -> flatten1 -> pool1"],
    ),
    (
        "dangling",
        swap(
            "  - {type: flatten}",
            "  - {name: lost, type: relu}\n  - {type: flatten, inputs: [pool1]}",
        ),
        7,
        ["'lost'", "goes nowhere"],
    ),
    (
        "add-mismatch",
        swap(
            "  - {type: flatten}",
            "  - {name: s, type: add, inputs: [pool1, conv1]}\n  - {type: flatten}",
        ),
        7,
        ["'s' (add)", "(2, 5, 5)", "(2, 10, 10)"],
    ),
    (
        "concat-mismatch",
        swap(
            "  - {type: flatten}",
            "  - {name: c, type: concat, inputs: [pool1, conv1]}\n  - {type: flatten}",
        ),
        7,
        ["'c' (concat)"],
    ),
    (
        "merge-one-input",
        swap(
            "  - {type: flatten}", "  - {name: s, type: add, inputs: [pool1]}\n  - {type: flatten}"
        ),
        7,
        ["'s' (add)", "two or more"],
    ),
    (
        "wrong-classes",
        swap("classes: 3", "classes: 4"),
        9,
        ["(softmax)", "outputs (3,) but `classes` is 4"],
    ),
    ("no-softmax", GOOD.replace("  - {type: softmax}\n", ""), 8, ["'fc' (dense)", "softmax"]),
    (
        "softmax-on-image",
        swap("  - {type: flatten}", "  - {type: softmax}\n  - {type: flatten}"),
        7,
        ["(softmax)"],
    ),
    ("tab-indent", GOOD.replace("  - {type: flatten}", "\t- {type: flatten}"), 7, ["tabs"]),
    ("unclosed-bracket", swap("size: 2}", "size: 2"), 7, ["indentation"]),
    ("list-at-top", "- conv\n- relu\n", 1, ["top level must be a mapping"]),
    ("empty-file", "", 1, ["empty"]),
    (
        "missing-layers",
        "name: t\ninput: [1, 12, 12]\nclasses: 3\n",
        1,
        ["missing required key 'layers'"],
    ),
    ("input-two-dims", swap("input: [1, 12, 12]", "input: [12, 12]"), 2, ["input"]),
    (
        "layers-not-list",
        "name: t\ninput: [1, 12, 12]\nclasses: 3\nlayers: {type: relu}\n",
        4,
        ["'layers' must be an array"],
    ),
    (
        "layer-not-mapping",
        swap("  - {type: flatten}", "  - flatten"),
        7,
        ["layers[2]", "must be an object"],
    ),
    ("unknown-top-key", GOOD + "optimiser: adam\n", 10, ["unknown key 'optimiser'"]),
    (
        "bad-optimizer",
        GOOD + "training: {optimizer: {type: adamw}}\n",
        10,
        ["training.optimizer", "did you mean 'adam'"],
    ),
    ("bad-name-chars", swap("name: fc", "name: f.c"), 8, ["'f.c'"]),
    (
        "repeat-zero",
        swap(
            "  - {type: flatten}", "  - repeat: 0\n    layers: [{type: relu}]\n  - {type: flatten}"
        ),
        7,
        ["repeat", ">= 1"],
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "fragments"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
@pytest.mark.parametrize("command", ["validate", "summary"])
def test_malformed_spec_exits_2_naming_file_line_and_layer(
    write_spec, command, text, line, fragments
):
    path = write_spec(text)
    result = CliRunner().invoke(main, [command, str(path)])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{path}:{line}:" in output, output
    for fragment in fragments:
        assert fragment in output, output


def test_every_problem_is_reported_at_once():
    text = swap("kernel: 3", "kernal: 3").replace("units: 3", "units: -1")
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "x.yaml")
    assert len(caught.value.problems) == 2
    assert caught.value.problems[0].startswith("x.yaml:5:")
    assert caught.value.problems[1].startswith("x.yaml:8:")


def test_non_utf8_bytes_are_located():
    raw = GOOD.encode().replace(b"name: fc", b"name: f\xffc")
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, "x.yaml")
    assert "x.yaml:8:" in str(caught.value) and "UTF-8" in str(caught.value)
