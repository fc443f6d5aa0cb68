"""Promises 13 and 1: resources are bounded before they are spent; key typos and non-finite
numbers are refused at validation, located.

Generated at test time: huge sizes (filters, units, kernels, padding, windows, inputs,
classes, crops), repeats nested in repeats, huge batch sizes for `time`; NaN and infinities
in every numeric option the registries declare; typos of every key of every type.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import random
import re
import stat
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import ARCHS
from promises import count, record
from test_promise_specs import at, layer_paths

from cnnbuild.builder import allocate, plan
from cnnbuild.cli import main
from cnnbuild.errors import SpecError
from cnnbuild.layers import REGISTRY
from cnnbuild.limits import (
    MAX_LAYERS,
    MAX_PARAMETERS,
    MAX_SPEC_BYTES,
    ResourceError,
    check_memory,
    format_bytes,
    inference_memory,
    training_memory,
)
from cnnbuild.optim import OPTIMIZERS, make_optimizer, optimizer_slots
from cnnbuild.schedules import SCHEDULES
from cnnbuild.specfile import MAX_NODES, parse_spec, read_spec, spec_from_data
from cnnbuild.train import AUGMENT, TRAINING

SECONDS = 10  # per command, on a slow machine under tracemalloc; most take milliseconds
PEAK = 200 * 2**20  # bytes, per command
HUGE = [10**3, 10**4, 10**5, 10**6, 10**7, 10**9, 2**31, 2**31 + 1, 10**12, 2**63, 10**18, 10**30]
SIZES = ("filters", "units", "kernel", "padding", "size", "stride")
REPEATS = [1, 2, 10, 100, 1000, 10**4, 10**6, 10**9, 10**18]
BATCHES = [10**6, 10**8, 10**9, 10**12]
HEAD = "name: t\ninput: [1, 8, 8]\nclasses: 3\nlayers:\n"
TAIL = "  - {type: flatten}\n  - {type: dense, units: 3}\n  - {type: softmax}\n"


def invoke(args: list[str]) -> tuple[object, float, int]:
    """Run the CLI in this process: (result, seconds, peak bytes traced)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = CliRunner().invoke(main, args)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, seconds, peak


def crashed(result) -> bool:
    return result.exception is not None and not isinstance(result.exception, SystemExit)


# --- the corpus of huge sizes ----------------------------------------------------------------


@dataclass
class Case:
    name: str
    data: dict
    batch: int


def huge_size(data, rng):
    paths = [p for p in layer_paths(data) if any(k in at(data, p) for k in SIZES)]
    layer = at(data, rng.choice(paths))
    keys = [k for k in SIZES if k in layer]
    if layer["type"] == "conv":
        keys.append("padding")
    layer[rng.choice(keys)] = rng.choice(HUGE)


def huge_input(data, rng):
    data["input"][rng.randrange(3)] = rng.choice(HUGE)


def huge_classes(data, rng):
    classes = rng.choice(HUGE)
    data["classes"] = classes
    dense = [p for p in layer_paths(data) if at(data, p)["type"] == "dense"]
    at(data, dense[-1])["units"] = classes


def huge_crop(data, rng):
    data.setdefault("training", {}).setdefault("augment", {})["crop"] = rng.choice(HUGE)


def nested_repeats(data, rng):
    block: dict = {"type": "relu"}
    for _ in range(rng.randint(1, 6)):
        block = {"repeat": rng.choice(REPEATS), "layers": [block]}
    data["layers"].insert(1, block)


def many_changes(data, rng):
    for _ in range(3):
        rng.choice([huge_size, huge_input, huge_crop, nested_repeats])(data, rng)


KINDS = [huge_size, huge_input, huge_classes, huge_crop, nested_repeats, many_changes]


