"""cnnbuild sweep: the sweep section's checks, and real studies on a tiny image folder —
one process, several, interrupted and continued, and two processes sharing PostgreSQL."""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_train import SPEC

from cnnbuild.cli import main
from cnnbuild.errors import SpecError
from cnnbuild.overrides import read_spec
from cnnbuild.sweep_section import read_search_space

optuna = pytest.importorskip("optuna", reason="sweeps need Optuna: pip install 'cnnbuild[sweep]'")

SPACE = """\
sweep:
  space:
    training.optimizer.lr: {float: [0.003, 0.03], log: true}
    conv1.filters: {choice: [2, 4]}
    dense1.units: {int: [4, 16]}
"""


def write_spec(folder: Path, images: Path, sweep: str = SPACE, epochs: int = 2) -> Path:
    path = folder / "tiny.yaml"
    training = f"  epochs: {epochs}\n  data_dir: {images}\n  validation: 24\n"
    path.write_text(SPEC + training + sweep)
    return path


def sweep_cli(*args):
    result = CliRunner().invoke(main, ["sweep", *map(str, args)])
    return result, result.output


def trials_of(storage: str, study: str) -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


# --- the sweep section ---------------------------------------------------------------------


def checked(tmp_path, sweep: str, validation: bool = True) -> object:
    path = tmp_path / "s.yaml"
    path.write_text(SPEC + ("  validation: 24\n" if validation else "") + sweep)
    return read_search_space(read_spec(path))


def test_a_good_section_reads_as_parameters_with_inferred_metric(tmp_path):
    space = checked(tmp_path, SPACE)
    assert [p.path for p in space.parameters] == [
        "training.optimizer.lr",
        "conv1.filters",
        "dense1.units",
    ]
    assert (space.metric, space.direction, space.sampler, space.pruner) == (
        "val_accuracy",
        "maximize",
        "tpe",
        "median",
    )
    assert space.overrides({"training.optimizer.lr": 0.01, "conv1.filters": 4, "dense1.units": 8})[
        1
    ] == ("conv1.filters=4")


def test_without_a_validation_split_trials_are_compared_on_test_and_it_says_so(tmp_path):
    space = checked(tmp_path, SPACE, validation=False)
    assert space.metric == "test_accuracy"
    assert "no validation split" in space.notes[0]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("conv9.filters: {choice: [2, 4]}", "no key or layer named 'conv9'"),
        ("conv1.filtres: {choice: [2, 4]}", "filters"),  # the schema's did-you-mean
        ("training.optimizer.lr: {float: [0.1, 0.01]}", "is empty"),
        ("training.optimizer.lr: {float: [0, 0.1], log: true}", "log range must start above 0"),
        ("dense1.units: {int: [4, 16], choice: [1]}", "exactly one of"),
        ("dense1.units: {int: [4, 16], step: 0.5}", "whole step"),
        ("dense1.units: {range: [4, 16]}", "range"),
    ],
)
def test_a_bad_space_entry_is_refused_at_its_line(tmp_path, entry, message):
    with pytest.raises(SpecError) as raised:
        checked(tmp_path, f"sweep:\n  space:\n    {entry}\n")
    text = str(raised.value)
    assert message in text
    assert "s.yaml:" in text or "--set" in text or "sweep.space" in text


def test_a_validation_metric_needs_a_split_and_grid_needs_finite_values(tmp_path):
    with pytest.raises(SpecError, match="needs a validation split"):
        checked(tmp_path, "sweep:\n  metric: val_loss\n" + SPACE[7:], validation=False)
    with pytest.raises(SpecError, match="grid sampler needs a finite set"):
        checked(tmp_path, "sweep:\n  sampler: grid\n" + SPACE[7:])
    grid = checked(tmp_path, "sweep:\n  sampler: grid\n  space:\n    conv1.filters: "
                   "{choice: [2, 4]}\n    dense1.units: {int: [4, 16], step: 4}\n")  # fmt: skip
    assert grid.grid() == {"conv1.filters": [2, 4], "dense1.units": [4, 8, 12, 16]}
    assert grid.grid_size() == 8


