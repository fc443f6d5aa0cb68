"""Checkpoints: numeric arrays plus JSON metadata in one .npz, without pickle.

The file: every array under its own key, plus two reserved entries:
``__format_version__`` (0-d int64) and ``__meta__`` (0-d unicode string holding the
metadata as JSON; Python ints of any size, such as a PCG64 state, round-trip exactly).

A run checkpoint (``last.npz``, ``best.npz``; format version 1, as cnnbuild 0.1.0 wrote it)
holds these arrays::

    params/<layer>.<param>                   params/conv1.W, params/bn1.gamma
    buffers/<layer>.<buffer>                 buffers/bn1.running_mean
    optimizer/<type>/t                       the optimizer's step count (0-d int64)
    optimizer/<type>/<slot>/<layer>.<param>  optimizer/adam/m/conv1.W
    normalization/mean, normalization/std    (C,) float32, on the 0..1 pixel scale
    run/order                                the current epoch's shuffled indices, if begun

and this metadata: ``spec`` (the architecture as parsed), ``config`` (the resolved
``training:`` section), ``class_names``, ``epoch``, ``step`` and ``batch`` (counts done),
``epoch_sums`` (loss sum, correct, seen, seconds of the current epoch), ``history`` (one
record of HISTORY_COLUMNS an epoch, followed by VALIDATION_COLUMNS in a run with a
validation split), ``best_accuracy`` (of the column best.npz is chosen on) and ``rng`` (the
bit-generator states of the ``net`` and ``data`` generators); since 0.2, optionally
``overrides`` (the ``--set PATH=VALUE`` texts that made ``spec``) and ``stop_reason`` (why
the run stopped before its last epoch, e.g. early stopping).

Saving is atomic (``files.atomic_write``): a crash leaves the previous checkpoint whole. Loading
never unpickles and turns every kind of damage into a CheckpointError naming the file.
"""

from __future__ import annotations

import json
import os
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnbuild.data.normalization import Normalization
from cnnbuild.errors import CnnbuildError
from cnnbuild.files import atomic_write

FORMAT_VERSION = 1
META_KEY = "__meta__"
VERSION_KEY = "__format_version__"
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
LISTED_PROBLEMS = 10
# What numpy and zipfile raise on damaged archives: bad headers and sizes (ValueError,
# EOFError, BadZipFile), a flipped "encrypted" flag (RuntimeError), a flipped compression
# method (NotImplementedError, zlib.error), I/O (OSError), an array header claiming more
# memory than there is (MemoryError) or one its parser cannot read (tokenize.TokenError).
READ_ERRORS = (
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    OSError,
    MemoryError,
    tokenize.TokenError,
)
# The format's own entries, and np.savez's argument names, which cannot be array keys.
RESERVED_KEYS = (META_KEY, VERSION_KEY, "file", "allow_pickle")
PARAMS, BUFFERS, OPTIMIZER = "params/", "buffers/", "optimizer/"
MEAN, STD, ORDER = "normalization/mean", "normalization/std", "run/order"
HISTORY_COLUMNS = ["epoch", "loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"]
VALIDATION_COLUMNS = ["val_loss", "val_accuracy"]  # after HISTORY_COLUMNS, with a validation split


