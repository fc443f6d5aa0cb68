"""Promise 6: a process killed while saving leaves a checkpoint that loads, and Ctrl-C during
training saves one, exits 130 and resumes to the same result as a run never stopped.

This is the one test of Ctrl-C and --resume through the command line; its first two trials run
in the quick loop (-m "not slow"). Saves that fail by an exception are in test_checkpoint.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from promises import count, record
from test_train import SPEC

from cnnbuild.checkpoint import load_checkpoint, save_checkpoint
from cnnbuild.cli import main
from cnnbuild.inference import load_trained

SAVER = """\
import sys
import numpy as np
from cnnbuild.checkpoint import save_checkpoint
folder = sys.argv[1]
i = 0
while True:
    i += 1
    arrays = {"w": np.full(i * 20_000, i, np.float32)}
    save_checkpoint(f"{folder}/last.npz", arrays, {"i": i})
    if i % 2 == 0:
        save_checkpoint(f"{folder}/best.npz", arrays, {"i": i})
    print(i, flush=True)
"""
CONCURRENT = 4  # processes run at once (their start-up dominates)


def saved_number(path: Path) -> int:
    """The loop count a saver's checkpoint holds, after checking its contents are whole."""
    arrays, meta = load_checkpoint(path)
    i = meta["i"]
    assert np.array_equal(arrays["w"], np.full(i * 20_000, i, np.float32)), path
    return i


@pytest.mark.slow
def test_sigkill_during_saves_always_leaves_a_checkpoint_that_loads(tmp_path):
    rng = random.Random(6)
    trials = count(50, 250)
    loaded, newer, temps_left, temps_after = 0, 0, 0, 0
    for start in range(0, trials, CONCURRENT):
        batch = []
        for trial in range(start, min(start + CONCURRENT, trials)):
            folder = tmp_path / f"trial{trial}"
            folder.mkdir()
            process = subprocess.Popen(
                [sys.executable, "-c", SAVER, str(folder)], stdout=subprocess.PIPE, text=True
            )
            batch.append((folder, process))
        for _, process in batch:
            assert process.stdout.readline().strip() == "1"  # one save is complete
            time.sleep(rng.uniform(0, 0.25))
            process.kill()
        for folder, process in batch:
            assert process.wait(timeout=60) == -signal.SIGKILL
            # read through the text buffer: the first readline may have buffered later lines
            printed = process.stdout.read().split()
            process.stdout.close()
            done = int(printed[-1]) if printed else 1  # saves reported complete
            last = saved_number(folder / "last.npz")
            assert last in (done, done + 1), (last, done)
            if done >= 2:
                assert saved_number(folder / "best.npz") in (done - done % 2, done + 1)
            loaded += 1
            newer += last == done + 1
            temps_left += len(list(folder.glob(".*.tmp-*")))
            # the next run saves both files again, and cleans up after the killed one
            save_checkpoint(folder / "last.npz", {}, {"i": 0})
            save_checkpoint(folder / "best.npz", {}, {"i": 0})
            temps_after += len(os.listdir(folder)) - 2
    record(
        6,
        "SIGKILL during checkpoint saves",
        f"{trials} trials: newest checkpoint loads {loaded}/{trials} ({newer} the save under "
        f"way, {trials - newer} the one before); temp files left {temps_left}, after the next "
        f"run {temps_after}",
    )
    assert loaded == trials and temps_after == 0


def state(path: Path) -> tuple[dict[str, np.ndarray], list[dict]]:
    """A checkpoint's arrays and its history without the timings."""
    arrays, meta = load_checkpoint(path)
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in meta["history"]]
    return arrays, history


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max(initial=0)) for k in a)


INTERRUPTS = count(20, 60)
QUICK = 2  # the first trials, one concurrent pair, run in the quick loop (-m "not slow")
STRAIGHT: dict[int, tuple] = {}  # epochs -> the state of a run never stopped
STOPS = {"exits": [], "expected": [], "mid_epoch": 0, "worst": 0.0}
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]  # Ctrl-C; kill, timeout, SLURM; hang-up


@pytest.mark.usefixtures("without_curves")
@pytest.mark.parametrize(
    "trials",
    [
        pytest.param(range(QUICK), id="first"),
        pytest.param(range(QUICK, INTERRUPTS), id="rest", marks=pytest.mark.slow),
    ],
)
def test_a_stop_signal_mid_epoch_saves_exits_128_plus_n_and_resumes_exactly(
    tmp_path, image_folder, trials
):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    flags = ["--batch-size", "2", "--data-dir", str(image_folder)]
    worst = 0.0
    for start in range(trials.start, trials.stop, 2):
        batch = []
        for trial in range(start, min(start + 2, trials.stop)):
            out = tmp_path / f"run{trial}"
            command = [sys.executable, "-m", "cnnbuild", "train", str(spec), "--epochs", "1000"]
            process = subprocess.Popen(
                [*command, *flags, "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            batch.append((out, process, random.Random(60 + trial), SIGNALS[trial % 3]))
        for _, process, rng, number in batch:
            assert process.stdout.readline().startswith("epoch")  # training has begun
            time.sleep(rng.uniform(0, 0.4))
            process.send_signal(number)
        for out, process, _, number in batch:
            _, stderr = process.communicate(timeout=120)
            STOPS["exits"].append(process.returncode)
            STOPS["expected"].append(128 + number)
            assert process.returncode == 128 + number and "Traceback" not in stderr, stderr
            assert f"stopped by {number.name}" in stderr and "--resume" in stderr, stderr
            assert not (out / ".lock").exists()
            load_trained(out / "last.npz")
            _, meta = load_checkpoint(out / "last.npz")
            STOPS["mid_epoch"] += meta["batch"] > 0
            epochs = meta["epoch"] + 1
            result = CliRunner().invoke(
                main, ["train", str(spec), "--epochs", epochs, "--resume", str(out / "last.npz")]
            )
            assert result.exit_code == 0, result.output
            assert not list(out.glob("*.tmp*"))
            if epochs not in STRAIGHT:
                whole = tmp_path / f"straight{epochs}"
                result = CliRunner().invoke(
                    main, ["train", str(spec), "--epochs", epochs, *flags, "--out", str(whole)]
                )
                assert result.exit_code == 0, result.output
                STRAIGHT[epochs] = state(whole / "last.npz")
            arrays, history = state(out / "last.npz")
            worst = max(worst, max_difference(arrays, STRAIGHT[epochs][0]))
            STOPS["worst"] = max(STOPS["worst"], worst)
            exits, expected = STOPS["exits"], STOPS["expected"]
            sent = ", ".join(f"{expected.count(128 + n)} {n.name}" for n in SIGNALS)
            record(
                12,
                "SIGINT, SIGTERM, SIGHUP during `cnnbuild train`",
                f"{len(exits)} trials ({sent}; {STOPS['mid_epoch']} mid-epoch): exit 128+n in "
                f"{sum(map(int.__eq__, exits, expected))}, checkpoint loads in {len(exits)}, "
                f"--resume ends equal to an unstopped run (max diff {STOPS['worst']:g})",
            )
            assert history == STRAIGHT[epochs][1]
    assert worst == 0
