"""Checkpoints: exact round-trips, atomic saves, and refusal of every damaged or foreign file."""

import contextlib
import json
import os
import pickle

import numpy as np
import pytest

from cnnbuild import checkpoint
from cnnbuild.checkpoint import (
    FORMAT_VERSION,
    META_KEY,
    VERSION_KEY,
    CheckpointError,
    load_checkpoint,
    load_into,
    save_checkpoint,
)


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "conv1.W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv1.b": np.zeros(4, np.float32),
        "bn1.running_var": rng.random(4),
        "adam/t": np.array(7, np.int64),
        "mask.flags": np.array([True, False]),
        "pixels.raw": np.arange(6, dtype=np.uint8).reshape(2, 3),
    }


SAMPLE_META = {
    "arch": {"name": "lenet", "layers": [{"name": "conv1", "type": "conv", "filters": 4}]},
    "epoch": 3,
    "history": {"loss": [2.3, 1.1, float("nan")]},
    "note": "résumé ✓",
    "huge": 2**200 + 1,
}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "run.npz"
    save_checkpoint(path, sample_arrays(), SAMPLE_META)
    return path


def test_round_trip_is_exact(saved):
    arrays, meta = load_checkpoint(saved)
    expected = sample_arrays()
    assert arrays.keys() == expected.keys()
    for key, value in expected.items():
        assert arrays[key].dtype == value.dtype and arrays[key].shape == value.shape
        assert arrays[key].tobytes() == value.tobytes(), key
    assert meta["huge"] == 2**200 + 1
    assert meta["note"] == "résumé ✓"
    assert meta["arch"] == SAMPLE_META["arch"]
    assert meta["history"]["loss"][:2] == [2.3, 1.1] and np.isnan(meta["history"]["loss"][2])


def test_stored_without_objects(saved):
    """The archive is readable by plain numpy without pickle; meta is a plain string."""
    with np.load(saved, allow_pickle=False) as archive:
        meta = archive[META_KEY]
        assert meta.shape == () and meta.dtype.kind == "U"
        assert json.loads(meta.item())["epoch"] == 3
        assert archive[VERSION_KEY].dtype == np.int64 and int(archive[VERSION_KEY]) == 1
        assert all(archive[key].dtype != object for key in archive.files)


def test_generator_state_round_trips(tmp_path):
    rng = np.random.default_rng(12345)
    rng.standard_normal(17)
    path = tmp_path / "rng.npz"
    save_checkpoint(path, {}, {"rng": rng.bit_generator.state})
    _, meta = load_checkpoint(path)
    assert meta["rng"] == rng.bit_generator.state
    restored = np.random.Generator(np.random.PCG64())
    restored.bit_generator.state = meta["rng"]
    np.testing.assert_array_equal(restored.random(10), rng.random(10))
    assert restored.integers(0, 2**62) == rng.integers(0, 2**62)


def test_numpy_scalars_in_meta_become_plain_numbers(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {}, {"loss": np.float32(0.5), "step": np.int64(9), "ok": np.bool_(1)})
    assert load_checkpoint(path)[1] == {"loss": 0.5, "step": 9, "ok": True}


@pytest.mark.parametrize(
    ("arrays", "meta", "message"),
    [
        ({}, {"f": object()}, "metadata is not JSON-serialisable"),
        ({}, {"a": np.zeros(2)}, "metadata is not JSON-serialisable: ndarray"),
        ({"x.W": np.array([object()])}, {}, "array 'x.W' has dtype object"),
        ({"x.name": np.array(["a"])}, {}, "array 'x.name' has dtype <U1"),
        ({META_KEY: np.zeros(1)}, {}, "'__meta__' is reserved"),
        ({"file": np.zeros(1)}, {}, "'file' is reserved"),
    ],
)
def test_save_refuses_what_cannot_be_stored(saved, arrays, meta, message):
    before = saved.read_bytes()
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(saved, arrays, meta)
    assert saved.read_bytes() == before
    assert sorted(os.listdir(saved.parent)) == [saved.name]