class CheckpointError(CnnbuildError):
    """A checkpoint cannot be written, read or does not match what it is loaded into."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _entries(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Everything save_checkpoint writes, checked before any file is touched."""
    entries = {}
    for key, value in arrays.items():
        if key in RESERVED_KEYS:
            raise CheckpointError(f"array key {key!r} is reserved by the checkpoint format")
        value = np.asarray(value)
        if value.dtype.kind not in NUMERIC_KINDS:
            raise CheckpointError(
                f"array {key!r} has dtype {value.dtype}; checkpoints hold numeric arrays only"
            )
        entries[key] = value
    try:
        text = json.dumps(meta, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    entries[META_KEY] = np.array(text)
    entries[VERSION_KEY] = np.array(FORMAT_VERSION, dtype=np.int64)
    return entries


def save_checkpoint(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write ``arrays`` (numeric) and ``meta`` (JSON-serialisable) to ``path`` atomically.

    Raises CheckpointError if an array is not numeric, ``meta`` is not serialisable or the
    file cannot be written; the previous file at ``path``, if any, is then left as it was.
    """
    path = Path(path)
    entries = _entries(arrays, meta)
    try:
        atomic_write(path, lambda file: np.savez(file, allow_pickle=False, **entries))
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from None


def _read_entries(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the archive at ``path``, read with pickling disabled."""
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    if magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: is a single .npy array, not a checkpoint (.npz)")
    if not magic.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path}: is not a checkpoint: not an .npz (zip) archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise CheckpointError(
            f"{path}: damaged or truncated archive ({exc}); save the checkpoint again"
        ) from None
    entries = {}
    with archive:
        for info in archive.zip.infolist():
            # save_checkpoint stores entries uncompressed; a compressed one could inflate to
            # any size (a zip bomb), so it is refused before it is read.
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{path}: entry {info.filename!r} is compressed; cnnbuild writes "
                    "checkpoints uncompressed, so this file was not written by it"
                )
        for key in archive.files:
            try:
                value = archive[key]
            except READ_ERRORS as exc:
                raise CheckpointError(f"{path}: entry {key!r} cannot be read: {exc}") from None
            if not isinstance(value, np.ndarray):
                raise CheckpointError(f"{path}: entry {key!r} is not a numpy array")
            entries[key] = value
    return entries


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint: ``(arrays, meta)``.

    Never unpickles. Raises CheckpointError naming the file and the problem for anything
    else: not an archive, damaged or truncated, object or other non-numeric arrays,
    missing or invalid metadata, an unknown format version.
    """
    path = Path(path)
    entries = _read_entries(path)

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}")

    version = entries.pop(VERSION_KEY, None)
    if version is None:
        raise fail(f"has no {VERSION_KEY!r} entry; it was not written by cnnbuild")
    if version.shape != () or version.dtype.kind not in "iu":
        raise fail(f"{VERSION_KEY!r} should be a single integer, found {version!r}")
    version = int(version)
    if version > FORMAT_VERSION:
        raise fail(
            f"format version {version} is newer than this cnnbuild reads "
            f"({FORMAT_VERSION}); upgrade cnnbuild"
        )
    if version != FORMAT_VERSION:
        raise fail(f"unknown format version {version}; this cnnbuild reads {FORMAT_VERSION}")
    meta = entries.pop(META_KEY, None)
    if meta is None:
        raise fail(f"has no {META_KEY!r} entry (the metadata)")
    if meta.shape != () or meta.dtype.kind != "U":
        raise fail(f"{META_KEY!r} should be a single string, found dtype {meta.dtype}")
    try:
        meta = json.loads(meta.item())
    except (ValueError, RecursionError) as exc:
        raise fail(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise fail(f"metadata should be a JSON object, found {type(meta).__name__}")
    for key, value in entries.items():
        if value.dtype.kind not in NUMERIC_KINDS:
            raise fail(f"entry {key!r} has dtype {value.dtype}; checkpoints hold numeric arrays")
    return entries, meta


def _listed(problems: list[str]) -> str:
    shown = problems[:LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    lines = [f"  {problem}" for problem in shown]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def load_into(
    target: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], what: str
) -> None:
    """Copy ``arrays`` into the existing arrays of ``target`` in place, strictly.

    Keys must match exactly and shapes must agree. A dtype differing from the target's
    is cast only between real float types, and float values must be finite. ``what`` names
    the target in messages ("the network"). On any mismatch, raises CheckpointError listing
    each key (with both shapes) and copies nothing.
    """
    check_into(target, arrays, what)
    for key, have in target.items():
        have[...] = arrays[key]


def check_into(
    target: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], what: str
) -> None:
    """The checks of ``load_into`` without the copy: CheckpointError listing each key."""
    problems = [f"{key}: missing from the checkpoint" for key in target if key not in arrays]
    problems += [f"{key}: in the checkpoint only" for key in arrays if key not in target]
    for key in target.keys() & arrays.keys():
        have, given = target[key], np.asarray(arrays[key])
        if given.shape != have.shape:
            problems.append(f"{key}: checkpoint has {given.shape}, {what} has {have.shape}")
        elif given.dtype != have.dtype and not (given.dtype.kind == "f" and have.dtype.kind == "f"):
            problems.append(f"{key}: checkpoint has dtype {given.dtype}, {what} has {have.dtype}")
        elif given.dtype.kind == "f" and not np.isfinite(given).all():
            problems.append(f"{key}: checkpoint holds NaN or infinite values")
    if problems:
        raise CheckpointError(f"checkpoint and {what} differ:\n{_listed(sorted(problems))}")


# --- run checkpoints -------------------------------------------------------------------------


@dataclass
class RunState:
    """Where a run stands, beyond weights and optimizer state."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in the current epoch
    order: np.ndarray | None = None  # the current epoch's shuffled indices
    loss_sum: float = 0.0  # sums over the current epoch
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    best_accuracy: float = -1.0
    stop_reason: str | None = None  # why the run ended before its last epoch, if it did

    def start_epoch(self, order: np.ndarray) -> None:
        self.order, self.batch = order, 0
        self.loss_sum, self.correct, self.seen, self.seconds = 0.0, 0, 0, 0.0


