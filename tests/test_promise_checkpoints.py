"""Promise 3: hostile or damaged checkpoints are refused on every path a user takes
(`cnnbuild evaluate`, `cnnbuild predict`, ``load_trained``, ``Trainer.restore``), nothing in
them runs, and no file loads with contents other than those saved."""

from __future__ import annotations

import io
import json
import pickle
import random
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from promises import count, record
from test_train import StopAfter

import cnnbuild
from cnnbuild.callbacks import standard_callbacks
from cnnbuild.checkpoint import META_KEY, VERSION_KEY, load_checkpoint
from cnnbuild.cli import main
from cnnbuild.data import Dataset
from cnnbuild.errors import CnnbuildError
from cnnbuild.inference import load_trained
from cnnbuild.train import Trainer, resolve_config

SPEC = """\
name: tiny_mnist
input: [1, 28, 28]
classes: 10
layers:
  - {name: conv1, type: conv, filters: 2, kernel: 3, stride: 2}
  - {type: batchnorm}
  - {type: relu}
  - {type: maxpool, size: 2}
  - {type: dropout, rate: 0.2}
  - {type: dense, units: 10}
  - {type: softmax}
training: {dataset: mnist, batch_size: 8, optimizer: {type: adam, lr: 0.01}, seed: 3}
"""