def test_train_ignores_the_sweep_section(tmp_path, image_folder):
    spec = write_spec(tmp_path, image_folder, epochs=1)
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert "sweep" not in saved["network"]


def test_without_optuna_the_command_says_what_to_install(tmp_path, image_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    result, output = sweep_cli(write_spec(tmp_path, image_folder), "--out", tmp_path / "s")
    assert result.exit_code == 2
    assert "pip install 'cnnbuild[sweep]'" in output
    assert "Traceback" not in output


# --- real studies ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_trains_each_trial_as_a_run_and_writes_its_results(tmp_path, image_folder):
    spec, out = write_spec(tmp_path, image_folder), tmp_path / "sweep"
    result, output = sweep_cli(spec, "--trials", 3, "--out", out)
    assert result.exit_code == 0, output
    assert "study 'tiny': 3 complete of 3" in output
    rows = read_csv(out / "sweep.csv")
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert {row["state"] for row in rows} == {"complete"}
    for row in rows:  # each trial is an ordinary run folder
        run = Path(row["run_dir"])
        assert (run / "last.npz").exists() and (run / "history.csv").exists()
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert f"conv1.filters={row['conv1.filters']}" in config["overrides"]
    evaluated = CliRunner().invoke(main, ["evaluate", rows[0]["run_dir"] + "/best.npz"])
    assert evaluated.exit_code == 0, evaluated.output

    best = max(rows, key=lambda row: (float(row["val_accuracy"]), -int(row["trial"])))
    best_spec = yaml.safe_load((out / "best.yaml").read_text())
    trained = yaml.safe_load((Path(best["run_dir"]) / "config.yaml").read_text())
    assert best_spec["training"] == trained["training"]
    assert best_spec["layers"] == trained["network"]["layers"]
    again = CliRunner().invoke(main, ["train", str(out / "best.yaml"), "--out", tmp_path / "b"])
    assert again.exit_code == 0, again.output
    reproduced, original = (
        read_csv(run / "history.csv") for run in (tmp_path / "b", Path(best["run_dir"]))
    )
    for row in (*reproduced, *original):
        del row["seconds"]
    assert reproduced == original  # best.yaml trains the best trial again, bit for bit

    result, output = sweep_cli(spec, "--trials", 4, "--out", out)  # a larger total adds one
    assert result.exit_code == 0, output
    assert len(read_csv(out / "sweep.csv")) == 4
    shown, output = sweep_cli(spec, "--out", out, "--show")
    assert shown.exit_code == 0 and "study 'tiny': 4 complete of" in output


@pytest.mark.slow
def test_an_invalid_variant_fails_without_training_and_the_sweep_goes_on(tmp_path, image_folder):
    grid = "sweep:\n  sampler: grid\n  space:\n    maxpool1.size: {choice: [2, 16]}\n"
    spec, out = write_spec(tmp_path, image_folder, grid), tmp_path / "sweep"
    result, output = sweep_cli(spec, "--out", out)
    assert result.exit_code == 0, output
    rows = {row["maxpool1.size"]: row for row in read_csv(out / "sweep.csv")}
    assert rows["2"]["state"] == "complete"
    assert rows["16"]["state"] == "failed"
    assert "window 16 is larger" in rows["16"]["error"] and rows["16"]["run_dir"] == ""
    assert not list(out.glob("trial-*/last.npz"))[1:]  # one trained, the other never started


@pytest.mark.slow
def test_an_interrupted_sweep_continues_and_reruns_the_interrupted_trial(tmp_path, image_folder):
    spec, out = write_spec(tmp_path, image_folder, epochs=400), tmp_path / "sweep"
    command = [sys.executable, "-m", "cnnbuild", "sweep", str(spec), "--out", str(out)]
    command += ["--trials", "2", "--set", "sweep.pruner=none"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in process.stderr:
        if "trial 0 epoch 2:" in line:
            process.send_signal(signal.SIGINT)
            break
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT
    rows = read_csv(out / "sweep.csv")
    assert [(row["trial"], row["state"]) for row in rows] == [("0", "interrupted")]
    assert (out / "trial-0000" / "last.npz").exists()  # saved on the way out

    finish = [*command[:-2], "--set", "training.epochs=2", "--set", "sweep.pruner=none"]
    done = subprocess.run(finish, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    storage = f"sqlite:///{out / 'study.db'}"
    # the epochs changed, so the continued study is checked against the same space
    trials = trials_of(storage, "tiny")
    states = {t.number: t.state.name for t in trials}
    assert states[0] == "FAIL" and sum(s == "COMPLETE" for s in states.values()) == 2
    rerun = trials[1]
    assert rerun.params == trials[0].params  # the interrupted values ran again


@pytest.mark.slow
def test_workers_share_the_study_in_separate_processes(tmp_path, image_folder):
    spec, out = write_spec(tmp_path, image_folder, epochs=3), tmp_path / "sweep"
    result, output = sweep_cli(spec, "--trials", 4, "--workers", 2, "--out", out)
    assert result.exit_code == 0, output
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "tiny")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}


@pytest.mark.slow
def test_a_trial_whose_process_died_is_run_again(tmp_path, image_folder):
    spec, out = write_spec(tmp_path, image_folder), tmp_path / "sweep"
    result, _ = sweep_cli(spec, "--trials", 1, "--out", out)
    assert result.exit_code == 0
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    orphan = study.ask({"conv1.filters": optuna.distributions.CategoricalDistribution([2, 4])})
    orphan.set_user_attr("host", os.uname().nodename)
    orphan.set_user_attr("pid", int(dead.stdout))
    result, output = sweep_cli(spec, "--trials", 2, "--out", out)
    assert result.exit_code == 0, output
    by_number = {t.number: t for t in trials_of(storage, "tiny")}
    assert by_number[1].state.name == "FAIL" and "died" in by_number[1].user_attrs["interrupted"]
    assert by_number[2].state.name == "COMPLETE"
    assert by_number[2].params["conv1.filters"] == by_number[1].params["conv1.filters"]


# --- one study, two machines ---------------------------------------------------------------


def postgres_url() -> str:
    """A PostgreSQL server's URL; .ci/run starts one, so in CI a missing one fails."""
    url = os.environ.get("CNNBUILD_TEST_POSTGRES")
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("CNNBUILD_TEST_POSTGRES is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip("no PostgreSQL server: set CNNBUILD_TEST_POSTGRES=postgresql://...")
    pytest.importorskip(
        "psycopg", reason="PostgreSQL storage needs psycopg: pip install 'psycopg[binary]'"
    )
    return url


@pytest.mark.slow
def test_two_processes_finish_one_study_in_postgresql(tmp_path, image_folder):
    url, study = postgres_url(), f"tiny-{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path, image_folder, epochs=4)
    total = 8
    command = [sys.executable, "-m", "cnnbuild", "sweep", str(spec), "--trials", str(total)]
    command += ["--storage", url, "--study", study, "--set", "sweep.pruner=none"]
    processes = [
        subprocess.Popen(
            [*command, "--out", str(tmp_path / machine)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for machine in ("a", "b")
    ]
    started = time.monotonic()
    results = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    trials = [t for t in trials_of(url, study) if not t.user_attrs.get("surplus")]
    assert sorted(t.number for t in trials)[:total] == list(range(total))
    assert [t.state.name for t in trials].count("COMPLETE") == total
    assert len(trials) == total, "a trial was run twice or left behind"
    folders = {machine: sorted((tmp_path / machine).glob("trial-*")) for machine in ("a", "b")}
    assert all(folders.values()), f"one process ran no trial in {time.monotonic() - started:.0f}s"
    names = [path.name for paths in folders.values() for path in paths]
    assert sorted(names) == sorted(f"trial-{t.number:04d}" for t in trials)
    for _, err in results:
        assert "Traceback" not in err