@dataclass
class RunCheckpoint:
    """Everything ``last.npz`` and ``best.npz`` hold: enough to predict, or to resume."""

    spec: dict[str, Any]
    config: dict[str, Any]
    class_names: list[str]
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]  # Optimizer.state_dict()
    normalization: Normalization
    state: RunState
    rng: dict[str, Any]  # {"net": state, "data": state} of the two bit generators
    overrides: list[str] = field(default_factory=list)  # --set PATH=VALUE that made spec


def save_run(path: str | os.PathLike[str], run: RunCheckpoint) -> None:
    """Write a run checkpoint to ``path`` atomically (see the module docstring)."""
    state = run.state
    arrays = {PARAMS + key: value for key, value in run.params.items()}
    arrays |= {BUFFERS + key: value for key, value in run.buffers.items()}
    arrays |= {OPTIMIZER + key: value for key, value in run.optimizer.items()}
    arrays[MEAN], arrays[STD] = run.normalization.mean, run.normalization.std
    if state.order is not None:
        arrays[ORDER] = state.order
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(
                f"not saving {path}: {key} holds NaN or infinite values, and a checkpoint must "
                "load back"
            )
    meta = {
        "spec": run.spec,
        "config": run.config,
        "class_names": run.class_names,
        "epoch": state.epoch,
        "step": state.step,
        "batch": state.batch,
        "epoch_sums": [state.loss_sum, state.correct, state.seen, state.seconds],
        "history": state.history,
        "best_accuracy": state.best_accuracy,
        "rng": run.rng,
        "overrides": list(run.overrides),
        "stop_reason": state.stop_reason,
    }
    save_checkpoint(path, arrays, meta)


def read_run(path: str | os.PathLike[str]) -> RunCheckpoint:
    """Read and check a run checkpoint; CheckpointError says what is wrong with it.

    Whether it fits a network, an optimizer and a dataset is checked where they are known:
    ``load_network_state``, ``Optimizer.load_state_dict`` and ``check_resumable``.
    """
    arrays, meta = load_checkpoint(path)
    if not isinstance(meta.get("spec"), dict):
        raise CheckpointError(f"{path}: holds no architecture — not a cnnbuild run checkpoint")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise _damaged(path, "'config' should be the training settings")
    names = meta.get("class_names")
    return RunCheckpoint(
        spec=meta["spec"],
        config=config,
        class_names=[str(n) for n in names] if isinstance(names, list) else [],
        params=_section(arrays, PARAMS),
        buffers=_section(arrays, BUFFERS),
        optimizer=_section(arrays, OPTIMIZER),
        normalization=_normalization(arrays, path),
        state=_run_state(meta, arrays.get(ORDER), path),
        rng=meta.get("rng"),
        overrides=[str(text) for text in meta.get("overrides") or []],
    )


def check_fits(net: Any, run: RunCheckpoint, path: str | os.PathLike[str]) -> None:
    """Check that a checkpoint's weights and buffers fit ``net`` as planned, before its
    weights are allocated: the same checks as ``load_network_state``, on declared shapes."""
    for saved, declared in ((run.params, "parameter_shapes"), (run.buffers, "buffer_shapes")):
        target = {
            f"{node.name}.{key}": np.broadcast_to(np.float32(0), shape)  # no memory
            for node in net.nodes
            for key, shape in getattr(node.layer, declared)(node.input_shapes).items()
        }
        try:
            check_into(target, saved, "the network")
        except CheckpointError as error:
            raise CheckpointError(f"{path}: does not fit the architecture: {error}") from None


