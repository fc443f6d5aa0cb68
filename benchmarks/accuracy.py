"""Accuracy runs on real data: train each spec with its own `training:` settings and report
the final test accuracy and the wall time.

    python benchmarks/accuracy.py archs/mnist.yaml archs/cifar.yaml --data-dir /tmp/cifar

CIFAR-10 is not shipped: build the standard batches from ../shared/data with
``python3 ../shared/data/cifar10_from_jpeg.py /tmp/cifar`` (needs Pillow). Results go to
benchmarks/results/accuracy-<time>.json (with each spec file's text) and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def train(spec: Path, out: Path, data_dir: str | None) -> dict:
    """Run `cnnbuild train` as a user would; return its last epoch and the wall time."""
    command = [sys.executable, "-m", "cnnbuild", "train", str(spec), "--out", str(out)]
    if data_dir:
        command += ["--data-dir", data_dir]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    with (out / "history.csv").open(newline="") as file:
        history = list(csv.DictReader(file))
    last = history[-1]
    return {
        "spec": str(spec),
        "spec_text": spec.read_text(),
        "command": " ".join(["cnnbuild", *command[3:]]),
        "epochs": int(last["epoch"]),
        "test_accuracy": float(last["test_accuracy"]),
        "best_test_accuracy": max(float(row["test_accuracy"]) for row in history),
        "train_accuracy": float(last["train_accuracy"]),
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+", type=Path, help="architecture files to train")
    parser.add_argument("--data-dir", help="folder holding the datasets (CIFAR-10)")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = []
    for spec in args.specs:
        out = HERE / "runs" / f"{spec.stem}-{stamp}"
        results.append(train(spec, out, args.data_dir))
        print(json.dumps(results[-1]), flush=True)
    lines = [
        "| spec | epochs | test accuracy (last) | best | wall time |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['spec']} | {r['epochs']} | {r['test_accuracy']:.2%} | "
            f"{r['best_test_accuracy']:.2%} | {r['wall_seconds'] / 60:.1f} min |"
            for r in results
        ),
    ]
    report = "\n".join(lines)
    print(report)
    target = HERE / "results" / f"accuracy-{stamp}"
    target.parent.mkdir(exist_ok=True)
    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": sys.version}
    target.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    target.with_suffix(".md").write_text(report + "\n")


if __name__ == "__main__":
    main()