@functools.cache
def corpus(size: int) -> list[Case]:
    """``size`` mutated copies of archs/, each kind in turn, the files in turn across kinds."""
    originals = [yaml.safe_load(path.read_text()) for path in ARCHS]
    cases = []
    for j in range(size):
        kind = KINDS[j % len(KINDS)]
        stem = ARCHS[(j // len(KINDS) + j) % len(ARCHS)].stem
        rng = random.Random(f"{stem}-{kind.__name__}-{j}")
        data = copy.deepcopy(originals[[p.stem for p in ARCHS].index(stem)])
        kind(data, rng)
        cases.append(Case(f"{stem}-{kind.__name__}-{j}", data, rng.choice(BATCHES)))
    return cases


REASON = re.compile(r"^(error: )?\S+:\d+:\d+: \S.*$|^error: .+ would need .+ available — .+$")


def test_huge_sizes_end_in_a_table_or_a_reason_in_bounded_time_and_memory(tmp_path):
    cases = corpus(count(12, 600))
    worst_seconds, worst_peak, refused, failures = 0.0, 0, 0, []
    for case in cases:
        path = tmp_path / f"{case.name}.yaml"
        path.write_text(yaml.safe_dump(case.data, sort_keys=False))
        runs = {
            "validate": invoke(["validate", str(path)]),
            "summary": invoke(["summary", str(path)]),
            "time": invoke(["time", str(path), "--batch-size", str(case.batch), "--steps", "1"]),
        }
        wrong = []
        for command, (result, seconds, peak) in runs.items():
            worst_seconds, worst_peak = max(worst_seconds, seconds), max(worst_peak, peak)
            first = result.output.splitlines()[0] if result.output else ""
            if crashed(result):
                wrong.append(f"{command} crashed: {result.exception!r}")
            elif seconds > SECONDS or peak > PEAK:
                wrong.append(f"{command}: {seconds:.1f} s, peak {format_bytes(peak)}")
            elif result.exit_code == 2 and not REASON.match(first):
                wrong.append(f"{command}: exit 2 without a located reason: {first!r}")
        validated, summarised, timed = (runs[c][0] for c in ("validate", "summary", "time"))
        if validated.exit_code == 0:
            if summarised.exit_code != 0 or "Trainable parameters:" not in summarised.output:
                wrong.append(f"validate OK but summary exit {summarised.exit_code}")
        elif validated.exit_code == 2:
            refused += 1
            if summarised.exit_code != 2 or timed.exit_code != 2:
                wrong.append("validate refuses it, summary or time does not")
        else:
            wrong.append(f"validate exit {validated.exit_code}")
        if timed.exit_code != 2:  # the batch sizes are all far beyond any machine
            wrong.append(f"time exit {timed.exit_code} at batch {case.batch:,}")
        if wrong:
            outputs = "\n".join(f"{c}: {r[0].output[:400]}" for c, r in runs.items())
            failures.append(f"{case.name}: {'; '.join(wrong)}\n{outputs}")
    record(
        13,
        "huge sizes, nested repeats, huge batches",
        f"{len(cases)} generated specs x validate, summary, time: {refused} refused with a "
        f"located reason, the rest summarised; 0 tracebacks",
    )
    record(
        13,
        "worst command of those",
        f"{worst_seconds:.2f} s, peak {format_bytes(worst_peak)} traced (limit {SECONDS} s, "
        f"{format_bytes(PEAK)})",
    )
    assert not failures, f"{len(failures)} cases fail:\n\n" + "\n\n".join(failures[:5])


# --- repeat bombs ----------------------------------------------------------------------------


def repeat_bomb(depth: int, repeat: int) -> dict:
    block: dict = {"type": "relu"}
    for _ in range(depth):
        block = {"repeat": repeat, "layers": [block]}
    return {
        "name": "bomb",
        "input": [1, 8, 8],
        "classes": 3,
        "layers": [block, {"type": "flatten"}, {"type": "dense", "units": 3}, {"type": "softmax"}],
    }


BOMBS = [(2, 1000), (2, 10**6), (3, 10**9), (6, 10**18), (30, 2)]


@pytest.mark.parametrize(("depth", "repeat"), BOMBS)
def test_repeat_bombs_are_refused_in_milliseconds_from_yaml_and_from_a_checkpoint(depth, repeat):
    data = repeat_bomb(depth, repeat)
    text = yaml.safe_dump(data, default_flow_style=True, width=10**6)
    assert len(text) < 1024
    for source, make in (
        ("yaml", lambda: parse_spec(text)),
        ("saved", lambda: spec_from_data(data, "saved")),
    ):
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(SpecError) as caught:
                plan(make())
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        message = str(caught.value)
        assert f"more than the {MAX_LAYERS:,}" in message and "inside repeat" in message, message
        if source == "yaml":
            assert re.match(r"<spec>:\d+:\d+: layers\[0\] \(repeat block\): ", message), message
        assert seconds < 1 and peak < 16 * 2**20, (source, seconds, peak)
    record(
        13,
        "repeat inside repeat (YAML, a checkpoint's saved spec)",
        f"{len(BOMBS)} bombs up to {depth} levels: refused in {seconds * 1000:.0f} ms, peak "
        f"{format_bytes(peak)}",
    )


def test_a_network_at_the_layer_limit_still_plans():
    net = plan(spec_from_data(repeat_bomb(2, 99), "ok"))  # 9,801 relus
    assert len(net.nodes) == 99 * 99 + 3
    with pytest.raises(SpecError, match="expands to 10,204 layers, more than the 10,000"):
        plan(spec_from_data(repeat_bomb(2, 101), "too many"))


# --- weights are not allocated to validate or summarise --------------------------------------

MILLION_UNITS = HEAD.replace("[1, 8, 8]", "[1, 28, 28]") + (
    "  - {type: flatten}\n  - {type: dense, units: 1000000}\n  - {type: dense, units: 3}\n"
    "  - {type: softmax}\n"
)


def test_validate_and_summary_of_a_million_unit_dense_allocate_nothing(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text(MILLION_UNITS)
    figures = []
    for command in (["validate"], ["summary"], ["summary", "--format", "json"]):
        result, seconds, peak = invoke([*command, str(path)])
        assert result.exit_code == 0, result.output
        assert "788,000,003" in result.output or "788000003" in result.output
        assert seconds < 5 and peak < 50 * 2**20, (command, seconds, peak)
        figures.append((seconds, peak))
    seconds, peak = max(figures)
    record(
        13,
        "validate/summary of `dense units: 1000000` (3 GiB of weights)",
        f"{seconds:.2f} s, peak {format_bytes(peak)} traced (was 37 s and 9 GB)",
    )


def peak_rss_of(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``cnnbuild ARGS`` in a fresh process: (result, its peak resident memory in bytes,
    VmHWM: the new program's own, unlike ru_maxrss, which Linux carries over from the fork)."""
    code = (
        "import sys\n"
        "from cnnbuild.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "finally:\n"
        "    print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')),"
        " file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    kib = int(re.search(r"VmHWM:\s+(\d+) kB", result.stderr)[1])
    return result, kib * 1024


def test_the_same_through_a_real_process_stays_far_under_a_gigabyte(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text(MILLION_UNITS)
    result, rss = peak_rss_of(["validate", str(path)])
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr
    assert rss < 2**30 / 4, format_bytes(rss)
    record(13, "`python -m cnnbuild validate` of it: peak RSS", format_bytes(rss))


def test_time_with_a_huge_batch_size_exits_2_saying_what_it_needs_and_what_there_is():
    result, seconds, peak = invoke(["time", "archs/mnist.yaml", "--batch-size", "100000000"])
    assert result.exit_code == 2 and not crashed(result), result.output
    assert re.match(
        r"error: timing mnist at batch 100,000,000 .* would need [\d.,]+ TiB, but [\d.,]+ \w+ of "
        r"memory is available — use a smaller --batch-size\n$",
        result.output,
    ), result.output
    assert seconds < 5 and peak < 50 * 2**20
    record(
        13, "`time --batch-size 100000000`", f"exit 2 in {seconds:.2f} s: {result.output.strip()}"
    )


def test_building_weights_that_do_not_fit_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr("cnnbuild.limits.available_memory", lambda: 100 * 2**20)
    net = plan(parse_spec(MILLION_UNITS))
    with pytest.raises(
        ResourceError, match=r"the weights of t .* would need 11\.7 GiB, but 100\.0 MiB"
    ):
        allocate(net)
    assert not net.allocated and not net.params


def test_check_memory_says_what_is_needed_and_what_there_is():
    with pytest.raises(ResourceError, match=r"^x would need 1\.0 PiB, but .* available — y$"):
        check_memory(2**50, "x", "y")
    check_memory(1, "x", "y")


ESTIMATED: dict[str, str] = {}


@pytest.mark.parametrize("arch", ["mnist", "cifar_resnet"])
def test_the_memory_estimates_bound_what_a_step_really_allocates(arch):
    """training_memory and inference_memory are upper bounds, and not loose ones."""
    batch = 16
    spec = read_spec(f"archs/{arch}.yaml")
    rng = np.random.default_rng(0)
    ratios = []
    for mode in ("training", "inference"):
        net = plan(spec)
        if mode == "training":
            estimate = training_memory(net, batch, optimizer_slots({"type": "adam"}))
        else:
            estimate = inference_memory(net, batch)
        x = rng.standard_normal((batch, *net.input_shape), dtype=np.float32)
        labels = rng.integers(0, net.classes, batch)
        tracemalloc.start()
        try:
            allocate(net, seed=0)
            if mode == "training":
                optimizer = make_optimizer({"type": "adam"}, net.params, net.roles)
                for _ in range(2):
                    net.forward(x, train=True)
                    net.backward_loss(labels)
                    optimizer.step(net.grads)
            else:
                net.forward(x)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= estimate <= 3 * peak, (mode, format_bytes(estimate), format_bytes(peak))
        ratios.append(f"{mode} {estimate / peak:.2f}x")
    ESTIMATED[arch] = ", ".join(ratios)
    record(
        13,
        "memory estimate / real peak (batch 16)",
        "; ".join(f"{name}: {text}" for name, text in ESTIMATED.items()),
    )


def test_the_parameter_cap_is_refused_even_by_summary(tmp_path):
    units = MAX_PARAMETERS // 784 + 1
    path = tmp_path / "too_wide.yaml"
    path.write_text(MILLION_UNITS.replace("1000000", str(units)))
    result, _, _ = invoke(["summary", str(path)])
    assert result.exit_code == 2, result.output
    assert re.match(r"error: \S+:6:5: layers\[1\] \(dense\): [\d,]+ parameters here", result.output)
    assert f"more than the {MAX_PARAMETERS:,} cnnbuild allows" in result.output


# --- files that are not architecture files ---------------------------------------------------


def not_specs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the message must say)."""
    cases = {"/dev/zero": (Path("/dev/zero"), "not a regular file (a character device)")}
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    cases["a FIFO nobody writes to"] = (fifo, "not a regular file (a named pipe)")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (MAX_SPEC_BYTES + 10))
    cases["a file over 1 MiB"] = (big, "larger than 1 MiB; an architecture file is a few KB")
    cases["a directory"] = (tmp_path, "is a directory")  # said by click
    return cases


def test_devices_pipes_and_huge_files_are_refused_without_reading_them(tmp_path):
    slowest, peaks = 0.0, 0
    for name, (path, says) in not_specs(tmp_path).items():
        for command in ("validate", "summary", "time"):
            result, seconds, peak = invoke([command, str(path)])
            assert result.exit_code == 2 and not crashed(result), (name, result.output)
            assert says in result.output, (name, result.output)
            slowest, peaks = max(slowest, seconds), max(peaks, peak)
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.yaml").st_mode)
    with pytest.raises(SpecError, match="not a regular file \\(a directory\\)"):
        read_spec(tmp_path)
    assert slowest < 1 and peaks < 8 * 2**20
    record(
        13,
        "/dev/zero, a FIFO, a directory, a file over 1 MiB",
        f"refused by validate, summary and time in {slowest * 1000:.0f} ms at most, peak "
        f"{format_bytes(peaks)}",
    )


@pytest.mark.parametrize(
    ("layers", "says"),
    [
        (400, "the file holds more than 1,000 values; an architecture file holds a few hundred"),
        (200, "the file lists 203 layers, more than the 100 cnnbuild builds"),
    ],
)
def test_long_files_are_called_long_not_alias_bombs(layers, says, tmp_path, monkeypatch):
    """The limits lowered so that a short file stands for a 40,000-layer one."""
    monkeypatch.setattr("cnnbuild.specfile.MAX_NODES", 1000)
    monkeypatch.setattr("cnnbuild.specfile.MAX_LAYERS", 100)
    path = tmp_path / "long.yaml"
    path.write_text(HEAD + "  - {type: relu}\n" * layers + TAIL)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and says in result.output, result.output
    assert "alias" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layers", "says"),
    [
        (40_000, f"the file holds more than {MAX_NODES:,} values"),
        (20_000, "the file lists 20,003 layers, more than the 10,000 cnnbuild builds"),
    ],
)
def test_tens_of_thousands_of_plain_layers_are_refused_as_too_long(layers, says, tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(HEAD + "  - {type: relu}\n" * layers + TAIL)
    started = time.perf_counter()
    result, rss = peak_rss_of(["validate", str(path)])
    seconds = time.perf_counter() - started
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert "alias" not in result.stderr and rss < PEAK + 100 * 2**20
    record(
        13,
        f"{layers:,} plain layers",
        f"refused as too long in {seconds:.1f} s, peak RSS {format_bytes(rss)}",
    )


# --- network names ---------------------------------------------------------------------------

BAD_NAMES = ["../../x", "/tmp/x", "a/b", ".hidden", "-x", "x" * 101, "a\0b", "x\n", "", " x"]
GOOD_NAMES = ["mnist", "cifar_resnet", "net-2", "v1.2", "_x", "9", "x" * 100]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n[:12]) for n in BAD_NAMES])
def test_names_that_would_leave_runs_are_refused_saying_what_is_allowed(name, tmp_path):
    data = yaml.safe_load(HEAD + TAIL) | {"name": name}
    path = tmp_path / "named.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "'name'" in result.output and "letters, digits, '_', '-' and '.'" in result.output
    with pytest.raises(SpecError, match="at most 100 characters"):
        spec_from_data(data, "saved")


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_ordinary_names_are_fine(name):
    assert plan(spec_from_data(yaml.safe_load(HEAD + TAIL) | {"name": name}, "ok")).name == name


def test_a_megabyte_name_is_echoed_short():
    data = yaml.safe_load(HEAD + TAIL) | {"name": "x" * 10**6}
    with pytest.raises(SpecError) as caught:
        spec_from_data(data, "saved")
    assert len(str(caught.value)) < 400 and "1,000,000 characters" in str(caught.value)


# --- promise 1: NaN and infinities in every numeric option -----------------------------------


def numeric(option) -> bool:
    def types(schema):
        kinds = schema.get("type", [])
        found = [kinds] if isinstance(kinds, str) else list(kinds)
        for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
            found += types(branch)
        return found

    return bool({"number", "integer"} & set(types(option.schema)))


def numeric_places() -> list[tuple[str, str, str]]:
    """(where, type, key) for every numeric option of every registered type."""
    places = [
        ("layer", t, k)
        for t, c in sorted(REGISTRY.items())
        for k, o in c.options.items()
        if numeric(o)
    ]
    places += [
        ("optimizer", t, k)
        for t, c in sorted(OPTIMIZERS.items())
        for k, o in c.options.items()
        if numeric(o)
    ]
    places += [
        ("schedule", t, k)
        for t, c in sorted(SCHEDULES.items())
        for k, o in c.options.items()
        if numeric(o)
    ]
    places += [("training", "", k) for k, o in TRAINING.items() if numeric(o)]
    places += [("augment", "", k) for k, o in AUGMENT.items() if numeric(o)]
    return [*places, ("top", "", "classes"), ("input", "", "input")]


NON_FINITE = {".nan": math.nan, ".inf": math.inf, "-.inf": -math.inf}


def spec_with(where: str, type_name: str, key: str, text: str) -> tuple[str, int]:
    """A spec with ``key: text`` at ``where``, and the line it is on."""
    layer, training = "  - {type: relu}\n", ""
    if where == "layer":
        layer = f"  - {{type: {type_name}, {key}: {text}}}\n"
    elif where in ("optimizer", "schedule"):
        training = f"training:\n  {where}: {{type: {type_name}, {key}: {text}}}\n"
    elif where == "training":
        training = f"training:\n  {key}: {text}\n"
    elif where == "augment":
        training = f"training:\n  augment: {{{key}: {text}}}\n"
    spec = HEAD + layer + TAIL + training
    if where == "top":
        spec = spec.replace("classes: 3", f"classes: {text}")
    elif where == "input":
        spec = spec.replace("[1, 8, 8]", f"[1, {text}, 8]")
    line = next(i for i, row in enumerate(spec.splitlines(), 1) if text in row)
    return spec, line


def test_nan_and_infinities_in_every_numeric_option_are_refused_at_validation(tmp_path):
    places = numeric_places()
    failures, tried = [], 0
    runner = CliRunner()
    for where, type_name, key in places:
        for text, value in NON_FINITE.items():
            tried += 1
            spec, line = spec_with(where, type_name, key, text)
            path = tmp_path / "value.yaml"
            path.write_text(spec)
            result = runner.invoke(main, ["validate", str(path)])
            expected = f"is {text} — write a finite number"
            located = [
                row
                for row in result.output.splitlines()
                if row.startswith(f"{path}:{line}:") and expected in row
            ]
            others = result.output.replace(str(path), "FILE")
            if result.exit_code != 2 or not located or re.search(r"(?<![.\w])(nan|inf)", others):
                failures.append(f"{where} {type_name} {key}={text}: {result.output}")
            data = yaml.safe_load(spec)
            with pytest.raises(SpecError, match=re.escape(expected)):
                spec_from_data(data, "saved")
            assert math.isnan(value) or yaml.safe_load(f"x: {text}")["x"] == value
    record(
        1,
        "NaN and infinities (every numeric option)",
        f"{tried} values in {len(places)} options of layers, optimizers, schedules, training: "
        "exit 2, located, also from a saved spec",
    )
    assert not failures, "\n".join(failures[:10])


# --- promise 1: key typos in every position --------------------------------------------------


def typos(key: str) -> list[str]:
    variants = [key + key[-1]]
    if len(key) >= 3:
        variants.append(key[0].upper() + key[1:])
    if len(key) >= 4:
        variants.append(key[0] + key[2] + key[1] + key[3:])
    return [v for v in dict.fromkeys(variants) if v != key]


def typo_cases() -> list[tuple[str, str, str, int]]:
    """(label, spec text, the misspelt key, its line) for every key of every type."""
    cases = []
    layer_line = HEAD.count("\n") + 1

    def add(label, spec, typo, line):
        cases.append((label, spec, typo, line))

    for type_name, cls in sorted(REGISTRY.items()):
        for key in ["type", "name", "inputs", *cls.options]:
            for typo in typos(key):
                fields = {"type": type_name, key: 1} if key != "type" else {}
                fields.pop(key, None)
                body = ", ".join(f"{k}: {v}" for k, v in fields.items())
                entry = f"{typo}: {type_name if key == 'type' else 1}"
                add(
                    f"{type_name}.{key}",
                    HEAD + f"  - {{{body + ', ' if body else ''}{entry}}}\n" + TAIL,
                    typo,
                    layer_line,
                )
    for kind, registry in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        for type_name, cls in sorted(registry.items()):
            for key in ["type", *cls.options]:
                for typo in typos(key):
                    value = type_name if key == "type" else 1
                    rest = "" if key == "type" else f"type: {type_name}, "
                    spec = HEAD + TAIL + f"training:\n  {kind}: {{{rest}{typo}: {value}}}\n"
                    add(f"{kind} {type_name}.{key}", spec, typo, spec.count("\n"))
    for key in TRAINING:
        for typo in typos(key):
            spec = HEAD + TAIL + f"training:\n  {typo}: 1\n"
            add(f"training.{key}", spec, typo, spec.count("\n"))
    for key in ("name", "input", "classes", "layers"):
        for typo in typos(key):
            spec = re.sub(rf"^{key}:", f"{typo}:", HEAD + TAIL, flags=re.M)
            line = next(i for i, row in enumerate(spec.splitlines(), 1) if row.startswith(typo))
            add(f"top.{key}", spec, typo, line)
    for key in ("repeat", "layers", "name"):
        for typo in typos(key):
            block = {"repeat": "2", "layers": "[{type: relu}]", "name": "blk"}
            body = ", ".join(f"{typo if k == key else k}: {v}" for k, v in block.items())
            add(f"repeat.{key}", HEAD + f"  - {{{body}}}\n" + TAIL, typo, layer_line)
    return cases


def test_key_typos_in_every_position_are_located_with_a_did_you_mean(tmp_path):
    cases = typo_cases()
    failures = []
    for label, spec, typo, line in cases:
        with pytest.raises(SpecError) as caught:
            plan(parse_spec(spec, "net.yaml"))
        wanted = re.compile(
            rf"^net\.yaml:{line}:\d+: .*unknown key {re.escape(repr(typo))} — did you mean '"
        )
        if not any(wanted.match(problem) for problem in caught.value.problems):
            failures.append(f"{label} ({typo!r}, line {line}):\n{caught.value}")
    record(
        1,
        "key typos (every key of every layer, optimizer, schedule, section)",
        f"{len(cases)} typos: each located, 'unknown key ... did you mean'",
    )
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("typo", ["tpye", "Type"])
@pytest.mark.parametrize("command", ["validate", "summary", "train"])
def test_a_misspelt_type_exits_2_from_validate_summary_and_train(
    typo, command, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "net.yaml"
    path.write_text(
        HEAD + "  - {type: flatten}\n  - {type: dense, units: 3}\n" + f"  - {{{typo}: softmax}}\n"
    )
    result = CliRunner().invoke(main, [command, str(path)])
    assert result.exit_code == 2 and not crashed(result), result.output
    assert f"net.yaml:7:6: layers[2]: unknown key '{typo}' — did you mean 'type'?" in result.output
    assert not (tmp_path / "runs").exists()


def test_the_limits_do_not_depend_on_the_machine(monkeypatch):
    """Located refusals are the same with 1 TiB of memory free: they are about the file."""
    monkeypatch.setattr("cnnbuild.limits.available_memory", lambda: 2**40)
    data = repeat_bomb(1, 3) | {"input": [3, 100_000, 100_000]}
    with pytest.raises(SpecError, match="values per image, more than the"):
        plan(spec_from_data(data, "x"))


def test_the_fast_schema_validator_finds_exactly_what_jsonschema_finds():
    """schema.py decides the schema's `if` conditions directly (validating 10,000 layers
    took 25 s); every error, with its context, must stay the same."""
    from jsonschema import Draft202012Validator
    from test_promise_specs import corpus as malformed

    from cnnbuild.schema import build_schema, validator

    def errors(check, data) -> list:
        found = []

        def walk(error):
            found.append((tuple(error.absolute_path), tuple(error.schema_path), error.message))
            for child in error.context or []:
                walk(child)

        for error in check.iter_errors(data):
            walk(error)
        return sorted(found, key=repr)

    plain, fast = Draft202012Validator(build_schema()), validator()
    odd = [{"layers": ["conv", 3, None, [1], {"type": 3}, {"type": None}, {"repeat": "x"}]}]
    documents = odd + [yaml.safe_load(path.read_text()) for path in ARCHS]
    for case in malformed(count(250, 2500))[:: count(5, 1)]:
        try:
            documents.append(yaml.safe_load(case.raw))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
    for data in documents:
        assert errors(fast, data) == errors(plain, data), data


@pytest.mark.parametrize(
    "change",
    ["repeat bomb", "a billion units", "lr .nan", "name ../../x", "tpye"],
)
def test_a_checkpoint_whose_saved_spec_is_hostile_is_refused_by_evaluate(change, tmp_path):
    """The saved architecture goes through the same checks; nothing big is allocated."""
    import io
    import json
    import zipfile

    from cnnbuild.checkpoint import META_KEY

    fixture = Path(__file__).parent / "fixtures" / "v0_1_0" / "last.npz"
    with np.load(fixture, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays[META_KEY].item())
    spec, config = meta["spec"], meta["config"]
    if change == "repeat bomb":
        bomb = {"repeat": 10**9, "layers": [{"repeat": 10**9, "layers": [{"type": "relu"}]}]}
        spec["layers"].insert(2, bomb)
    elif change == "a billion units":
        spec["layers"][-2]["units"] = 10**9
        spec["layers"].insert(-1, {"type": "dense", "units": 10})
    elif change == "lr .nan":
        config["optimizer"] = {"type": "adam", "lr": math.nan}
    elif change == "name ../../x":
        spec["name"] = "../../x"
    else:
        spec["layers"][-1] = {"tpye": "softmax"}
    arrays[META_KEY] = np.array(json.dumps(meta))
    path = tmp_path / "hostile.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    result, seconds, peak = invoke(["evaluate", str(path)])
    assert result.exit_code == 2 and not crashed(result), result.output
    assert "saved architecture" in result.output, result.output
    assert seconds < 5 and peak < 64 * 2**20, (seconds, format_bytes(peak))
    HOSTILE[change] = (seconds, peak)
    record(
        13,
        "a checkpoint's saved spec: bomb, 10^9 units, .nan, ../ name, typo",
        f"{len(HOSTILE)} kinds refused by `evaluate` with exit 2, at most "
        f"{max(s for s, _ in HOSTILE.values()):.2f} s and "
        f"{format_bytes(max(p for _, p in HOSTILE.values()))} traced",
    )


HOSTILE: dict[str, tuple[float, int]] = {}
