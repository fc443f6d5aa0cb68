"""Training and inference speed of cnnbuild, side by side with PyTorch and the report.

    python benchmarks/bench.py [SPEC ...] [--cifar-dir /tmp/cifar]

For each architecture (default: archs/mnist.yaml, cifar.yaml, cifar_deep.yaml and
cifar_resnet.yaml) the contenders are cnnbuild (its fast engine when numba is installed,
and then its numpy engine too); the same network in PyTorch on the CPU
(``torch_net.py``; when torch is installed) with as many threads as numpy's BLAS; and, for
the report's two networks, the report's own float64 code (``report_baseline.py``). Every
round times each contender in turn (A, B, C, A, B, C, ...), so that load on the machine hits
them alike, together with numpy's float32 GEMM (1024 x 1024); the table gives medians over
the rounds and the ratios of those medians.

- training images/s: forward, backward and optimizer step (the spec's optimizer) on one
  batch of random data, batch 128; no data loading, no evaluation.
- inference images/s: forward in inference mode, batches of 500.
- GFLOP/s: 6 x the summary's multiply-adds per image x training images/s (a multiply-add is
  2 FLOPs; training does 3 times the forward work: the forward GEMM and two backward
  GEMMs), and that as a share of the GEMM rate.
- peak memory: the peak resident set (VmHWM) of a fresh process that builds the network,
  trains a few steps and runs inference once, for each contender; it includes the
  interpreter and the libraries (torch alone is about 250 MB).
- ``--cifar-dir``: peak memory of a fresh process training cifar_deep.yaml with the real
  ``Trainer`` on all of CIFAR-10 (a few hundred steps) and evaluating the whole test set.
- start-up: wall time of ``cnnbuild --help`` and ``cnnbuild summary archs/mnist.yaml``.

Results: a markdown table on stdout, and benchmarks/results/<time>.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

# cnnbuild first: it sets OpenBLAS's thread timeout, which OpenBLAS reads when numpy loads it
import cnnbuild  # noqa: E402, F401, I001
import numpy as np  # noqa: E402

from cnnbuild.builder import load  # noqa: E402
from cnnbuild.engine import resolve as resolve_engine  # noqa: E402
from cnnbuild.engine import use as use_engine  # noqa: E402
from cnnbuild.optim import make_optimizer  # noqa: E402
from cnnbuild.summary import summarize  # noqa: E402

ARCHS = ["mnist", "cifar", "cifar_deep", "cifar_resnet"]
GEMM_SIZE = 1024
# Seconds of rest before each timed sample: idle BLAS and OpenMP threads spin for a while
# before they sleep, and would otherwise take CPU from the next contender.
PAUSE = 0.3


@dataclass
class Contender:
    """One implementation of one network: a training step and an inference pass."""

    name: str
    train_step: Callable[[], None]
    infer: Callable[[], None]
    steps: int = 1  # training steps per timed sample, set from the warm-up
    train: list[float] = field(default_factory=list)  # images/s per round
    inference: list[float] = field(default_factory=list)


def resident_mb(field: str) -> float:
    """This process's resident memory in MB: ``VmRSS`` now, ``VmHWM`` at its peak.

    (Unlike ``ru_maxrss``, which a child process inherits from its parent, ``VmHWM``
    counts this process alone.)
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} in /proc/self/status")


def torch_version() -> str | None:
    """The installed torch's version, without importing it: loaded in this process, its
    OpenMP runtime slowed cnnbuild's fast engine (PyTorch runs in a process of its own)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def blas_threads(wanted: int | None = None) -> int:
    """Threads numpy's BLAS uses, after limiting them to ``wanted`` (needs threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        if wanted is not None:
            sys.exit("--threads needs threadpoolctl: pip install threadpoolctl")
        return os.cpu_count() or 1
    if wanted is not None:
        threadpool_limits(wanted, user_api="blas")
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts, default=os.cpu_count() or 1)


