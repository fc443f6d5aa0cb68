"""Promise 6: a process killed while saving leaves a checkpoint that loads, and Ctrl-C during
training saves one, exits 130 and resumes to the same result as a run never stopped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


def test_ctrl_c_mid_epoch_saves_exits_130_and_resumes_exactly(tmp_path, image_folder):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    rng = random.Random(60)
    trials = count(20, 60)
    flags = ["--batch-size", "2", "--data-dir", str(image_folder)]
    straight: dict[int, tuple] = {}
    exits, mid_epoch, worst = [], 0, 0.0
    for start in range(0, trials, 2):
        batch = []
        for trial in range(start, min(start + 2, trials)):
            out = tmp_path / f"run{trial}"
            command = [sys.executable, "-m", "cnnbuild", "train", str(spec), "--epochs", "1000"]
            process = subprocess.Popen(
                [*command, *flags, "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            batch.append((out, process))
        for _, process in batch:
            assert process.stdout.readline().startswith("epoch")  # training has begun
            time.sleep(rng.uniform(0, 0.4))
            process.send_signal(signal.SIGINT)
        for out, process in batch:
            _, stderr = process.communicate(timeout=120)
            exits.append(process.returncode)
            assert process.returncode == 130 and "Traceback" not in stderr, stderr
            load_trained(out / "last.npz")
            _, meta = load_checkpoint(out / "last.npz")
            mid_epoch += meta["batch"] > 0
            epochs = meta["epoch"] + 1
            result = CliRunner().invoke(
                main, ["train", str(spec), "--epochs", epochs, "--resume", str(out / "last.npz")]
            )
            assert result.exit_code == 0, result.output
            if epochs not in straight:
                whole = tmp_path / f"straight{epochs}"
                result = CliRunner().invoke(
                    main, ["train", str(spec), "--epochs", epochs, *flags, "--out", str(whole)]
                )
                assert result.exit_code == 0, result.output
                straight[epochs] = state(whole / "last.npz")
            arrays, history = state(out / "last.npz")
            worst = max(worst, max_difference(arrays, straight[epochs][0]))
            assert history == straight[epochs][1]
    record(
        6,
        "SIGINT during `cnnbuild train`",
        f"{trials} trials ({mid_epoch} mid-epoch): exit 130 in {exits.count(130)}, checkpoint "
        f"loads in {trials}, --resume ends equal to an unstopped run (max diff {worst:g})",
    )
    assert worst == 0
