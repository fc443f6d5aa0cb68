"""Promises at the edges of `cnnbuild train`, `evaluate` and `predict`: run folders that
never escape or collide (11), file-system faults that end in a message and lose nothing
(14), doctored checkpoint settings refused (3), divergence caught in every array (8), and
messages that name the real cause (16).

Each class is a generated corpus run through the command line in this process (click's
CliRunner), except concurrency, which needs real processes.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from promises import count, record
from test_train import SPEC

from cnnbuild.checkpoint import META_KEY, load_checkpoint, read_run, save_checkpoint
from cnnbuild.cli import main

pytestmark = pytest.mark.usefixtures("without_curves")


def cli(*args: object) -> tuple[int, str]:
    """Run the command line; any exception other than an exit is a traceback: re-raised."""
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def one_line_error(output: str) -> bool:
    """One line gives the reason: cnnbuild's "error: ..." or click's "Error: ..."."""
    lines = [line for line in output.splitlines() if line.lower().startswith("error:")]
    return len(lines) == 1 and "Traceback" not in output


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, inside an otherwise watched tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def trained(tmp_path: Path, spec_file: Path, image_folder: Path) -> Path:
    """A finished one-epoch run on the tiny image folder: its folder."""
    out = tmp_path / "trained"
    code, output = cli("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out)
    assert code == 0, output
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- 11. run folders ----------------------------------------------------------------------

HOSTILE_NAMES = [
    "../../x", "../x", "/tmp/x", "a/b", "a\\b", "..", ".", ".hidden", "-rf", "~", "$HOME/x",
    "x" * 101, "é" * 200, "a\x00b", "a\nb", "a b", "CON:", "", " x",
]  # fmt: skip


@pytest.mark.slow
def test_a_spec_name_is_a_name_never_a_path(tmp_path, workdir, image_folder):
    rng = random.Random(11)
    names = ["mnist", "my-net.v2", "Net_1", *HOSTILE_NAMES] + [
        "".join(rng.choice("./\\~-_ aZ9é\x00") for _ in range(rng.randint(1, 12)))
        for _ in range(count(20, 200))
    ]
    outside_before = snapshot(tmp_path)
    refused, inside = 0, 0
    for number, name in enumerate(names):
        spec = tmp_path / f"named{number}.yaml"
        spec.write_text(SPEC.replace("name: tiny", f"name: {json.dumps(name)}"))
        code, output = cli("train", spec, "--epochs", 1, "--data-dir", image_folder)
        if code == 2:
            assert one_line_error(output) or ":" in output, output
            refused += 1
        else:
            assert code == 0, output
            made = [path for path in (workdir / "runs").iterdir()]
            assert all(path.parent == workdir / "runs" for path in made)
            inside += 1
    after = snapshot(tmp_path)
    escaped = {
        path
        for path in after.keys() - outside_before.keys()
        if not path.startswith(("work/runs/", "named"))
    }
    assert not escaped, escaped
    record(
        11,
        "hostile and random network names",
        f"{len(names)} names: {refused} refused by the schema, {inside} trained in runs/<name>; "
        f"files written elsewhere 0",
    )


@pytest.mark.slow
def test_runs_started_together_each_get_their_own_folder(
    tmp_path, workdir, spec_file, image_folder
):
    processes = count(3, 6)
    command = [sys.executable, "-m", "cnnbuild", "train", str(spec_file), "--epochs", "2"]
    command += ["--data-dir", str(image_folder)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    running = [
        subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    folders = []
    for process in running:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        folders.append(stderr.split("run folder ")[1].split()[0].rstrip(";"))
    assert len(set(folders)) == processes, folders
    for folder in folders:
        run = read_run(workdir / folder / "last.npz")
        assert run.state.epoch == 2 and len(run.state.history) == 2
        assert not (workdir / folder / ".lock").exists()
    record(11, "runs of one spec started together", f"{processes} processes: {processes} folders")


def test_no_run_overwrites_another(tmp_path, workdir, spec_file, image_folder, trained):
    other = tmp_path / "other"
    code, _ = cli("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", other)
    assert code == 0
    before = snapshot(other)
    attempts = [
        ("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", other),
        ("train", spec_file, "--epochs", 3, "--resume", trained / "last.npz", "--out", other),
    ]
    (trained / ".lock").write_text(str(os.getppid()))  # a live process holds it
    attempts.append(("train", spec_file, "--epochs", 3, "--resume", trained / "last.npz"))
    for attempt in attempts:
        code, output = cli(*attempt)
        assert code == 2 and one_line_error(output), output
    assert snapshot(other) == before
    (trained / ".lock").write_text("99999999")  # its process is gone: stale, taken over
    code, output = cli("train", spec_file, "--epochs", 2, "--resume", trained / "last.npz")
    assert code == 0, output
    record(
        11,
        "another run's folder (--out, --resume --out, locked)",
        f"{len(attempts)} attempts refused, nothing changed; a stale lock is taken over",
    )


# --- 14. file-system faults -----------------------------------------------------------------

ERRNOS = [errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENAMETOOLONG]


@contextmanager
def faulty(monkeypatch: pytest.MonkeyPatch, matches: Callable[[str], bool], code: int):
    """Make opening, creating and renaming paths for which ``matches`` holds fail with
    ``code``, as a read-only, full or broken file system would."""
    real = {"open": builtins.open, "os_open": os.open, "mkdir": os.mkdir, "replace": os.replace}

    def check(path: object) -> None:
        if matches(os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""):
            raise OSError(code, os.strerror(code), os.fspath(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wxa+"):
            check(file)
        return real["open"](file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            check(path)
        return real["os_open"](path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        check(path)
        return real["mkdir"](path, *args, **kwargs)

    def fake_replace(source, target, *args, **kwargs):
        check(target)
        return real["replace"](source, target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", fake_open)
        patch.setattr(io, "open", fake_open)
        patch.setattr(os, "open", fake_os_open)
        patch.setattr(os, "mkdir", fake_mkdir)
        patch.setattr(os, "replace", fake_replace)
        yield


@pytest.mark.slow
def test_file_system_faults_end_in_a_message_and_lose_nothing(
    tmp_path, workdir, spec_file, image_folder, trained, monkeypatch
):
    targets = {
        "a new run folder": lambda path: path.endswith("fresh"),
        "the run folder's lock": lambda path: path.endswith(".lock"),
        "config.yaml": lambda path: "config.yaml" in path,
        "last.npz": lambda path: "last.npz.tmp" in path,
        "best.npz": lambda path: "best.npz.tmp" in path,
        "history.csv": lambda path: "history.csv.tmp" in path,
    }
    tried = failed = 0
    for what, matches in targets.items():
        for code in ERRNOS:
            before = snapshot(trained)
            with faulty(monkeypatch, matches, code):
                fresh = cli(
                    "train", spec_file, "--epochs", 1, "--data-dir", image_folder,
                    "--out", tmp_path / "fresh",
                )  # fmt: skip
                resumed = cli("train", spec_file, "--epochs", 2, "--resume", trained / "last.npz")
            for result_code, output in (fresh, resumed):
                assert result_code in (0, 2), output
                if result_code == 2:
                    assert one_line_error(output), (what, output)
                    failed += 1
            tried += 2
            run = read_run(trained / "last.npz")  # still loads, whatever happened
            assert run.state.epoch in (1, 2)
            if resumed[0] == 2:
                kept = {k: v for k, v in snapshot(trained).items() if k != ".lock"}
                assert kept.keys() >= {k for k in before if not k.startswith(".")}
            for leftover in list(trained.glob(".*.tmp-*")) + list(trained.glob(".lock")):
                leftover.unlink()
            (trained / "last.npz").write_bytes(before["last.npz"])
            (trained / "history.csv").write_bytes(before["history.csv"])
            if (tmp_path / "fresh").exists():
                for path in sorted((tmp_path / "fresh").rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                (tmp_path / "fresh").rmdir()
    (workdir / "afile").write_text("not a folder")
    (workdir / "runs").write_text("a file where run folders go")
    (workdir / "history").mkdir()
    (workdir / "history" / "history.csv").write_bytes(b"epoch,loss\n\xff\xfe1,2\n")
    real_faults = [
        ("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", "afile/sub"),
        ("train", spec_file, "--epochs", 1, "--data-dir", image_folder),
        ("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", "a\x00b"),
        ("plot", workdir / "history"),
    ]
    for attempt in real_faults:
        code, output = cli(*attempt)
        assert code == 2 and one_line_error(output), output
        tried += 1
    with faulty(monkeypatch, lambda path: path.endswith(".png"), errno.EROFS):
        code, output = cli("predict", trained / "last.npz", "--index", 0, "--show")
    assert code == 2 and one_line_error(output), output
    record(
        14,
        "write faults (EACCES, EROFS, ENOSPC, EDQUOT, EIO, ENAMETOOLONG) and real ones",
        f"{tried + 1} commands, {failed + len(real_faults) + 1} hit a fault: each exit 2 with "
        "one line, never a traceback; the run's last.npz loads after every one",
    )


# --- 3. doctored checkpoint settings ------------------------------------------------------


def doctored_configs(config: dict, rng: random.Random) -> Iterator[tuple[str, dict]]:
    """Every key of the saved settings, missing and with values of wrong type or range."""
    values = [None, "x", -1, 0, 10**12, 1.5, [], {}, True, float("nan"), float("inf")]
    for key in config:
        yield f"without {key}", {k: v for k, v in config.items() if k != key}
        for value in values:
            yield f"{key}={value!r}", {**config, key: value}
    for key in ("crop", "flip"):
        for value in values:
            yield f"augment.{key}={value!r}", {**config, "augment": {key: value}}
    for key in ("type", "lr", "momentum"):
        for value in values:
            yield (
                f"optimizer.{key}={value!r}",
                {**config, "optimizer": {"type": "adam", key: value}},
            )
    for _ in range(count(20, 200)):
        changed = dict(config)
        for key in rng.sample(sorted(config), 2):
            changed[key] = rng.choice(values)
        yield f"random {sorted(changed.items())!r:.60}", changed


@pytest.mark.slow
def test_doctored_settings_in_a_checkpoint_are_refused(tmp_path, spec_file, trained):
    arrays, meta = load_checkpoint(trained / "last.npz")
    rng = random.Random(3)
    tried = refused = ran = 0
    for number, (name, config) in enumerate(doctored_configs(meta["config"], rng)):
        path = tmp_path / f"doctored{number}" / "last.npz"
        path.parent.mkdir()
        entries = {**arrays, META_KEY: np.array(json.dumps({**meta, "config": config}))}
        entries["__format_version__"] = np.array(1, np.int64)
        with path.open("wb") as file:
            np.savez(file, **entries)
        for command in (
            ("evaluate", path),
            ("train", spec_file, "--epochs", 2, "--resume", path),
        ):
            code, output = cli(*command)
            assert code in (0, 2), (name, output)
            if code == 2:
                refused += 1
                assert "Traceback" not in output, (name, output)
            else:
                ran += 1
            tried += 1
    record(
        3,
        "doctored training settings (evaluate, train --resume)",
        f"{tried} loads: tracebacks 0, refused {refused}, ran {ran} (a missing key takes "
        "its default)",
    )


# --- 8. divergence ------------------------------------------------------------------------


def test_divergence_is_caught_in_every_array_and_never_saved(tmp_path, spec_file, image_folder):
    tried = stopped = 0
    for lr in ("1e6", "1e12", "1e30"):
        out = tmp_path / f"lr{lr}"
        code, output = cli(
            "train", spec_file, "--epochs", 20, "--lr", lr, "--data-dir", image_folder,
            "--out", out,
        )  # fmt: skip
        tried += 1
        if code == 0:  # trained without anything becoming non-finite
            continue
        # an array turns non-finite; or (the fast engine sums in float64, so batch-norm
        # statistics overflow later) the loss stalls at certainty of wrong classes
        caught = ("non-finite", "became", "training has diverged")
        assert code == 2 and any(words in output for words in caught), output
        assert "layer" in output or "input" in output, output
        stopped += 1
        if (out / "last.npz").exists():
            read_run(out / "last.npz")
    for lr in ("nan", "inf", "-inf", "-1", "0"):
        code, output = cli("train", spec_file, "--lr", lr, "--data-dir", image_folder)
        assert code == 2 and "--lr" in output, output
        tried += 1
    record(
        8,
        "huge and non-numeric learning rates through the CLI",
        f"{tried} runs: {stopped} of 3 huge rates stopped naming the array or layer, 5 bad "
        "values refused at once; every checkpoint left loads",
    )


# --- 16. words that point at the real cause ------------------------------------------------


def test_messages_name_the_real_cause(tmp_path, workdir, spec_file, trained, image_folder):
    checks = 0
    others = {
        "another input shape": SPEC.replace("input: [1, 8, 8]", "input: [3, 8, 8]"),
        "another activation": SPEC.replace("{type: relu}", "{type: tanh}", 1),
        "another dropout": SPEC.replace("rate: 0.3", "rate: 0.5"),
        "one more layer": SPEC.replace(
            "  - {type: softmax}", "  - {type: relu}\n  - {type: softmax}"
        ),
    }
    for what, text in others.items():
        other = tmp_path / f"{what.replace(' ', '_')}.yaml"
        other.write_text(text)
        code, output = cli("train", other, "--epochs", 5, "--resume", trained / "last.npz")
        assert code == 2 and "is not the network" in output, (what, output)
        assert "input:" not in output.split("—")[-1], (what, output)  # no advice to edit input
        checks += 1
    history = (trained / "history.csv").read_bytes()
    for epochs in ("1",):
        code, output = cli("train", spec_file, "--epochs", epochs, "--resume", trained / "last.npz")
        assert code == 2 and "--epochs above 1" in output and "saved" not in output, output
        checks += 1
    assert (trained / "history.csv").read_bytes() == history
    first = cli("predict", trained / "last.npz", "--index", 0, "--show")
    second = cli("predict", trained / "last.npz", "--index", 0, "--show")
    assert first[0] == second[0] == 0
    assert sorted(p.name for p in workdir.glob("*.png")) == ["test_0-2.png", "test_0.png"]
    checks += 1
    (tmp_path / "elsewhere").mkdir()
    os.rename(image_folder, tmp_path / "elsewhere" / "images")
    try:
        code, output = cli("evaluate", trained / "last.npz")
        assert code == 2 and "--data-dir" in output, output
        code, output = cli(
            "evaluate", trained / "last.npz", "--data-dir", tmp_path / "elsewhere" / "images"
        )
        assert code == 0, output
    finally:
        os.rename(tmp_path / "elsewhere" / "images", image_folder)
    checks += 1
    record(
        16,
        "resume with another network, no epochs left, --show twice, moved data",
        f"{checks} cases: each message names the cause and the fix; nothing overwritten",
    )


# --- 15. no silently wrong answers ----------------------------------------------------------


def test_predict_refuses_probabilities_that_are_not_numbers(tmp_path, trained):
    arrays, meta = load_checkpoint(trained / "last.npz")
    refused = 0
    for scale in (1e20, 1e30, 3e38):
        huge = {
            key: value * np.float32(scale) if key.startswith("params/") else value
            for key, value in arrays.items()
        }
        path = tmp_path / f"huge{scale:g}.npz"
        save_checkpoint(path, huge, meta)
        for command in (("predict", path, "--index", 0), ("evaluate", path)):
            code, output = cli(*command)
            assert code == 2 and "NaN or infinite probabilities" in output, output
            assert "nan%" not in output
            refused += 1
    record(15, "degenerate weights", f"{refused} predict/evaluate calls: refused, no nan%")