def batch(shape: tuple[int, ...], classes: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((size, *shape), dtype=np.float32)
    return x, rng.integers(0, classes, size)


def spec_optimizer(net) -> dict:
    return net.spec.get("training", {}).get("optimizer", {"type": "adam"})


def cnnbuild_contender(
    spec: Path, batch_size: int, eval_size: int, engine: str = "auto"
) -> Contender:
    net = load(spec, seed=0)
    optimizer = make_optimizer(spec_optimizer(net), net.params, net.roles)
    engine = use_engine(net, engine, optimizer)
    x, labels = batch(net.input_shape, net.classes, batch_size)
    x_eval, _ = batch(net.input_shape, net.classes, eval_size, seed=1)

    def train_step() -> None:
        net.forward(x, train=True)
        net.backward_loss(labels)
        optimizer.step(net.grads)

    name = "cnnbuild" if engine == "fast" or not have_numba() else "numpy"
    return Contender(name, train_step, lambda: net.forward(x_eval, train=False))


def numba_version() -> str | None:
    try:
        import numba
    except ImportError:
        return None
    return numba.__version__


def have_numba() -> bool:
    return resolve_engine("auto") == "fast"


def torch_contender(spec: Path, batch_size: int, eval_size: int, threads: int) -> Contender:
    import torch
    from torch_net import TorchNet, torch_optimizer

    torch.set_num_threads(threads)
    net = load(spec, seed=0)
    model = TorchNet(net)
    optimizer = torch_optimizer(make_optimizer(spec_optimizer(net), net.params, net.roles), model)
    x, labels = batch(net.input_shape, net.classes, batch_size)
    x, labels = torch.from_numpy(x), torch.from_numpy(labels)
    x_eval = torch.from_numpy(batch(net.input_shape, net.classes, eval_size, seed=1)[0])

    def train_step() -> None:
        model.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            torch.softmax(model(x_eval), dim=1)

    return Contender("pytorch", train_step, infer)


def in_own_process(name: str, make: Callable[..., Contender], *args: object) -> Contender:
    """The contender ``make(*args)`` builds, run in a process of its own: with PyTorch
    loaded in cnnbuild's process, its OpenMP runtime slowed the fast engine (by 17 to 30%
    on cifar_deep). Each call is a message and its answer, timed here like any other
    contender's."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    context.Process(target=_serve, args=(make, args, theirs), daemon=True).start()

    def call(command: str) -> Callable[[], None]:
        def run() -> None:
            ours.send(command)
            ours.recv()

        return run

    return Contender(name, call("train"), call("infer"))


def _serve(make: Callable[..., Contender], args: tuple, connection) -> None:
    contender = make(*args)
    with contextlib.suppress(EOFError):  # the parent has finished
        while True:
            command = connection.recv()
            (contender.train_step if command == "train" else contender.infer)()
            connection.send(None)


def report_contender(spec: Path, batch_size: int, eval_size: int) -> Contender | None:
    from report_baseline import report_network

    net = load(spec, seed=0)
    report = report_network(net)
    if report is None:
        return None
    x, labels = batch(net.input_shape, net.classes, batch_size)
    x, x_eval = x.astype(np.float64), batch(net.input_shape, net.classes, eval_size, 1)[0]
    x_eval = x_eval.astype(np.float64)
    return Contender("report", lambda: report.train_step(x, labels), lambda: report.predict(x_eval))


def seconds(function: Callable[[], None], times: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(times):
        function()
    return time.perf_counter() - started


def gemm_gflops() -> Callable[[], float]:
    """A sampler of numpy's float32 GEMM rate (GFLOP/s) on 1024 x 1024 matrices."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32) for _ in "ab")
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    return lambda: 2 * GEMM_SIZE**3 * 5 / seconds(lambda: np.matmul(a, b, out=out), 5) / 1e9


def measure(contenders: list[Contender], args, gemm: Callable[[], float], rates: list[float]):
    """Warm up, then time the contenders in turn for ``args.rounds`` rounds."""
    for contender in contenders:
        contender.train_step()
        contender.infer()
        once = seconds(contender.train_step)
        contender.steps = max(1, round(args.sample_seconds / max(once, 1e-6)))
    for _ in range(args.rounds):
        rates.append(gemm())
        for contender in contenders:
            time.sleep(PAUSE)
            elapsed = seconds(contender.train_step, contender.steps)
            contender.train.append(contender.steps * args.batch_size / elapsed)
            contender.inference.append(args.eval_size / seconds(contender.infer))


def peak_memory(spec: Path, who: str, args) -> dict | None:
    """Peak RSS (MB) of a fresh process training ``who`` on ``spec`` for a few steps and
    running inference once, and the RSS it had once the network was built."""
    code = f"""
import sys
sys.path[:0] = {[str(ROOT), str(HERE)]!r}
import bench
bench.blas_threads({args.wanted_threads})
make = {{"cnnbuild": bench.cnnbuild_contender, "report": bench.report_contender,
         "numpy": lambda *a: bench.cnnbuild_contender(*a, "numpy"),
         "pytorch": lambda *a: bench.torch_contender(*a, {args.threads})}}[{who!r}]
contender = make(bench.Path({str(spec)!r}), {args.batch_size}, {args.eval_size})
built = bench.resident_mb("VmRSS")
for _ in range(3):
    contender.train_step()
contender.infer()
print(built, bench.resident_mb("VmHWM"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    built, peak = map(float, done.stdout.split()[-2:])
    return {"peak_mb": peak, "built_mb": built}


def full_cifar_memory(
    cifar_dir: str, steps: int, threads: int | None, engine: str = "auto"
) -> dict | None:
    """Peak RSS of the real Trainer on all of CIFAR-10 with cifar_deep.yaml: ``steps``
    training steps, then inference on the whole test set."""
    code = f"""
import sys, tempfile
sys.path[:0] = {[str(ROOT), str(HERE)]!r}
import bench
bench.blas_threads({threads})
from cnnbuild.builder import build
from cnnbuild.data import load_dataset
from cnnbuild.engine import use as use_engine
from cnnbuild.specfile import read_spec
from cnnbuild.callbacks import standard_callbacks
from cnnbuild.train import Callback, Trainer, resolve_config

class StopAfter(Callback):
    def on_batch_end(self, trainer, progress):
        if progress.batch >= {steps}:
            trainer.stop("enough steps measured")

spec = read_spec({str(ROOT / "archs" / "cifar_deep.yaml")!r})
config = resolve_config(spec.data["training"])
train = load_dataset("cifar10", "train", data_dir={cifar_dir!r}, download=False)
test = load_dataset("cifar10", "test", data_dir={cifar_dir!r}, download=False)
callbacks = [*standard_callbacks(tempfile.mkdtemp()), StopAfter()]
net = build(spec, seed=0)
trainer = Trainer(net, config, train, test, callbacks)
use_engine(net, {engine!r}, trainer.optimizer)
trainer.fit()
loss, accuracy = trainer.evaluate(test)
data_mb = (train.images.nbytes + test.images.nbytes) / 2**20
print(len(train), len(test), data_mb, bench.resident_mb("VmHWM"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    train, test, data_mb, peak = done.stdout.split()[-4:]
    return {
        "train_images": int(train),
        "test_images": int(test),
        "steps": steps,
        "uint8_data_mb": float(data_mb),
        "peak_mb": float(peak),
    }


def startup_seconds(args_list: list[str], repeats: int = 5) -> float:
    """Median wall time of ``cnnbuild ARGS`` as a user runs it: with Python's bytecode
    cache (even where PYTHONDONTWRITEBYTECODE is set), after one run to fill it."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-m", "cnnbuild", *args_list]
    subprocess.run(command, capture_output=True, cwd=ROOT, env=env)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, cwd=ROOT, env=env)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def run_arch(spec: Path, args, gemm: Callable[[], float]) -> dict:
    contenders = [cnnbuild_contender(spec, args.batch_size, args.eval_size)]
    if have_numba():  # the fast engine, and the numpy engine for reference
        contenders.append(cnnbuild_contender(spec, args.batch_size, args.eval_size, "numpy"))
    if args.torch:
        torch_args = (spec, args.batch_size, args.eval_size, args.threads)
        contenders.append(in_own_process("pytorch", torch_contender, *torch_args))
    report = report_contender(spec, args.batch_size, args.eval_size)
    if report is not None:
        contenders.append(report)
    rates: list[float] = []
    measure(contenders, args, gemm, rates)
    macs = summarize(load(spec)).macs
    result = {"spec": str(spec.relative_to(ROOT)), "macs_per_image": macs, "contenders": {}}
    for contender in contenders:
        result["contenders"][contender.name] = {
            "train_images_per_s": median(contender.train),
            "inference_images_per_s": median(contender.inference),
            "train_samples": contender.train,
            "inference_samples": contender.inference,
            "steps_per_sample": contender.steps,
            "memory": peak_memory(spec, contender.name, args),
        }
    ours = result["contenders"]["cnnbuild"]
    ours["train_gflops"] = 6 * macs * ours["train_images_per_s"] / 1e9
    result["gemm_gflops"] = median(rates)
    result["gemm_share"] = ours["train_gflops"] / result["gemm_gflops"]
    for name in ("pytorch", "report", "numpy"):
        if name in result["contenders"]:
            theirs = result["contenders"][name]
            result[f"train_vs_{name}"] = ours["train_images_per_s"] / theirs["train_images_per_s"]
            result[f"inference_vs_{name}"] = (
                ours["inference_images_per_s"] / theirs["inference_images_per_s"]
            )
    return result


def markdown(results: dict) -> str:
    def cell(value: float | None, fmt: str = "{:,.0f}") -> str:
        return "–" if value is None else fmt.format(value)

    lines = [
        "| spec | cnnbuild train img/s | numpy engine | ratio | PyTorch | ratio | report | "
        "ratio | cnnbuild infer img/s | numpy engine | PyTorch | ratio | GFLOP/s | of GEMM | "
        "peak MB | numpy engine | PyTorch |",
        "| --- " + "| ---: " * 16 + "|",
    ]
    for arch in results["archs"]:
        runs = arch["contenders"]
        ours, torch_, report = runs["cnnbuild"], runs.get("pytorch"), runs.get("report")
        reference = runs.get("numpy")  # the numpy engine, when cnnbuild is the fast one

        def get(run, key):
            return None if run is None else run[key]

        def memory(run):
            return None if run is None or run["memory"] is None else run["memory"]["peak_mb"]

        lines.append(
            "| "
            + " | ".join(
                [
                    Path(arch["spec"]).name,
                    cell(ours["train_images_per_s"]),
                    cell(get(reference, "train_images_per_s")),
                    cell(arch.get("train_vs_numpy"), "{:.2f}x"),
                    cell(get(torch_, "train_images_per_s")),
                    cell(arch.get("train_vs_pytorch"), "{:.2f}x"),
                    cell(get(report, "train_images_per_s")),
                    cell(arch.get("train_vs_report"), "{:.1f}x"),
                    cell(ours["inference_images_per_s"]),
                    cell(get(reference, "inference_images_per_s")),
                    cell(get(torch_, "inference_images_per_s")),
                    cell(arch.get("inference_vs_pytorch"), "{:.2f}x"),
                    cell(ours["train_gflops"], "{:.1f}"),
                    cell(100 * arch["gemm_share"], "{:.0f}%"),
                    cell(memory(ours)),
                    cell(memory(reference)),
                    cell(memory(torch_)),
                ]
            )
            + " |"
        )
    env = results["environment"]
    lines += [
        "",
        f"cnnbuild: the {env['engine']} engine (numba {env['numba']}); "
        f"numpy {env['numpy']} ({env['blas_threads']} BLAS threads), "
        f"torch {env['torch'] or 'not installed'} ({env['blas_threads']} threads), "
        f"{env['cpus']} CPUs; float32 GEMM {GEMM_SIZE}x{GEMM_SIZE}: "
        f"{median([a['gemm_gflops'] for a in results['archs']]):.0f} GFLOP/s (median of the "
        f"rounds); batch {env['batch_size']}, inference batch {env['eval_size']}, "
        f"{env['rounds']} rounds; load average {env['load_average_before'][0]:.1f} before, "
        f"{env['load_average_after'][0]:.1f} after.",
    ]
    full = results.get("cifar10_training_memory")
    if full:
        lines.append(
            f"Training cifar_deep.yaml on all of CIFAR-10 ({full['train_images']:,} + "
            f"{full['test_images']:,} images, {full['uint8_data_mb']:.0f} MB as uint8; "
            f"{full['steps']} steps, then the whole test set): peak RSS "
            f"{full['peak_mb']:,.0f} MB"
            + (
                f" ({results['cifar10_numpy_engine_memory']['peak_mb']:,.0f} MB on the numpy "
                "engine)."
                if results.get("cifar10_numpy_engine_memory")
                else "."
            )
        )
    start = results["startup_seconds"]
    lines.append(
        f"Start-up: `cnnbuild --help` {start['help']:.2f} s, "
        f"`cnnbuild summary archs/mnist.yaml` {start['summary']:.2f} s."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="*", type=Path, help="architecture files")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument(
        "--sample-seconds", type=float, default=1.0, help="training time per sample (default 1)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="training batch (128)")
    parser.add_argument("--eval-size", type=int, default=500, help="inference batch (500)")
    parser.add_argument("--cifar-dir", help="folder holding cifar-10-batches-py/")
    parser.add_argument("--cifar-steps", type=int, default=200, help="steps on CIFAR-10 (200)")
    parser.add_argument(
        "--threads", type=int, help="BLAS and torch threads (default: what numpy uses)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = parser.parse_args()
    specs = args.specs or [ROOT / "archs" / f"{name}.yaml" for name in ARCHS]
    args.wanted_threads = args.threads  # None: what numpy uses
    args.threads = blas_threads(args.threads)
    torch = torch_version()
    args.torch = torch is not None
    gemm = gemm_gflops()
    results = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch,
            "cpus": os.cpu_count(),
            "blas_threads": args.threads,
            "engine": resolve_engine("auto"),
            "numba": numba_version(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "batch_size": args.batch_size,
            "eval_size": args.eval_size,
            "rounds": args.rounds,
            "load_average_before": os.getloadavg(),
        },
        "archs": [],
    }
    for spec in specs:
        print(f"measuring {spec} ...", file=sys.stderr, flush=True)
        results["archs"].append(run_arch(spec.resolve(), args, gemm))
    if args.cifar_dir:
        print("training cifar_deep on all of CIFAR-10 ...", file=sys.stderr, flush=True)
        results["cifar10_training_memory"] = full_cifar_memory(
            args.cifar_dir, args.cifar_steps, args.wanted_threads
        )
        if have_numba():
            results["cifar10_numpy_engine_memory"] = full_cifar_memory(
                args.cifar_dir, args.cifar_steps, args.wanted_threads, "numpy"
            )
    results["environment"]["load_average_after"] = os.getloadavg()
    results["startup_seconds"] = {
        "help": startup_seconds(["--help"]),
        "summary": startup_seconds(["summary", "archs/mnist.yaml"]),
    }
    table = markdown(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / time.strftime("%Y-%m-%d-%H%M%S")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {stem}.json and {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