def broken_savez(file, **entries):
    file.write(b"PK\x03\x04 half an archive")
    raise OSError(28, "No space left on device")


def test_failed_save_leaves_previous_checkpoint_and_no_temp(saved, monkeypatch):
    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*No space left"):
        save_checkpoint(saved, {"conv1.W": np.ones(2, np.float32)}, {"epoch": 4})
    monkeypatch.undo()
    assert sorted(os.listdir(saved.parent)) == [saved.name]
    assert load_checkpoint(saved)[1]["epoch"] == 3


def test_interrupted_save_leaves_previous_checkpoint_and_no_temp(saved, monkeypatch):
    def interrupted(file, **entries):
        file.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, {}, {"epoch": 4})
    monkeypatch.undo()
    assert sorted(os.listdir(saved.parent)) == [saved.name]
    assert load_checkpoint(saved)[1]["epoch"] == 3


def test_failed_rename_leaves_no_temp(saved, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.os, "replace", refuse)
    with pytest.raises(CheckpointError, match="Permission denied"):
        save_checkpoint(saved, {}, {"epoch": 4})
    monkeypatch.undo()
    assert sorted(os.listdir(saved.parent)) == [saved.name]


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(tmp_path / "nowhere" / "run.npz", {}, {})


@pytest.mark.skipif(os.name != "posix", reason="live-process check needs POSIX signals")
def test_next_save_cleans_temps_of_dead_runs_only(saved):
    dead = saved.parent / f".{saved.name}.tmp-99999999"  # above any pid_max
    live = saved.parent / f".{saved.name}.tmp-{os.getppid()}"
    unrelated = [saved.parent / f".{saved.name}.tmp-abc", saved.parent / ".other.npz.tmp-99999999"]
    for path in [dead, live, *unrelated]:
        path.write_bytes(b"PK\x03\x04 killed mid-write")
    save_checkpoint(saved, {}, {"epoch": 5})
    assert not dead.exists()
    assert live.exists() and all(path.exists() for path in unrelated)
    assert load_checkpoint(saved)[1]["epoch"] == 5


def test_object_array_is_refused_naming_the_entry(tmp_path):
    """That nothing in such a file runs, on every loading path, is promise 3's test."""
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        **{
            "conv1.W": np.array([{"a": 1}], dtype=object),
            META_KEY: np.array("{}"),
            VERSION_KEY: np.array(FORMAT_VERSION),
        },
    )
    with pytest.raises(CheckpointError, match=r"evil\.npz: entry 'conv1\.W' cannot be read"):
        load_checkpoint(path)


def test_pickle_renamed_to_npz_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(pickle.dumps({"conv1.W": np.ones(3)}))
    with pytest.raises(CheckpointError, match=r"weights\.npz: is not a checkpoint: not an \.npz"):
        load_checkpoint(path)


def test_single_npy_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    np.save(path.with_suffix(".npy"), np.ones(3))
    path.with_suffix(".npy").rename(path)
    with pytest.raises(CheckpointError, match=r"single \.npy array"):
        load_checkpoint(path)


def test_every_truncation_is_refused(tmp_path):
    source = tmp_path / "small.npz"
    save_checkpoint(source, {"fc.W": np.ones((2, 2), np.float32)}, {"epoch": 1})
    data = source.read_bytes()
    path = tmp_path / "cut.npz"
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match=r"cut\.npz: "):
            load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.npz: is not a checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.npz: damaged or truncated archive"):
        load_checkpoint(path)


def test_corrupted_bytes_give_a_checkpoint_error_or_a_clean_load(tmp_path):
    """Flipped bytes anywhere: never an exception other than CheckpointError."""
    source = tmp_path / "small.npz"
    save_checkpoint(source, {"fc.W": np.ones((2, 2), np.float32), "adam/t": np.array(1)}, {})
    data = source.read_bytes()
    path = tmp_path / "flipped.npz"
    rng = np.random.default_rng(0)
    for _ in range(600):
        damaged = bytearray(data)
        for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
            damaged[position] = rng.integers(256)
        path.write_bytes(bytes(damaged))
        with contextlib.suppress(CheckpointError):
            load_checkpoint(path)