def load_network_state(net: Any, run: RunCheckpoint, path: str | os.PathLike[str]) -> None:
    """Copy a checkpoint's weights and buffers into ``net``, naming any mismatching key."""
    try:
        load_into(net.params, run.params, "the network")
        load_into(net.buffers, run.buffers, "the network")
    except CheckpointError as error:
        raise CheckpointError(f"{path}: does not fit the architecture: {error}") from None
    channels = net.input_shape[0]
    for name in ("mean", "std"):
        if getattr(run.normalization, name).shape not in ((1,), (channels,)):
            raise CheckpointError(
                f"{path}: normalization/{name} should hold 1 or {channels} numbers, one per "
                "input channel"
            )


def check_resumable(
    state: RunState, train_size: int, steps_per_epoch: int, path: str | os.PathLike[str]
) -> None:
    """Check that a saved run state fits the training set it is to continue on."""
    if state.batch > steps_per_epoch or (state.order is None and state.batch > 0):
        raise _damaged(
            path, f"stopped at batch {state.batch} of {steps_per_epoch} without the epoch's order"
        )
    order = state.order
    if order is not None and not (
        order.dtype.kind in "iu"
        and order.shape == (train_size,)
        and np.array_equal(np.sort(order), np.arange(train_size))
    ):
        raise _damaged(path, f"'run/order' should order the {train_size} training images")


def _damaged(path: str | os.PathLike[str], what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {what} — the file is damaged or was not written by `cnnbuild train`"
    )


def _section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def _normalization(arrays: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Normalization:
    """The saved input normalisation: finite means and positive stds."""
    try:
        mean, std = arrays[MEAN], arrays[STD]
    except KeyError as missing:
        raise CheckpointError(
            f"{path}: no {missing} entry — not a cnnbuild run checkpoint"
        ) from None
    for name, values in (("mean", mean), ("std", std)):
        if not (values.dtype.kind == "f" and values.ndim == 1 and np.isfinite(values).all()):
            raise CheckpointError(
                f"{path}: normalization/{name} should hold finite numbers, one per input "
                f"channel, found {values.dtype} {values.shape}"
            )
    if (std <= 0).any():
        raise CheckpointError(f"{path}: normalization/std must be positive, found {std}")
    return Normalization(mean.astype(np.float32), std.astype(np.float32))


def _run_state(
    meta: dict[str, Any], order: np.ndarray | None, path: str | os.PathLike[str]
) -> RunState:
    """The run state saved by ``save_run``, checked."""
    counts = [meta.get(key) for key in ("epoch", "step", "batch")]
    if not all(type(value) is int and value >= 0 for value in counts):
        raise _damaged(path, f"'epoch', 'step' and 'batch' should be counts, found {counts}")
    epoch, step, batch = counts
    history, sums, best = meta.get("history"), meta.get("epoch_sums"), meta.get("best_accuracy")
    columns = [HISTORY_COLUMNS, [*HISTORY_COLUMNS, *VALIDATION_COLUMNS]]
    if not (
        isinstance(history, list)
        and len(history) == epoch
        and all(isinstance(row, dict) for row in history)
        and any(all(list(row) == names for row in history) for names in columns)
        and all(_is_number(value) for row in history for value in row.values())
    ):
        raise _damaged(
            path,
            f"'history' should hold one record of {', '.join(HISTORY_COLUMNS)} (and "
            f"{', '.join(VALIDATION_COLUMNS)} with a validation split) an epoch",
        )
    reason = meta.get("stop_reason")
    if reason is not None and not isinstance(reason, str):
        raise _damaged(path, "'stop_reason' should be text or null")
    if not (isinstance(sums, list) and len(sums) == 4 and all(map(_is_number, [*sums, best]))):
        raise _damaged(path, "'epoch_sums' should be 4 numbers and 'best_accuracy' a number")
    try:
        for key in ("net", "data"):
            np.random.default_rng().bit_generator.state = meta["rng"][key]
    except (KeyError, TypeError, ValueError):
        raise _damaged(
            path, "'rng' should hold the states of the 'net' and 'data' generators"
        ) from None
    loss_sum, correct, seen, seconds = sums
    return RunState(
        epoch, step, batch, order, loss_sum, int(correct), int(seen), seconds, history, best, reason
    )


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)