def digits(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    return Dataset("mnist", images, rng.integers(0, 10, n), tuple(map(str, range(10))))


TRAIN, TEST = digits(24, 0), digits(8, 1)


def trainer(run_dir: Path, callbacks=()) -> Trainer:
    net = cnnbuild.loads(SPEC, seed=0)
    config = resolve_config(net.spec["training"], epochs=2)
    return Trainer(net, config, TRAIN, TEST, [*standard_callbacks(run_dir), *callbacks])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A checkpoint saved mid-epoch (epoch 1 done, one step into epoch 2)."""
    run_dir = tmp_path_factory.mktemp("run")
    trainer(run_dir, [StopAfter(4)]).fit()
    return run_dir / "last.npz"


def entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def savez(path: Path, arrays: dict[str, np.ndarray], allow_pickle: bool = False) -> Path:
    """Write arrays as .npz members, as numpy does, optionally with pickled object arrays."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=allow_pickle)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


def same_contents(a: Path, b: Path) -> bool:
    arrays_a, meta_a = load_checkpoint(a)
    arrays_b, meta_b = load_checkpoint(b)
    return json.dumps(meta_a, sort_keys=True) == json.dumps(meta_b, sort_keys=True) and (
        arrays_a.keys() == arrays_b.keys()
        and all(
            arrays_a[k].dtype == arrays_b[k].dtype
            and arrays_a[k].tobytes() == arrays_b[k].tobytes()
            for k in arrays_a
        )
    )


class Tally:
    """Runs files through every loading path and counts what happened."""

    def __init__(self, saved: Path, tmp_path: Path, cli: bool) -> None:
        self.saved, self.tmp_path, self.cli = saved, tmp_path, cli
        self.tried, self.loads, self.tracebacks, self.accepted, self.harmless = 0, 0, 0, 0, 0
        self.failures: list[str] = []
        self.trainer: Trainer | None = None

    def paths(self) -> dict[str, Callable[[Path], object]]:
        paths = {"load_trained": load_trained, "Trainer.restore": self.restore}
        if self.cli:
            paths["evaluate"] = lambda p: self.invoke(["evaluate", str(p)])
            paths["predict"] = lambda p: self.invoke(["predict", str(p), "--index", "0"])
        return paths

    def restore(self, path: Path) -> None:
        """Trainer.restore into one trainer, made again only after it accepted a file."""
        if self.trainer is None:
            self.trainer = trainer(self.tmp_path / "restored")
        self.trainer.restore(path)
        self.trainer = None

    def invoke(self, args: list[str]) -> None:
        result = CliRunner().invoke(main, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        if result.exit_code != 0:
            raise CnnbuildError(result.output)

    def run(self, name: str, path: Path, harmless_if_identical: bool = False, only=None) -> None:
        """``path`` must be refused by every path (or by those in ``only``, which are the ones
        that read what is damaged), unless its contents are those saved and that is allowed."""
        self.tried += 1
        identical = harmless_if_identical and self.identical(path)
        for where, load in self.paths().items():
            if only is not None and where not in only:
                continue
            self.loads += 1
            try:
                load(path)
            except CnnbuildError:
                continue
            except Exception as error:  # a traceback for the user
                self.tracebacks += 1
                self.failures.append(f"{name} via {where}: {type(error).__name__}: {error}")
                continue
            if identical:
                self.harmless += 1
            else:
                self.accepted += 1
                self.failures.append(f"{name} via {where}: accepted")

    def identical(self, path: Path) -> bool:
        try:
            return same_contents(path, self.saved)
        except CnnbuildError:
            return False

    def figure(self) -> str:
        harmless = f", {self.harmless} loads of unchanged contents" if self.harmless else ""
        return (
            f"{self.tried:,} files, {self.loads:,} loads: tracebacks {self.tracebacks}, "
            f"accepted {self.accepted}{harmless}"
        )


# --- files that would run code ----------------------------------------------------------------


class Trap:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def hostile_files(saved: Path, folder: Path, marker: Path) -> dict[str, Path]:
    good = entries(saved)
    trap = np.array([Trap(marker)], dtype=object)
    files = {
        "object-array-weights": savez(
            folder / "a.npz", {**good, "params/conv1.W": trap}, allow_pickle=True
        ),
        "object-array-meta": savez(folder / "b.npz", {**good, META_KEY: trap}, allow_pickle=True),
        "object-array-extra": savez(folder / "c.npz", {**good, "x": trap}, allow_pickle=True),
    }
    files["pickle-renamed"] = folder / "d.npz"
    files["pickle-renamed"].write_bytes(pickle.dumps({"params/conv1.W": Trap(marker)}))
    files["object-npy-renamed"] = folder / "e.npz"
    with open(files["object-npy-renamed"], "wb") as out:
        np.save(out, trap, allow_pickle=True)
    files["pickle-as-member"] = folder / "f.npz"
    savez(files["pickle-as-member"], good)
    with zipfile.ZipFile(files["pickle-as-member"], "a") as archive:
        archive.writestr("params/evil.W.npy", pickle.dumps(Trap(marker)))
    return files


def test_files_that_would_run_code_are_refused_and_nothing_runs(saved, tmp_path):
    marker = tmp_path / "marker"
    files = hostile_files(saved, tmp_path, marker)
    tally = Tally(saved, tmp_path, cli=True)
    for name, path in files.items():
        tally.run(name, path)
    record(3, "files that would run code if unpickled", f"{tally.figure()}, marker never created")
    assert not marker.exists()
    assert not tally.failures, "\n".join(tally.failures)
    # Control: the trap is real, so the refusals above count.
    with np.load(files["object-array-weights"], allow_pickle=True) as archive:
        archive["params/conv1.W"]
    assert marker.exists()


# --- damaged files ---------------------------------------------------------------------------


def npy_member(header_shape: tuple, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": header_shape}
    )
    return buffer.getvalue() + payload


RESTORE = {"Trainer.restore"}  # what only resuming reads: optimizer state, the run's state
MODEL = {"load_trained", "evaluate", "predict"}  # what only the model paths read: the spec


def rewritten(saved: Path, folder: Path) -> dict[str, tuple[Path, set[str] | None]]:
    """Well-formed archives whose contents are wrong: shapes, dtypes, keys, metadata, spec;
    each with the paths that read the damaged part (None: all of them)."""
    good = entries(saved)
    meta = json.loads(good[META_KEY].item())
    cases: dict[str, tuple[dict[str, np.ndarray], set[str] | None]] = {}
    for key, value in good.items():
        if key in (META_KEY, VERSION_KEY):
            continue
        only = RESTORE if key.startswith(("optimizer/", "run/")) else None
        cases[f"missing {key}"] = {k: v for k, v in good.items() if k != key}, only
        cases[f"wrong shape {key}"] = {**good, key: np.zeros((*value.shape, 2), value.dtype)}, only
        wrong = np.zeros(value.shape, np.complex64 if value.dtype.kind != "c" else np.int8)
        cases[f"wrong dtype {key}"] = {**good, key: wrong}, only
        if value.dtype.kind == "f":
            nan = np.full(value.shape, np.nan, value.dtype)
            cases[f"non-finite {key}"] = {**good, key: nan}, only
    for extra, only in (
        ("params/conv9.W", None),
        ("buffers/batchnorm1.extra", None),
        ("optimizer/adam/m/ghost.W", RESTORE),
    ):
        cases[f"extra {extra}"] = {**good, extra: np.zeros(3, np.float32)}, only
    order = np.zeros(len(TRAIN), np.int64)
    cases["order not a permutation"] = {**good, "run/order": order}, RESTORE
    cases["order out of range"] = {**good, "run/order": np.arange(len(TRAIN)) + 100}, RESTORE
    cases["normalization std zero"] = {**good, "normalization/std": np.zeros(1, np.float32)}, None

    def with_meta(**changes) -> dict[str, np.ndarray]:
        return {**good, META_KEY: np.array(json.dumps({**meta, **changes}))}

    run_keys = ("epoch", "step", "batch", "epoch_sums", "history", "best_accuracy", "rng")
    for key in ("spec", *run_keys):
        without = {k: v for k, v in meta.items() if k != key}
        cases[f"meta without {key}"] = (
            {**good, META_KEY: np.array(json.dumps(without))},
            MODEL if key == "spec" else RESTORE,
        )
    bad_values = {
        "epoch": ["1", -1, 1.5, None, 99],
        "step": ["9", -5, None],
        "batch": [10**9, -1, "0"],
        "epoch_sums": [[1, 2], "sums", None],
        "history": ["h", [1, 2], [{"epoch": 1}]],
        "best_accuracy": ["high", None],
        "rng": [{}, {"net": {"bit_generator": "MT19937"}, "data": None}, "seed"],
        "spec": ["mnist", {}, {**meta["spec"], "layers": []}],
    }
    for key, values in bad_values.items():
        for value in values:
            only = MODEL if key == "spec" else RESTORE
            cases[f"meta {key}={json.dumps(value)[:30]}"] = with_meta(**{key: value}), only
    spec = meta["spec"]
    layers = spec["layers"]
    mismatches = {
        "more filters": [{**layers[0], "filters": 3}, *layers[1:]],
        "fewer units": [*layers[:5], {**layers[5], "units": 10, "bias": False}, layers[6]],
        "renamed conv": [{**layers[0], "name": "first"}, *layers[1:]],
        "no batch norm": [layers[0], *layers[2:]],
    }
    for name, changed in mismatches.items():
        cases[f"spec with {name}"] = with_meta(spec={**spec, "layers": changed}), MODEL
    deep = np.array('{"spec": ' + "[" * 100_000 + "]" * 100_000 + "}")
    cases["deeply nested metadata"] = {**good, META_KEY: deep}, None
    files = {
        name: (savez(folder / f"w{i}.npz", arrays), only)
        for i, (name, (arrays, only)) in enumerate(cases.items())
    }
    huge = folder / "huge.npz"
    savez(huge, good)
    with zipfile.ZipFile(huge, "a") as archive:
        archive.writestr("params/huge.npy", npy_member((2**40,), b"\0" * 16))
    files["header claiming 4 TiB"] = huge, None
    bomb = folder / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in good.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
        archive.writestr("params/bomb.npy", npy_member((2**24,), bytes(2**26)))
    files["compressed member inflating to 64 MiB"] = bomb, None
    return files


@pytest.mark.slow
def test_checkpoints_with_wrong_contents_are_refused(saved, tmp_path):
    tally = Tally(saved, tmp_path, cli=True)
    for name, (path, only) in rewritten(saved, tmp_path).items():
        tally.run(name, path, only=only)
    record(3, "wrong shapes, dtypes, keys, metadata, spec", tally.figure())
    assert not tally.failures, "\n".join(tally.failures)


@pytest.mark.slow
def test_truncated_and_bit_flipped_checkpoints_are_refused(saved, tmp_path):
    data = saved.read_bytes()
    rng = random.Random(3)
    cuts = sorted({int(i * len(data) / count(200, 2000)) for i in range(count(200, 2000))})
    tally = Tally(saved, tmp_path, cli=False)
    cli = Tally(saved, tmp_path, cli=True)
    for i, cut in enumerate(cuts):
        path = tmp_path / "cut.npz"
        path.write_bytes(data[:cut])
        (cli if i % 10 == 0 else tally).run(f"cut at {cut} of {len(data)}", path)
    record(3, "truncations", tally.figure())
    record(3, "truncations (through the CLI too)", cli.figure())
    flips = Tally(saved, tmp_path, cli=False)
    for _ in range(count(300, 3000)):
        damaged = bytearray(data)
        position = rng.randrange(len(data))
        damaged[position] ^= 1 << rng.randrange(8)
        path = tmp_path / "flipped.npz"
        path.write_bytes(bytes(damaged))
        flips.run(f"bit flip at byte {position}", path, harmless_if_identical=True)
    record(3, "single bit flips", flips.figure())
    assert not tally.failures + cli.failures, "\n".join((tally.failures + cli.failures)[:20])
    assert not flips.failures, "\n".join(flips.failures[:20])


@pytest.mark.slow
def test_random_byte_files_are_refused(saved, tmp_path):
    rng = np.random.default_rng(5)
    data = saved.read_bytes()
    tally = Tally(saved, tmp_path, cli=False)
    for i in range(count(1000, 10_000)):
        kind = i % 4
        size = int(rng.integers(0, 4096))
        noise = rng.bytes(size)
        if kind == 1:
            noise = b"PK\x03\x04" + noise
        elif kind == 2:
            noise = b"\x93NUMPY" + noise
        elif kind == 3:
            start = int(rng.integers(0, len(data)))
            noise = data[:start] + noise + data[start + size :]
        path = tmp_path / "noise.npz"
        path.write_bytes(noise)
        tally.run(f"random file {i}", path)
    record(3, "random-byte files", tally.figure())
    assert not tally.failures, "\n".join(tally.failures[:20])


def test_a_compressed_bomb_is_refused_before_it_inflates(saved, tmp_path):
    path = rewritten(saved, tmp_path)["compressed member inflating to 64 MiB"][0]
    tracemalloc.start()
    try:
        with pytest.raises(CnnbuildError, match="compressed"):
            load_trained(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    record(3, "zip bomb (64 MiB member)", f"refused, peak {peak / 2**10:.0f} KiB")
    assert peak < 8 * 2**20