def test_missing_or_directory_path_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"absent\.npz: cannot read checkpoint"):
        load_checkpoint(tmp_path / "absent.npz")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({META_KEY: np.array("{}")}, "has no '__format_version__' entry"),
        ({VERSION_KEY: np.array(1)}, "has no '__meta__' entry"),
        (
            {VERSION_KEY: np.array(2), META_KEY: np.array("{}")},
            r"format version 2 is newer .* \(1\); upgrade cnnbuild",
        ),
        (
            {VERSION_KEY: np.array(0), META_KEY: np.array("{}")},
            "unknown format version 0; this cnnbuild reads 1",
        ),
        ({VERSION_KEY: np.array("1"), META_KEY: np.array("{}")}, "should be a single integer"),
        ({VERSION_KEY: np.array(1), META_KEY: np.array("{bad")}, "metadata is not valid JSON"),
        ({VERSION_KEY: np.array(1), META_KEY: np.array("[1]")}, "should be a JSON object"),
        ({VERSION_KEY: np.array(1), META_KEY: np.array([1, 2])}, "should be a single string"),
        (
            {VERSION_KEY: np.array(1), META_KEY: np.array("{}"), "fc.W": np.array(["x"])},
            "entry 'fc.W' has dtype <U1",
        ),
        (
            {VERSION_KEY: np.array(1), META_KEY: np.array("{}"), "fc.W": np.zeros(2, "c8")},
            "entry 'fc.W' has dtype complex64",
        ),
    ],
)
def test_malformed_contents_are_refused(tmp_path, entries, message):
    path = tmp_path / "odd.npz"
    np.savez(path, **entries)
    with pytest.raises(CheckpointError, match=rf"odd\.npz: .*{message}"):
        load_checkpoint(path)


def test_load_into_copies_in_place():
    target = {"conv1.W": np.zeros((2, 3), np.float32), "adam/t": np.zeros((), np.int64)}
    kept = target["conv1.W"]
    load_into(target, {"conv1.W": np.ones((2, 3)), "adam/t": np.array(5, np.int64)}, "network")
    assert target["conv1.W"] is kept and kept.dtype == np.float32
    np.testing.assert_array_equal(kept, 1)
    assert int(target["adam/t"]) == 5


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"conv1.W": np.zeros((8, 3, 3, 3))}, r"conv1\.b: missing from the checkpoint"),
        (
            {"conv1.W": np.zeros((4, 3, 3, 3)), "conv1.b": np.zeros(4), "conv9.W": np.zeros(1)},
            r"conv9\.W: in the checkpoint only",
        ),
        (
            {"conv1.W": np.zeros((8, 3, 3, 3), np.float32), "conv1.b": np.zeros(4)},
            r"conv1\.W: checkpoint has \(8, 3, 3, 3\), network has \(4, 3, 3, 3\)",
        ),
        (
            {"conv1.W": np.zeros((4, 3, 3, 3), np.int64), "conv1.b": np.zeros(4)},
            r"conv1\.W: checkpoint has dtype int64, network has float32",
        ),
    ],
)
def test_load_into_is_strict_and_changes_nothing_on_error(arrays, message):
    target = {"conv1.W": np.full((4, 3, 3, 3), 2, np.float32), "conv1.b": np.full(4, 2, np.float32)}
    with pytest.raises(CheckpointError, match=message):
        load_into(target, arrays, "network")
    assert all(np.all(value == 2) for value in target.values())


def test_load_into_lists_a_bounded_number_of_problems():
    target = {f"layer{i}.W": np.zeros(1) for i in range(25)}
    with pytest.raises(
        CheckpointError, match=r"(?s)checkpoint and network differ:\n.*\.\.\. and 15 more$"
    ):
        load_into(target, {}, "network")
